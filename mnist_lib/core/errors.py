"""The one exception type for mistakes a user can fix (bad flag, bad file, missing data).

The CLI turns it into a single line on stderr and exit status 2; library callers
can catch it like any other ValueError. The message is one line by construction:
a line break that came from the user's input (a key or a file name holding one)
is shown escaped, as \\n.
"""


class UserError(ValueError):
    """A problem with the user's input or files, reported as one clear line."""

    def __init__(self, message: str) -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))
