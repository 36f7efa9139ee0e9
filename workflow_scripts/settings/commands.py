"""The settings of each command: every setting's name, type, default, range and help, once.

The commands' options (:mod:`workflow_scripts.cli`), the library's entry points, the
config schema (:func:`workflow_scripts.config.load_schema`) and the workflow's job flags
(:mod:`workflow_scripts.plan`) all read these classes.  A field's config section is the
``SECTION`` of the class declaring it: ``compute`` for the device, ``fisher`` for the
sample batches that the Fisher and the Gram jobs share, ``evaluation``, ``finetune``,
``merge``, and ``task`` for one entry of ``tasks`` (prepare-task).  Fields with
``config=False`` are per job (the Fisher method of one artifact, a fine-tune's seed).

Adding a setting: one field here (with its range and help), the code that reads it, and
its test; the flag, the schema entry and the job's command line follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import objectives
from ..devices import DEVICES, DTYPES
from ..fisher import kinds
from ..merging.registry import DARE_COMBINES, METHODS, TIES_SCOPES
from ..merging.schemes import DEFAULT_SCHEME, SCHEME_NAMES
from ..tasks.files import FORMATS, QUOTINGS
from ..tasks.local import COLUMN_KEYS
from ..tasks.builtin import VALIDATION_FRACTION
from ..tasks.registry import SOURCE_NAMES, SOURCES
from .core import Settings, setting


def _max_length(default: int, what: str):
    return setting(default, f"{what}: tokens per example (longer ones are truncated)",
                   minimum=8)


def _batch_size(default: int, what: str):
    return setting(default, f"{what}: examples per batch", minimum=1)


@dataclass(frozen=True)
class ModelSettings(Settings):
    """What kind of model a command loads (per family: ``families.NAME.objective``)."""

    objective: str = setting(objectives.DEFAULT, "the models' objective: "
                             + "; ".join(f"{o.name}: {o.description}"
                                         for o in objectives.OBJECTIVES.values()),
                             choices=objectives.NAMES, shared=True, config=False)


@dataclass(frozen=True)
class ComputeSettings(ModelSettings):
    """Where a command computes (config section ``compute``)."""

    SECTION = "compute"
    device: str = setting("auto", "auto (CUDA when available), cpu or cuda", choices=DEVICES,
                          shared=True)
    dtype: str = setting("float32", "precision the model is loaded and run in (Fisher and Gram "
                         "values accumulate in float32 whatever it is; fetch-model: the one a "
                         "GGUF source is dequantised to)", choices=DTYPES, shared=True)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class SampleBatchSettings(ComputeSettings):
    """The batches over Fisher samples, shared by the ``fisher`` and ``gram`` jobs (config
    section ``fisher``)."""

    SECTION = "fisher"
    batch_size: int = _batch_size(kinds.DEFAULT_BATCH_SIZE, "Fisher and Gram")
    max_length: int = _max_length(kinds.DEFAULT_MAX_LENGTH, "Fisher and Gram")


@dataclass(frozen=True)
class GramSettings(SampleBatchSettings):
    """``gram``: RegMean's Grams of the body's linear-layer inputs."""


@dataclass(frozen=True)
class FisherSettings(SampleBatchSettings):
    """``fisher``: a mask-node or full diagonal Fisher."""

    SECTION = "fisher"
    method: str = setting(None, "mask (mask nodes, the paper's) or full (every body parameter)",
                          type=str, choices=kinds.METHODS, required=True, config=False)
    estimator: str = setting("per-example",
                             "mask Fisher: per-example (Eq. 4) or per-batch (released code)",
                             choices=kinds.ESTIMATORS)
    neuron_mask: str = setting("post-activation",
                               "mask Fisher: where the FFN neuron mask acts",
                               choices=kinds.NEURON_MASKS)
    labels: str = setting("empirical",
                          "the loss's labels: the data's (empirical), the expectation over a "
                          "classifier's predicted classes (expected; full Fisher only), or "
                          "drawn from the model's predictions (true: a class, or each next "
                          "token of a causal LM); the mask Fisher with expected is empirical",
                          choices=kinds.LABEL_MODES)
    chunk_size: int = setting(None, "full Fisher: per-example gradients per vectorised call, "
                              "bounding memory (default: "
                              + ", ".join(f"{v} on {k}" for k, v in kinds.DEFAULT_CHUNK_SIZE.items())
                              + ", fewer when the memory available (or --max-memory-mb) "
                              "holds fewer)", type=int, minimum=1)
    max_memory_mb: int = setting(None, "full Fisher without --chunk-size: the memory the chunk "
                                 "may use (default: what the machine and the job's memory "
                                 "limit leave)", type=int, minimum=1, config=False)
    count_flops: bool = setting(True, "count FLOPs in one extra pass (off: flops recorded as "
                                "null); the workflow counts them only at report.runtime_n")

    # the settings only one method reads (the rest apply to both)
    METHOD_ONLY = {"mask": ("estimator", "neuron_mask"), "full": ("chunk_size", "max_memory_mb")}

    @classmethod
    def relevant(cls, method: str | None) -> tuple[str, ...]:
        """The settings a Fisher of ``method`` depends on (None: every setting)."""
        other = [k for m, keys in cls.METHOD_ONLY.items() if m != method for k in keys]
        return tuple(e.name for e in cls.entries() if method is None or e.name not in other)

    def __post_init__(self):
        super().__post_init__()
        from .core import SettingError

        if self.method == "full" and self.estimator != "per-example":
            raise SettingError("--estimator applies to --method mask only (the full Fisher is "
                               "per-example)")
        if self.labels == "expected" and not objectives.objective(self.objective).labels:
            raise SettingError("--labels expected (the exact sum over a classifier's classes) "
                               f"applies to classifiers; a {self.objective} model's Fisher "
                               "takes empirical or true")

    @staticmethod
    def effective_labels(method: str, labels: str) -> str:
        """The labels a Fisher of ``method`` uses: the mask Fisher has no expected form (the
        full Fisher's exact sum over classes), so ``expected`` leaves it empirical."""
        return "empirical" if method == "mask" and labels == "expected" else labels


@dataclass(frozen=True)
class EvaluateSettings(ComputeSettings):
    """``evaluate`` (and ``merge --eval-out``): batched inference on validation samples."""

    SECTION = "evaluation"
    batch_size: int = _batch_size(64, "evaluation")
    max_length: int = _max_length(128, "evaluation")


@dataclass(frozen=True)
class FinetuneSettings(ComputeSettings):
    """``finetune``: AdamW with linear warm-up and decay, seeded shuffling."""

    SECTION = "finetune"
    epochs: float = setting(1.0, "passes over the training data", exclusive_minimum=0)
    max_steps: int = setting(None, "optimiser steps; overrides epochs", type=int, minimum=1)
    max_train_examples: int = setting(None, "train on a seeded subsample of this many examples",
                                      type=int, minimum=1)
    batch_size: int = _batch_size(32, "fine-tuning")
    lr: float = setting(5e-5, "peak learning rate", exclusive_minimum=0)
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and norms)",
                                  minimum=0)
    warmup_ratio: float = setting(0.1, "share of the steps with a linear warm-up", minimum=0,
                                  exclusive_maximum=1)
    max_length: int = _max_length(128, "fine-tuning")
    group_by_length: bool = setting(True, "batch examples of similar length together (less "
                                    "padding)")
    seed: int = setting(0, "seed of the new head, the shuffling and the subsample", minimum=0,
                        config=False)


