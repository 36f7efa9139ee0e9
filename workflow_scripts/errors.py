"""The engine's domain errors: problems a user can fix.

Every error here names the input at fault and, where there is one, the fix.
The command line prints them as ``error: ...`` without a traceback; any other
exception is a bug and keeps its traceback.  The engine owns this module; the
CLI only reads it.
"""

from __future__ import annotations


def set_by(flag: str, key: str, value=None) -> str:
    """How to set one thing, for both audiences of a message that the command line and the
    workflow share: the flag and the config key (``--objective causal-lm (config:
    families.NAME.objective: causal-lm)``; ``value`` True: a switch)."""
    if value is None:
        return f"{flag} (config: {key})"
    shown = "true" if value is True else value
    return f"{flag}{'' if value is True else f' {value}'} (config: {key}: {shown})"


ALLOW_PICKLE = ("--allow-pickle", "families.NAME.allow_pickle", True)


class UserError(Exception):
    """A problem with the user's input, files or settings (printed without a traceback)."""


def registered(table: dict, name, what: str, cls: type):
    """``name`` looked up in a registry ``table`` of ``what`` (an instance of ``cls`` is
    returned as is); an unknown name is an error listing the registered ones."""
    if isinstance(name, cls):
        return name
    if name not in table:
        raise UserError(f"unknown {what} {name!r}; choose from {', '.join(table)}")
    return table[name]


class ConfigError(UserError, ValueError):
    """A workflow config entry is wrong; the message names the entry and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """An input file or directory the user named does not exist."""


class SampleError(UserError, ValueError):
    """A samples / task Parquet file does not match the engine's schema or the model."""


class OutputError(UserError):
    """An output cannot be written: the path holds something this command did not write,
    is (or holds) one of its inputs, or is not writable (read-only, full)."""


class ModelLoadError(UserError, RuntimeError):
    """A checkpoint cannot be loaded (missing, pickle-only, unreachable hub, ...)."""


class UnsupportedArchitectureError(UserError, ValueError):
    """A model type that :mod:`workflow_scripts.architectures` does not know."""


class MergeError(UserError, ValueError):
    """The inputs of a merge do not fit together."""


class CorruptArtifactError(UserError, ValueError):
    """A Fisher (or other) artifact file is damaged; the message says what to delete."""


class FisherValueError(UserError, ValueError):
    """A Fisher holds NaN, infinite, negative or only zero values."""


class FisherProvenanceError(MergeError):
    """A Fisher file was computed for another model or task than the one it is used for."""


class FisherMemoryError(UserError, MemoryError):
    """A Fisher computation cannot fit in the memory it may use."""
