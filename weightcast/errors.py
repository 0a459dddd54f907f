"""The one base of every error weightcast raises on bad input or a damaged file. The CLI catches it
once, prints its message without a traceback and exits with `USER_ERROR_EXIT_CODE`.

Each stage's error classes keep a second, built-in base (`ConfigError` is also a `ValueError`,
`HubError` an `OSError`, ...), so code that caught the built-in one still does. Warnings have their
own base, `WeightcastWarning` (a `UserWarning`): one filter silences or raises all of them.
"""

__all__ = ["WeightcastError", "WeightcastWarning", "USER_ERROR_EXIT_CODE"]

USER_ERROR_EXIT_CODE = 2  # what argparse uses for a bad command line, so one code for all user errors


class WeightcastError(Exception):
    """Something the user can fix: the message names the file or value and what would be right."""


class WeightcastWarning(UserWarning):
    """Something weightcast did differently from what was asked, or could not do, and went on."""