def _lambda_help() -> str:
    defaults = ", ".join(f"{m.name} {m.default_lambda:g}" for m in METHODS.values()
                         if m.default_lambda is not None)
    return (f"task-vector methods: scaling factor of the merged task vector (default: the "
            f"method's, {defaults}; dare: that of its combine method)")


@dataclass(frozen=True)
class MergeSettings(ModelSettings):
    """``merge``: the method and the hyper-parameters of every method (each reads those its
    registry entry names: :meth:`relevant`)."""

    SECTION = "merge"
    method: str = setting(None, "the merge method", type=str, choices=METHODS.keys(),
                          required=True, config=False)
    scheme: str = setting(DEFAULT_SCHEME, "mask Fisher -> parameter mapping",
                          choices=SCHEME_NAMES, config=False)
    lam: float = setting(None, _lambda_help(), type=float, exclusive_minimum=0, flag="lambda",
                         config=False)
    ties_k: float = setting(20.0, "ties (and dare with ties): % of each task vector kept",
                            exclusive_minimum=0, maximum=100, listable=True)
    ties_scope: str = setting("global", "ties: one trimming threshold per task vector (global) "
                              "or per tensor", choices=TIES_SCOPES)
    dare_p: float = setting(0.9, "dare: drop probability", minimum=0, exclusive_maximum=1,
                            listable=True)
    dare_combine: str = setting("task-arithmetic", "dare: combine the rescaled task vectors by "
                                "task arithmetic or TIES", choices=DARE_COMBINES)
    seed: int = setting(0, "dare: seed of the drops")
    regmean_alpha: float = setting(0.9, "regmean: scale of the Grams' off-diagonal entries",
                                   minimum=0, maximum=1, listable=True)
    floor: float = setting(0.0, "Fisher methods: weight floor max(F, floor) (Matena & Raffel "
                           "use 1e-6)", minimum=0, listable=True)
    max_shard_mb: int = setting(50_000, "merged checkpoints: the largest safetensors shard in MB "
                                "(bigger checkpoints are split, save_pretrained's layout)",
                                minimum=1, config=False)
    block_mb: float = setting(64.0, "the rows of a large tensor merged at a time, in MB of "
                              "float64 (each method but regmean's solve holds a few such "
                              "blocks; the result does not depend on it)", exclusive_minimum=0,
                              config=False)
    allow_tokenizer_mismatch: bool = setting(
        False, "merge models whose tokenizers differ (their vocabularies, special or added "
        "tokens' ids, or BPE merges), with a warning naming both")

    def relevant(self) -> tuple[str, ...]:
        """The settings this merge's method reads: what its result (and its job's command
        line) depends on."""
        spec = METHODS[self.method]
        return (("method",) + (("scheme",) if spec.takes_scheme else ())
                + (("lam",) if spec.takes_lambda else ()) + spec.settings)

    def parameters(self) -> dict:
        """The hyper-parameters the method reads, as it uses them (``merge.json``'s
        ``parameters``; ``lam`` the effective lambda)."""
        return {k: self.option(k) for k in self.relevant() if k not in ("method", "scheme")}

    def option(self, key: str):
        """A hyper-parameter; ``lam`` None is the method's default lambda (DARE: that of its
        combine method)."""
        if key == "lam" and self.lam is None:
            spec = METHODS[self.method]
            if spec.default_lambda is None and self.method == "dare":
                return METHODS[self.dare_combine].default_lambda
            return spec.default_lambda
        return getattr(self, key)


