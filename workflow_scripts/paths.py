"""Where every workflow file lives: one table per kind, read by the rules, the plan and
the report.

:data:`PATHS`: the artifacts; :data:`LOGS`: each rule's log; :data:`REPORT_TABLES`,
:data:`REPORT_FILES` and :data:`PLOT_FILES`: the names of the files the ``report`` and
``plots`` commands write under their ``--out-dir`` (the workflow's
``PATHS["report_dir"]`` and ``PATHS["report_plots"]``).  Templates use Snakemake's
wildcard syntax; :func:`path` fills them for the plan (and for tests), the rules use
them as ``output:`` and ``log:`` patterns.  Nothing else in the package or the rules
spells an artifact, log, report or figure file name.  Light on purpose: Snakemake
imports this while it parses the workflow.
"""

from __future__ import annotations

import re

PATHS = {
    # prepare-task: a task's splits in the engine's schema and its info file
    "task_train": "resources/tasks/{task}/train.parquet",
    "task_validation": "resources/tasks/{task}/validation.parquet",
    "task_info": "resources/tasks/{task}/info.json",
    # ... and, with held-out selection on (config selection), its held-out selection split
    "task_holdout": "resources/tasks/{task}/holdout.parquet",
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
    # the base model on each task whose kind's score needs it (a causal LM's text task: the
    # loss its fine-tunes improve on)
    "eval_base": "results/eval/{family}/base/{task}.json",
    "eval_merged": "results/eval/{family}/{rep}/merged/{subset}/{merge_id}/{task}.json",
    # merge evaluates its merged models in the same job: one directory of the above per merge
    "eval_merged_dir": "results/eval/{family}/{rep}/merged/{subset}/{merge_id}",
    # held-out selection: the fine-tuned and the merged models on the held-out split, and
    # the select job's choice of each merge's candidate (which the report then reads)
    "holdout_finetuned": "results/holdout/{family}/{rep}/finetuned/{task}.json",
    # the base model on the held-out split, where the task kind's score needs it
    "holdout_base": "results/holdout/{family}/base/{task}.json",
    "holdout_merged": "results/holdout/{family}/{rep}/merged/{subset}/{merge_id}/{task}.json",
    "holdout_merged_dir": "results/holdout/{family}/{rep}/merged/{subset}/{merge_id}",
    "selection": "results/report/selection.csv",
    # report (its files: REPORT_TABLES, REPORT_FILES and PLOT_FILES below)
    "report_dir": "results/report",
    "report_plots": "results/report/plots",
    "report_eval_list": "results/report/inputs/evaluations.txt",
    "report_fisher_list": "results/report/inputs/fishers.txt",
    "report_holdout_list": "results/report/inputs/holdout_evaluations.txt",
}

# Each rule's log (rule name -> template, with the wildcards of the rule's output).
LOGS = {
    "prepare_task": "logs/prepare_task/{task}.log",
    "sample": "logs/sample/{task}/n{n}-seed{seed}.log",
    "fetch_base_model": "logs/fetch_base_model/{family}.log",
    "fetch_model": "logs/fetch_model/{family}/{task}.log",
    "finetune": "logs/finetune/{family}/{rep}/{task}.log",
    "evaluate_finetuned": "logs/evaluate_finetuned/{family}/{rep}/{task}.log",
    "evaluate_finetuned_holdout": "logs/evaluate_finetuned_holdout/{family}/{rep}/{task}.log",
    "evaluate_base": "logs/evaluate_base/{family}/{task}.log",
    "evaluate_base_holdout": "logs/evaluate_base_holdout/{family}/{task}.log",
    "fisher": "logs/fisher/{family}/{rep}/{task}/n{n}-seed{seed}/{method}.log",
    "gram": "logs/gram/{family}/{rep}/{task}/n{n}-seed{seed}.log",
    "merge": "logs/merge/{family}/{rep}/{subset}/{merge_id}.log",
    "select": "logs/report/select.log",
    "report": "logs/report/report.log",
    "plots": "logs/report/plots.log",
}

# The directories every workflow output and log lies under.
OUTPUT_ROOTS = ("results", "resources", "logs")

# ``report``: the tables, each written in every one of TABLE_FORMATS (table_file) ...
REPORT_TABLES = (
    "table1_scores",
    "paired_comparisons",
    "table2_mask_runtime",
    "table3_full_runtime",
    "runtime_speedup",
    "table4_flops",
)
TABLE_FORMATS = ("csv", "md")
# ... and, given a selection (PATHS["selection"]), the table of every candidate's scores
SELECTION_TABLES = ("table1_candidates",)
# ... and the files beside them (key -> file name).
REPORT_FILES = {
    "summary": "summary.md",  # every table, the findings and the warnings on one page
    "evidence": "table1.html",  # Table 1, the findings and the paired comparisons
    "scores": "scores_long.csv",  # every merged score, one row each
    "finetuned": "finetuned.csv",  # the fine-tuned models' own scores
    "spread": "seed_spread.md",  # each run's median, their mean and spread
    "warnings": "warnings.md",
    "runs": "fisher_runs.csv",  # every Fisher artifact's runtime and FLOPs
}
# ``plots``: the figures (key -> file name; {family}: see family_slug).
PLOT_FILES = {
    "scores": "scores_vs_n.png",
    "interference": "interference.png",
    "heatmap": "pair_heatmap.png",
    "paired": "paired_{family}.png",
    "runtime": "runtime.png",
    "layers": "mask_fisher_layers_{family}.png",
}


def path(kind: str, **wildcards) -> str:
    """The path of one artifact: ``path("samples", task="t", n=8, seed=0)``."""
    try:
        template = PATHS[kind]
    except KeyError:
        raise KeyError(f"unknown artifact kind {kind!r}; known: {', '.join(PATHS)}") from None
    return template.format(**wildcards)


def family_slug(family: str) -> str:
    """``family`` in a file name: characters other than letters, digits, ``.``, ``_``
    and ``-`` replaced by ``_`` (the workflow's family names have none)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", family)


def table_file(table: str, fmt: str) -> str:
    """The file name of one of :data:`REPORT_TABLES` (or :data:`SELECTION_TABLES`) in one of
    :data:`TABLE_FORMATS`."""
    if table not in REPORT_TABLES + SELECTION_TABLES or fmt not in TABLE_FORMATS:
        raise KeyError(f"unknown report table {table!r} or format {fmt!r}")
    return f"{table}.{fmt}"


def plot_file(key: str, family: str | None = None) -> str:
    """The file name of one of :data:`PLOT_FILES`; ``family`` for the per-family ones."""
    template = PLOT_FILES[key]
    if ("{family}" in template) != (family is not None):
        raise ValueError(f"plot {key!r}: {template} takes {'a' if family is None else 'no'} family")
    return template.format(family=family_slug(family)) if family is not None else template


def report_listing() -> list[str]:
    """The report's files as help texts list them: the tables with their formats first (the
    selection's last: written with ``--selection`` only)."""
    formats = ",".join(TABLE_FORMATS)
    return ([f"{t}.{{{formats}}}" for t in REPORT_TABLES] + list(REPORT_FILES.values())
            + [f"{t}.{{{formats}}}" for t in SELECTION_TABLES])
