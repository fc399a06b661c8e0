"""The one exception type users see.

Every problem a user can fix (bad data, bad config, wrong checkpoint) raises RepsimError with a
one-line message naming the problem and the fix; the CLI prints it and exits non-zero.
"""


class RepsimError(Exception):
    """A problem with the user's input, with a message that says how to fix it."""


def one_line(e: Exception) -> str:
    """The first line of ``e``'s message (its type's name when it has none), for quoting one
    exception inside a RepsimError's one-line message."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class NotFiniteError(RepsimError):
    """NaN or inf met while testing a model (training's validation logs it and goes on)."""


def not_finite(what: str) -> NotFiniteError:
    """The error for NaN or inf met while testing a model: its test-time inner loop took too
    large a step, or its run diverged before the checkpoint was written."""
    return NotFiniteError(f"{what} is NaN or inf: the inner loop diverged (lower --set inner_lr) or the "
                          f"checkpoint's weights are too large (use an earlier checkpoint of its run)")
