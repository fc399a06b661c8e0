"""repsim: does a meta-learner learn rapidly, or does it reuse features?

Tools to train MAML, first-order MAML, ANIL and BOIL, probe representations before and after
inner-loop adaptation, and measure how much each layer changes (Raghu et al., ICLR 2020).
"""

__version__ = "0.1.0"
