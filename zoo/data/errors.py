"""Errors of user data: the message names the file or folder and says what to do."""

__all__ = ["DataError"]


class DataError(ValueError):
    """Data that cannot be used as given (missing path, unreadable file, classes that do not match, too few
    samples); raised before or instead of training on it, with the offending file or class named."""
