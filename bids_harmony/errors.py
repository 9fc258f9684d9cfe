"""Errors that are part of the contract: the CLI turns them into one-line messages.

Anything else that escapes is a bug and keeps its traceback.
"""


class BidsHarmonyError(Exception):
    """Base class for errors a user can fix (bad input, bad model, bad BIDS)."""

    exit_code = 1


class InputError(BidsHarmonyError):
    """An input path, image or argument is missing or unusable."""

    exit_code = 2


class ModelError(BidsHarmonyError):
    """A model file is missing, corrupt or does not match what is asked of it."""

    exit_code = 3


class BidsError(BidsHarmonyError):
    """The dataset is not valid BIDS or lacks what the command needs."""

    exit_code = 4


class OutputExistsError(InputError):
    """An output folder already holds files that a command would not replace unasked."""


class SettingsError(InputError):
    """A harmonization setting has a wrong type or value, or is unknown."""


class NotT1wLikeError(InputError):
    """In strict mode: the source does not order its tissues as the target's T1w does."""


class ProcessingError(BidsHarmonyError):
    """An external tool (ANTs registration, deepbet, the BIDS validator) failed on an input."""

    exit_code = 5


def one_line(error: Exception) -> str:
    """An external tool's exception in one line, for a :class:`ProcessingError` (ITK's and
    deepbet's reports span many lines; the last one says what went wrong)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else 'no message'}"
