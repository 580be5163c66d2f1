"""The error of condensation's user-facing checks."""


class CondenseError(ValueError):
    """Settings or data that condensation cannot use; the message says what was wrong and what to do."""