@dataclass(frozen=True)
class TaskSettings(ModelSettings):
    """The settings of one task's splits (config: one entry of ``tasks``; a causal-LM
    family's tasks are text: ``--objective causal-lm``)."""

    SECTION = "task"
    task: str = setting(None, "; ".join(f"{s.name}: {', '.join(s.tasks)}" for s in SOURCES.values()
                                       if s.tasks)
                        + "; local: a name for the info file (default: train file stem)",
                        type=str, config=False)
    source: str = setting(None, "where the task comes from", type=str, choices=SOURCE_NAMES,
                          required=True)
    revision: str = setting(None, "glue: data set revision on the hub", type=str)
    train_file: str = setting(None, "local: train split file", type=str)
    validation_file: str = setting(None, "local: validation split file", type=str)
    format: str = setting(None, "local: file format (default: from the suffix)", type=str,
                          choices=FORMATS)
    quoting: str = setting(None, "local CSV/TSV: none (quote characters are ordinary text; "
                           "default for tsv, as GLUE's files are written) or double (fields may "
                           "be enclosed in double quotes; default for csv)", type=str,
                           choices=QUOTINGS)
    header: bool = setting(None, "local CSV/TSV: the first row names the columns (default); "
                           "off: the column map names 0-based column indices", type=bool)
    column_map: dict = setting(None, "local: text_a=COL [text_b=COL] label=COL [idx=COL]; a "
                               "causal-LM task's text=COL, or prompt=COL response=COL (default: "
                               "the file's text, or prompt and response, columns)",
                               type=str, mapping=True, choices=COLUMN_KEYS,
                               split=",",
                               metavar="KEY=COLUMN", schema={"$ref": "#/$defs/column_map"})
    label_names: list = setting(None, "local: class names in label order (string labels map "
                                "to their position; default: the sorted distinct train labels)",
                                type=str, many=True, split=",", metavar="NAME")
    max_train: int = setting(None, "cap the train split (seeded, class-balanced subsample)",
                             type=int, minimum=1)
    max_validation: int = setting(None, "cap the validation split (seeded, class-balanced "
                                  "subsample)", type=int, minimum=1)
    validation_fraction: float = setting(VALIDATION_FRACTION, "builtin: share of the data held out for "
                                         "validation", exclusive_minimum=0, exclusive_maximum=1,
                                         config=False)
    seed: int = setting(0, "split and subsample seed", minimum=0, config=False)

    def __post_init__(self):
        super().__post_init__()
        if self.label_names is not None and len(set(self.label_names)) != len(self.label_names):
            from .core import SettingError

            raise SettingError(f"--label-names {self.label_names} repeats a name")


@dataclass(frozen=True)
class PrepareSettings(TaskSettings):
    """``prepare-task``: one task's splits (config: one entry of ``tasks``; the held-out
    selection split: ``selection``)."""

    SECTION = "selection"
    holdout_fraction: float = setting(None, "share of the (capped) training rows moved to a "
                                      "held-out selection split (seeded, stratified by label); "
                                      "off when not given", type=float, exclusive_minimum=0,
                                      exclusive_maximum=1)
    max_holdout: int = setting(None, "at most this many held-out rows", type=int, minimum=1)
    holdout_seed: int = setting(None, "seed of the held-out split (default: the split seed, --seed)", type=int,
                                minimum=0, config_key="seed")

    def __post_init__(self):
        super().__post_init__()
        if self.holdout_fraction is None:
            given = [e.spec.flag_name(e.name) for e in self.entries()
                     if e.name in ("max_holdout", "holdout_seed") and getattr(self, e.name) is not None]
            if given:
                from .core import SettingError

                raise SettingError(f"{', '.join(given)} need --holdout-fraction (the held-out "
                                   "split is off without it)")


# The classes whose fields the config schema's sections hold (config section -> classes).
CONFIG_SECTIONS = {
    "compute": (ComputeSettings,),
    "fisher": (FisherSettings, GramSettings),
    "evaluation": (EvaluateSettings,),
    "finetune": (FinetuneSettings,),
    "merge": (MergeSettings,),
    "task": (PrepareSettings,),
    "selection": (PrepareSettings,),
}
