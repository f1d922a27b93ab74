"""The one exception type the command line shows as a single line (no traceback)."""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user can fix; the message names the file or flag and says what to do.

    `exit_code` is 2 for bad arguments (argparse's convention) and 1 for everything else.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.exit_code = exit_code
