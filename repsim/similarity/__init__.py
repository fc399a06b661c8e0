"""Representational similarity measures: CCA family, CKA family, Procrustes.

Every measure is a pure function of two activation matrices X (n, d1) and Y (n, d2) holding
the same n data points (rows) in the same order; it centres the columns first and returns a
Python float (``cca`` returns the vector of canonical correlations). Inputs may be numpy
arrays or torch tensors, CPU or GPU, float16/32/64; sums are taken in float64.

Conv activations (n, c, h, w) need an explicit layout: ``conv="flatten"`` -> (n, c*h*w), or
``conv="spatial"`` -> spatial positions as data points (n*h*w, c); see ``as_matrix``. A 4-D
input without ``conv`` raises RepsimError. Every measure takes ``name=`` (the layer name, used
in error messages). ``compare`` runs several measures over a dict of layers into a DataFrame.

Conventions (details in each docstring):
* CCA family: null directions dropped by relative singular-value tolerance ``rtol``
  (default max(1e-6, sqrt(eps64 max(n, d))) for every dtype, as sums are float64); mean CCA
  averages *all* coefficients; SVCCA keeps the top components holding ``threshold`` (0.99) of
  the variance (reducing to the n-dim row space first when d > n); PWCCA takes its weights
  from X (``side="x"``) by default.
* CKA family: linear CKA picks the feature or Gram form by shape (``form=``); RBF CKA uses
  sigma = threshold * median pairwise distance (Kornblith, threshold=1.0); debiased CKA and
  ``MinibatchCKA`` use Song et al.'s unbiased HSIC.
* Procrustes: 2 - 2 ||X^T Y||_* on centred, unit-Frobenius-norm inputs, in [0, 2].
"""

from ._common import as_matrix
from .cca import cca, mean_cca, mean_sq_cca, pwcca, svcca
from .cka import MinibatchCKA, debiased_cka, linear_cka, rbf_cka
from .compare import MEASURES, compare
from .procrustes import procrustes

__all__ = [
    "MEASURES",
    "MinibatchCKA",
    "as_matrix",
    "cca",
    "compare",
    "debiased_cka",
    "linear_cka",
    "mean_cca",
    "mean_sq_cca",
    "procrustes",
    "pwcca",
    "rbf_cka",
    "svcca",
]
