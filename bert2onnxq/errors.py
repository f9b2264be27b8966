"""The one exception type the CLI turns into a one-line error (no traceback, exit 2)."""


class BadInput(Exception):
    """Input the user can fix: the message says what is wrong and how to fix it, in one line."""
