"""The objectives registry: the one list of training objectives that the config schema,
the commands' ``--objective``, the loaders, the merges, the evaluation and the report read.

An objective is one module of this package (:mod:`.classification`, :mod:`.causal_lm`)
holding one :class:`Objective`; registering it is one line in :data:`OBJECTIVES`.  It says
which transformers Auto class its checkpoints load with, how a model of it trains (the
loss transformers computes from the batch's ``labels``), what a merge covers (the body, or
the whole model) and the task kind (:mod:`workflow_scripts.taskkinds`) of its tasks
(each task kind names the objective it serves).

The objective is always given (a family's ``objective``, a command's ``--objective``, an
artifact's or evaluation's record); it is never read off a model's class name.  A saved
checkpoint's ``architectures`` is only *checked* against it (:func:`of_config`,
:func:`check_model`).

No torch: Snakemake reads this while it parses the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import causal_lm, classification


@dataclass(frozen=True)
class Objective:
    name: str
    auto_class: str  # the transformers Auto class its checkpoints load with
    architecture_suffixes: tuple[str, ...]  # config.json "architectures" entries it was saved as
    pipeline_tag: str  # the model card's
    whole_model: bool  # merges cover the whole model (else the body; heads stay)
    task_kind: str  # the task kind of its tasks unless a task's info names another
    labels: bool  # its tasks have class labels (num_labels >= 2, label maps)
    decoders_only: bool  # only architectures with an output projection (lm_head)
    description: str


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (
        Objective(**classification.OBJECTIVE),
        Objective(**causal_lm.OBJECTIVE),
    )
}
NAMES = tuple(OBJECTIVES)
CLASSIFICATION = classification.NAME
CAUSAL_LM = causal_lm.NAME
DEFAULT = CLASSIFICATION


def objective(name: str | Objective) -> Objective:
    """The registered objective ``name`` (an :class:`Objective` is returned as is)."""
    from ..errors import registered

    return registered(OBJECTIVES, name, "objective", Objective)


def auto_class(name: str):
    """The transformers Auto class of ``name``'s checkpoints."""
    import transformers

    return getattr(transformers, objective(name).auto_class)


def of_config(config: dict) -> str | None:
    """The objective a ``config.json`` (as a dict) was saved for, from its ``architectures``
    (``LlamaForCausalLM``), or None when it does not say (a bare pre-trained model).  Only
    ever compared with the declared objective (the refusal of a checkpoint saved for the
    other one), never used to choose it."""
    names = [str(n) for n in config.get("architectures") or []]
    for entry in OBJECTIVES.values():
        if any(n.endswith(entry.architecture_suffixes) for n in names):
            return entry.name
    return None


def check_model(model, name: str) -> None:
    """A loaded model must be of the class that ``name``'s Auto class gives its config (a
    causal LM handed to a classification computation, or the reverse, is an error naming
    both; a model class the Auto class does not list is let through)."""
    cls = auto_class(name)
    try:
        expected = cls._model_mapping[type(model.config)]
    except (KeyError, AttributeError):
        return
    if not isinstance(model, expected):
        raise ValueError(f"a {type(model).__name__} is not a {name} model ({cls.__name__} gives "
                         f"{expected.__name__} for its config); declare the model's own "
                         "objective (--objective; in the library, the objective or task kind "
                         "argument), or give a model of this one")
