"""Errors of user data: the message names the file or folder and says what to do."""

__all__ = ["DataError", "unusable_tokenizer_message"]


class DataError(ValueError):
    """Data that cannot be used as given (missing path, unreadable file, classes that do not match, too few
    samples); raised before or instead of training on it, with the offending file or class named."""


def unusable_tokenizer_message(path: object, error: BaseException) -> str:
    """What to say of a ``tokenizer.json`` the tokenizers library cannot read (``error``: what it said)."""
    why = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return (
        f"{path} is not a usable tokenizer.json (the tokenizers library says: {why}): give a tokenizer.json "
        "written by the tokenizers library (Tokenizer.save, or a model folder's), or a folder holding one"
    )
