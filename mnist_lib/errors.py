"""The one exception type for mistakes a user can fix (bad flag, bad file, missing data).

The CLI turns it into a single line on stderr and exit status 2; library callers
can catch it like any other ValueError.
"""


class UserError(ValueError):
    """A problem with the user's input or files, reported as one clear line."""
