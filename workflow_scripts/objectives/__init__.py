"""The training objectives (a registry of one module each: :mod:`.registry` lists them).
``from workflow_scripts import objectives`` gives the registry's names."""

from .registry import (
    CAUSAL_LM,
    CLASSIFICATION,
    DEFAULT,
    NAMES,
    OBJECTIVES,
    Objective,
    auto_class,
    check_model,
    objective,
    of_config,
)

__all__ = ["CAUSAL_LM", "CLASSIFICATION", "DEFAULT", "NAMES", "OBJECTIVES", "Objective",
           "auto_class", "check_model", "objective", "of_config"]
