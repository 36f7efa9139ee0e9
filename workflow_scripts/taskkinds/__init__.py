"""The task kinds (a registry of one module each: :mod:`.registry` lists them)."""

from .base import TaskKind
from .registry import KINDS, NAMES, kind, of_objective, of_record, of_settings, of_task

__all__ = ["KINDS", "NAMES", "TaskKind", "kind", "of_objective", "of_record", "of_settings",
           "of_task"]
