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
