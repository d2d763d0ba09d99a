"""The one exception type that reaches users as a one-line message.

Raise `SinklensError` for anything a user can fix (bad path, bad option, mismatched
checkpoints). The CLI prints its message on one line and exits non-zero; a notebook
shows it as an ordinary exception. Its message names the problem *and* the fix.
"""


class SinklensError(Exception):
    """A user-facing error: one line that says what is wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        # Collapse newlines so the CLI contract (one line on stderr) holds for any message.
        super().__init__(" ".join(str(message).split()))
