"""User-facing errors.

Every failure a user can fix is raised as an ``AfpbenchError`` whose message is one
sentence naming the fix; the CLI prints it on one line and exits with code 2. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AfpbenchError(Exception):
    """A one-line, user-fixable error (bad name, missing path, mismatched weights...)."""

    exit_code = 2

    def __init__(self, message: str):
        # Collapse whitespace so a message never spans lines in the terminal or logs.
        super().__init__(" ".join(str(message).split()))


class UnknownNameError(AfpbenchError, KeyError):
    """An unknown registry/catalog name; the message suggests the nearest ones."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.args[0]


class WeightsError(AfpbenchError):
    """Missing, truncated or mismatched detector weights: never run with them."""


class DatasetError(AfpbenchError):
    """A dataset folder that is missing, incomplete, or differs from its manifest."""
