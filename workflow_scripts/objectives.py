"""The training objectives a family's models have: the one list that the config schema,
the commands' ``--objective``, the loaders, the merges, the evaluation and the report read.

``classification``
    sequence classifiers (``AutoModelForSequenceClassification``): the body is the
    model's ``base_model``, every model keeps its own task head; evaluated by the task's
    metric.
``causal-lm``
    causal language models (``AutoModelForCausalLM``): a task is text, the loss of one
    example the mean next-token cross-entropy over its counted tokens; the whole model is
    merged (embeddings and ``lm_head`` included; a tied ``lm_head`` once, with the
    embeddings); evaluated by its mean token loss and perplexity.

No torch: Snakemake reads this while it parses the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str
    auto_class: str  # the transformers Auto class its checkpoints load with
    architecture_suffix: str  # config.json "architectures" entries end with this
    pipeline_tag: str  # the model card's
    whole_model: bool  # merges cover the whole model (else the body; heads stay)
    description: str


CLASSIFICATION = "classification"
CAUSAL_LM = "causal-lm"
OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (
        Objective(CLASSIFICATION, "AutoModelForSequenceClassification",
                  "ForSequenceClassification", "text-classification", False,
                  "sequence classifiers, each with its own task head"),
        Objective(CAUSAL_LM, "AutoModelForCausalLM", "ForCausalLM", "text-generation", True,
                  "causal language models: next-token loss, whole-model merges"),
    )
}
NAMES = tuple(OBJECTIVES)
DEFAULT = CLASSIFICATION


def objective(name: str) -> Objective:
    from .errors import UserError

    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; choose from {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def auto_class(name: str):
    """The transformers Auto class of ``name``'s checkpoints."""
    import transformers

    return getattr(transformers, objective(name).auto_class)


def of_model(model) -> str:
    """The objective of a loaded model, from its class (``LlamaForCausalLM``,
    ``GPT2LMHeadModel``: causal-lm; else classification)."""
    name = type(model).__name__
    return CAUSAL_LM if name.endswith(("ForCausalLM", "LMHeadModel")) else CLASSIFICATION


def of_config(config: dict) -> str | None:
    """The objective a ``config.json`` (as a dict) was saved for, from its ``architectures``
    (``LlamaForCausalLM``), or None when it does not say (a bare pre-trained model)."""
    names = config.get("architectures") or []
    for entry in OBJECTIVES.values():
        if any(str(n).endswith(entry.architecture_suffix) for n in names):
            return entry.name
    if any(str(n).endswith(("LMHeadModel", "ForMaskedLM")) for n in names):
        return CAUSAL_LM if any(str(n).endswith("LMHeadModel") for n in names) else None
    return None
