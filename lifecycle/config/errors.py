"""The project's exception hierarchy.

Every error a user can cause (a bad file, a missing alias, a label set with one
class) is a ``LifecycleError`` whose message says what is wrong and what to do.
The CLI prints the message and exits non-zero; the gateway maps it to a 4xx, or to a
503 for an ``UnavailableError`` (a service it needs is down: the call was fine).
"""

from __future__ import annotations


class LifecycleError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(LifecycleError):
    """Settings or the specialists file are invalid."""


class DataError(LifecycleError):
    """A data file or table cannot be used for training or evaluation."""


class ModelLoadError(LifecycleError):
    """A base model or adapter cannot be loaded."""


class RegistryError(LifecycleError):
    """The MLflow registry lacks what was asked for (model, version, alias)."""


class NotReadyError(LifecycleError):
    """A command of the contract whose implementation has not landed yet."""


class UnavailableError(LifecycleError):
    """A service the call needs cannot be reached now: the same call may work later."""


class StoreError(UnavailableError):
    """The traffic store cannot be reached, migrated or written."""
