"""The one base of every error weightcast raises on bad input or a damaged file. The CLI catches it
once, prints its message without a traceback and exits with `USER_ERROR_EXIT_CODE`."""

__all__ = ["WeightcastError", "USER_ERROR_EXIT_CODE"]

USER_ERROR_EXIT_CODE = 2  # what argparse uses for a bad command line, so one code for all user errors


class WeightcastError(Exception):
    """Something the user can fix: the message names the file or value and what would be right."""
