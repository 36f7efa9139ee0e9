"""Where every workflow artifact lives: one table, read by the rules and by the plan.

Templates use Snakemake's wildcard syntax; :func:`path` fills them for the plan
(and for tests), the rules use them as ``output:`` patterns.  Nothing else in
the package or the rules spells an artifact path.
"""

from __future__ import annotations

PATHS = {
    # prepare-task: a task's splits in the engine's schema and its info file
    "task_train": "resources/tasks/{task}/train.parquet",
    "task_validation": "resources/tasks/{task}/validation.parquet",
    "task_info": "resources/tasks/{task}/info.json",
    # fetch-model: local copies of checkpoints the workflow does not fine-tune
    "base_model": "resources/base_models/{family}",
    "fetched_model": "resources/models/{family}/{task}",
    # finetune: checkpoints fine-tuned by the workflow
    "finetuned_model": "results/finetuned/{family}/{task}",
    # sample / fisher
    "samples": "results/samples/{task}/n{n}-seed{seed}.parquet",
    "fisher": "results/fisher/{family}/{task}/n{n}/{method}.safetensors",
    # gram: RegMean's Grams of the body's linear-layer inputs, on the Fisher samples
    "gram": "results/gram/{family}/{task}/n{n}.safetensors",
    # merge / evaluate
    "merged": "results/merged/{family}/{subset}/{merge_id}",
    "eval_finetuned": "results/eval/{family}/finetuned/{task}.json",
    "eval_merged": "results/eval/{family}/merged/{subset}/{merge_id}/{task}.json",
    # merge evaluates its merged models in the same job: one directory of the above per merge
    "eval_merged_dir": "results/eval/{family}/merged/{subset}/{merge_id}",
    # report
    "report_dir": "results/report",
    "report_plots": "results/report/plots",
    "report_eval_list": "results/report/inputs/evaluations.txt",
    "report_fisher_list": "results/report/inputs/fishers.txt",
}
# The directories every workflow output and log lies under.
OUTPUT_ROOTS = ("results", "resources", "logs")


def path(kind: str, **wildcards) -> str:
    """The path of one artifact: ``path("fisher", family="f", task="t", n=8, method="mask")``."""
    try:
        template = PATHS[kind]
    except KeyError:
        raise KeyError(f"unknown artifact kind {kind!r}; known: {', '.join(PATHS)}") from None
    return template.format(**wildcards)
