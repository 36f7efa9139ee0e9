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
    # finetune: checkpoints fine-tuned by the workflow, one per fine-tuning seed
    # ({rep} = ft{seed}; see :mod:`.replicates`)
    "finetuned_model": "results/finetuned/{family}/{rep}/{task}",
    # sample / fisher: one sample draw and Fisher artifact per Fisher seed
    "samples": "results/samples/{task}/n{n}-seed{seed}.parquet",
    "fisher": "results/fisher/{family}/{rep}/{task}/n{n}-seed{seed}/{method}.safetensors",
    # gram: RegMean's Grams of the body's linear-layer inputs, on the same samples
    "gram": "results/gram/{family}/{rep}/{task}/n{n}-seed{seed}.safetensors",
    # merge / evaluate ({merge_id} holds n and the Fisher seed where the merge has them)
    "merged": "results/merged/{family}/{rep}/{subset}/{merge_id}",
    "eval_finetuned": "results/eval/{family}/{rep}/finetuned/{task}.json",
    "eval_merged": "results/eval/{family}/{rep}/merged/{subset}/{merge_id}/{task}.json",
    # merge evaluates its merged models in the same job: one directory of the above per merge
    "eval_merged_dir": "results/eval/{family}/{rep}/merged/{subset}/{merge_id}",
    # report
    "report_dir": "results/report",
    "report_plots": "results/report/plots",
    "report_eval_list": "results/report/inputs/evaluations.txt",
    "report_fisher_list": "results/report/inputs/fishers.txt",
}
# The directories every workflow output and log lies under.
OUTPUT_ROOTS = ("results", "resources", "logs")


def path(kind: str, **wildcards) -> str:
    """The path of one artifact: ``path("samples", task="t", n=8, seed=0)``."""
    try:
        template = PATHS[kind]
    except KeyError:
        raise KeyError(f"unknown artifact kind {kind!r}; known: {', '.join(PATHS)}") from None
    return template.format(**wildcards)
