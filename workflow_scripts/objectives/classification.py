"""``classification``: sequence classifiers (``AutoModelForSequenceClassification``).

The body is the model's ``base_model``; every model keeps its own task head, so a merge
covers the body alone.  Trained with the cross-entropy of the example's class (the loss
transformers computes from class ``labels``); its tasks are ``label`` tasks
(:mod:`workflow_scripts.taskkinds.label`), evaluated by the task's metric.
"""

NAME = "classification"
OBJECTIVE = dict(
    name=NAME,
    auto_class="AutoModelForSequenceClassification",
    architecture_suffixes=("ForSequenceClassification",),
    pipeline_tag="text-classification",
    whole_model=False,
    task_kind="label",
    labels=True,
    decoders_only=False,
    description="sequence classifiers, each with its own task head",
)
