import os
import shlex
import sys

sys.path.insert(0, workflow.basedir)

# report() as report_output(): in a function, a line opening with "report(" reads as the
# report: keyword
from snakemake.io import report as report_output
from snakemake.utils import min_version

from workflow_scripts.config import check_config
from workflow_scripts.jobs import (
    export_job_environment,
    failure_summary,
    visible_gpu_count,
    write_if_changed,
)
from workflow_scripts.artifactkinds import KINDS as ARTIFACT_KINDS
from workflow_scripts.artifactkinds import of_method as artifact_kind
from workflow_scripts.merging.registry import MERGE_ID_PATTERN
from workflow_scripts.fisher.kinds import METHODS as FISHER_METHODS
from workflow_scripts.jobmemory import GPU_RULES
from workflow_scripts.jobmemory import resources as job_resources
from workflow_scripts.paths import (
    LOGS,
    PATHS,
    REPORT_FILES,
    REPORT_TABLES,
    SELECTION_TABLES,
    plot_file,
    table_file,
)
from workflow_scripts.plan import Plan
from workflow_scripts.replicates import PATTERN as REPLICATE_PATTERN

min_version("9.0")


# Validated against schemas/config.schema.yaml once, defaults filled once.
check_config(config, base_dir=".", config_files=workflow.configfiles)
PLAN = Plan(config)
# Jobs run `python -m workflow_scripts` from this checkout, with the interpreter
# that runs Snakemake unless a conda env is active.
export_job_environment(workflow.basedir, sys.executable)
COMPUTE = config["compute"]
ENV = "../envs/fisher-merging.yaml"


localrules:
    fetch_model,
    fetch_base_model,
    prepare_task,


wildcard_constraints:
    family=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    task=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    subset=r"[A-Za-z0-9][A-Za-z0-9_-]*(\+[A-Za-z0-9][A-Za-z0-9_-]*)+",
    merge_id=MERGE_ID_PATTERN,
    rep=REPLICATE_PATTERN,
    method="|".join(FISHER_METHODS),
    n=r"\d+",
    seed=r"\d+",


def quoted(paths):
    """Paths as shell words, each quoted (the flag strings the rules put on shell lines)."""
    return " ".join(shlex.quote(str(p)) for p in paths)


def task_files(wildcards):
    return {
        "train": PATHS["task_train"].format(task=wildcards.task),
        "validation": PATHS["task_validation"].format(task=wildcards.task),
        "info": PATHS["task_info"].format(task=wildcards.task),
    }


def holdout_output():
    """prepare_task's held-out split, an output only with held-out selection on."""
    return {"holdout": PATHS["task_holdout"]} if PLAN.selection_on() else {}


def prepare_task_flags(wildcards, output):
    """The task's settings, and the held-out split's file where there is one."""
    flags = PLAN.prepare_task_flags(wildcards.task)
    if "holdout" in output.keys():
        flags += f" --out-holdout {shlex.quote(output.holdout)}"
    return flags


def checkpoint_dir(wildcards):
    return PLAN.checkpoint_dir(wildcards.family, wildcards.task, wildcards.rep)


def model_flags(wildcards):
    return PLAN.model_flags(wildcards.family, getattr(wildcards, "task", None))


def fisher_samples(wildcards):
    return PLAN.samples_path(wildcards.task, wildcards.n, wildcards.seed)


def wildcard_merge(wildcards):
    return PLAN.merge_from_wildcards(
        wildcards.family, wildcards.rep, wildcards.subset, wildcards.merge_id
    )


def merge_inputs(wildcards):
    merge = wildcard_merge(wildcards)
    inputs = {
        "models": [
            PLAN.checkpoint_dir(merge.family, t, merge.replicate) for t in merge.subset
        ]
    }
    if merge.artifact:  # keyed by its kind's option, the merge command's flag
        inputs[artifact_kind(merge.artifact).option] = PLAN.artifact_paths(merge)
    if merge.variant.method.needs_base:
        inputs["base"] = PLAN.base_dir(merge.family)
    inputs["validation"] = [
        PATHS["task_validation"].format(task=t) for t in merge.subset
    ]
    inputs["infos"] = [PATHS["task_info"].format(task=t) for t in merge.subset]
    if PLAN.selecting():
        inputs["holdout"] = [PATHS["task_holdout"].format(task=t) for t in merge.subset]
    return inputs


def merge_flags(wildcards, input):
    """The merge's settings, its artifacts (their kind's flag: --fishers, --grams) and
    --base."""
    flags = [PLAN.merge_flags(wildcard_merge(wildcards))]
    for kind in ARTIFACT_KINDS.values():
        if kind.option in input.keys():
            flags.append(f"{kind.flag} {quoted(getattr(input, kind.option))}")
    if "base" in input.keys():
        flags.append(f"--base {shlex.quote(input.base)}")
    return " ".join(flags)


def merged_eval_flags(wildcards, input, output):
    """The evaluation's flags; when selecting, the held-out split's too (every merge job is
    evaluated on it, as the rule's outputs are the same for all; the select job reads the
    candidates')."""
    flags = PLAN.merged_eval_flags(wildcard_merge(wildcards))
    if "holdout" in output.keys():
        flags += (
            f" --holdout-data {quoted(input.holdout)}"
            f" --holdout-out {shlex.quote(output.holdout)}"
        )
    return flags


def merged_output():
    """The merged checkpoints as an output where merge.keep_merged keeps them; else the
    merge job evaluates them in memory and writes none. When selecting (held-out selection
    on, and merges with candidates), the merged models' held-out evaluations."""
    out = {}
    if config["merge"]["keep_merged"]:
        out["merged"] = directory(PATHS["merged"])
    if PLAN.selecting():
        out["holdout"] = directory(PATHS["holdout_merged_dir"])
    return out


def heavy_threads():
    """Threads of fine-tuning and Fisher jobs (compute.threads, capped by --cores)."""
    cores = workflow.cores or 1
    if COMPUTE["threads"] == "all":
        return cores
    return min(COMPUTE["threads"], cores)


def gpus_per_job():
    if COMPUTE["gpu"] != "auto":
        return COMPUTE["gpu"]
    return int(visible_gpu_count() > 0)


def gpu_resources(rule):
    """GPUs, runtime and memory (estimated per job from its model) of a rule of
    jobmemory.GPU_RULES, the one list of the rules that use a GPU."""
    runtime = COMPUTE[GPU_RULES[rule].runtime_key]
    return job_resources(PLAN, rule, runtime, gpus_per_job())


REPORT = PATHS["report_dir"]
PLOTS = PATHS["report_plots"]
write_if_changed(PATHS["report_eval_list"], PLAN.eval_paths())
write_if_changed(PATHS["report_fisher_list"], PLAN.fisher_paths())
if PLAN.selecting():
    write_if_changed(PATHS["report_holdout_list"], PLAN.holdout_paths())


def selection_input():
    """The select job's choice, an input of the report and the plots with selection on."""
    return {"selection": PATHS["selection"]} if PLAN.selecting() else {}


def selection_tables():
    """The report's table of every candidate, an output with selection on."""
    if not PLAN.selecting():
        return {}
    return {
        "candidates": [
            report_output(
                f"{REPORT}/{table_file(table, 'md')}",
                caption=f"../report/{table}.rst",
                category="Tables",
            )
            for table in SELECTION_TABLES
        ],
        "candidates_csv": [
            f"{REPORT}/{table_file(t, 'csv')}" for t in SELECTION_TABLES
        ],
    }


def report_outputs():
    return [f"{REPORT}/{REPORT_FILES['summary']}", f"{PLOTS}/{plot_file('scores')}"]
