"""User-facing errors: the CLI prints their message as one line, never a traceback."""

from __future__ import annotations


class AlignlabError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(AlignlabError, ValueError):
    """An invalid preset, override or config value."""


class ModelLoadError(AlignlabError):
    """A model directory that is missing, incomplete or corrupt."""


class StoreError(AlignlabError):
    """The run store cannot be opened or written."""


class WeightsError(ModelLoadError, ConfigError):
    """Stored weights that are not floating point, or not finite (without ``allow_nonfinite``).

    Both a `ModelLoadError` (the directory holds something alignlab will not use) and a
    `ConfigError` (a bad value given to alignlab), so either ``except`` catches it.
    """


class DivergenceError(AlignlabError):
    """Training whose loss or weights became non-finite; ``step`` is the first such step.

    The run that raised it is marked ``failed`` in the store, never ``done``.
    """

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step

    def __reduce__(self) -> tuple[type[DivergenceError], tuple[str, int]]:
        # Picklable with its step, so it crosses process-pool and Ray workers intact.
        return (type(self), (str(self), self.step))
