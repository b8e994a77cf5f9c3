"""User-facing errors: ``main.py`` prints these as one line and exits non-zero."""


class UserError(Exception):
    """Bad input the user can fix (unknown name, incompatible flags, missing data).

    The message is one line saying what is wrong and what to do.
    """
