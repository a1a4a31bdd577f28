"""The one base class of every error caused by what the user asked for (the CLI prints these without a traceback)."""


class UserError(ValueError):
    """Bad input: the message says what is wrong and what would be valid."""
