"""Settings objects: each command's settings in one dataclass (:mod:`.commands`), with the
machinery that turns them into argparse options, config schema entries and job flags
(:mod:`.core`).  Torch-free: Snakemake reads them while it parses the workflow."""

from __future__ import annotations

from .commands import (
    CONFIG_SECTIONS,
    ComputeSettings,
    EvaluateSettings,
    FinetuneSettings,
    FisherSettings,
    GramSettings,
    MergeSettings,
    ModelSettings,
    PrepareSettings,
    SampleBatchSettings,
)
from .core import Settings, SettingError, add_arguments, flag, schema_properties, setting

__all__ = [
    "CONFIG_SECTIONS", "ComputeSettings", "EvaluateSettings", "FinetuneSettings",
    "FisherSettings", "GramSettings", "MergeSettings", "ModelSettings", "PrepareSettings", "SampleBatchSettings",
    "Settings", "SettingError", "add_arguments", "flag", "schema_properties", "setting",
]
