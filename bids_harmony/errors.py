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
