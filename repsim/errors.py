"""The one exception type users see.

Every problem a user can fix (bad data, bad config, wrong checkpoint) raises RepsimError with a
one-line message naming the problem and the fix; the CLI prints it and exits non-zero.
"""


class RepsimError(Exception):
    """A problem with the user's input, with a message that says how to fix it."""
