import sys

sys.path.insert(0, workflow.basedir)

from snakemake.utils import min_version, validate

from workflow_scripts.plan import (
    Plan,
    check_config,
    export_job_environment,
    visible_gpu_count,
    write_if_changed,
)

min_version("9.0")


validate(config, workflow.source_path("../schemas/config.schema.yaml"))
check_config(config, base_dir=".", config_files=workflow.configfiles)
PLAN = Plan(config)
# Jobs run `python -m workflow_scripts` from this checkout, with the interpreter
# that runs Snakemake unless a conda env is active.
export_job_environment(workflow.basedir, sys.executable)
FISHER = config["fisher"]
COMPUTE = config["compute"]
CLI = "python -m workflow_scripts"


localrules:
    fetch_model,
    fetch_base_model,
    prepare_task,


wildcard_constraints:
    family=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    task=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    subset=r"[A-Za-z0-9][A-Za-z0-9_-]*(\+[A-Za-z0-9][A-Za-z0-9_-]*)+",
    merge_id=r"average|(fisher|mask|mask-released)-n\d+",
    method=r"mask|full",
    n=r"\d+",
    seed=r"\d+",


def task_files(wildcards):
    return {
        "train": f"resources/tasks/{wildcards.task}/train.parquet",
        "validation": f"resources/tasks/{wildcards.task}/validation.parquet",
        "info": f"resources/tasks/{wildcards.task}/info.json",
    }


def checkpoint_dir(wildcards):
    return PLAN.checkpoint_dir(wildcards.family, wildcards.task)


def label_map_arg(wildcards):
    mapping = PLAN.label_map(wildcards.family, wildcards.task)
    return f"--label-map {mapping}" if mapping else ""


def pickle_arg(wildcards):
    allow = config["families"][wildcards.family].get("allow_pickle", False)
    return "--allow-pickle" if allow else ""


def fisher_samples(wildcards):
    return PLAN.samples_path(wildcards.task, wildcards.n, FISHER["seed"])


def merge_inputs(wildcards):
    merge = PLAN.merge_from_wildcards(
        wildcards.family, wildcards.subset, wildcards.merge_id
    )
    inputs = {"models": [PLAN.checkpoint_dir(merge.family, t) for t in merge.subset]}
    if merge.fisher_method:
        inputs["fishers"] = [
            PLAN.fisher_path(merge.family, t, merge.n, merge.fisher_method)
            for t in merge.subset
        ]
    return inputs


def merge_args(wildcards):
    merge = PLAN.merge_from_wildcards(
        wildcards.family, wildcards.subset, wildcards.merge_id
    )
    method = {"mask-released": "mask"}.get(merge.method, merge.method)
    args = [f"--method {method}", f"--names {' '.join(merge.subset)}"]
    if merge.method == "mask-released":
        args.append("--scheme released")
    if merge.method != "average" and config["merge"]["floor"]:
        args.append(f"--floor {config['merge']['floor']}")
    maps = [PLAN.label_map(merge.family, t) or "-" for t in merge.subset]
    if any(m != "-" for m in maps):
        args.append(f"--label-maps {' '.join(maps)}")
    if config["families"][merge.family].get("allow_pickle", False):
        args.append("--allow-pickle")
    return " ".join(args)


def merged_output(path):
    return path if config["merge"]["keep_merged"] else temp(path)


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


def gpu_resources(runtime_key):
    return {
        "gpu": gpus_per_job(),
        "mem_mb": COMPUTE["mem_mb"],
        "runtime": COMPUTE[runtime_key],
    }


REPORT_TABLES = [
    "table1_scores",
    "table2_mask_runtime",
    "table3_full_runtime",
    "runtime_speedup",
    "table4_flops",
]
EVAL_LIST = "results/report/inputs/evaluations.txt"
FISHER_LIST = "results/report/inputs/fishers.txt"
write_if_changed(EVAL_LIST, PLAN.eval_paths())
write_if_changed(FISHER_LIST, PLAN.fisher_paths())


def report_outputs():
    return ["results/report/summary.md", "results/report/plots/scores_vs_n.png"]


def prepare_task_args(wildcards):
    task = config["tasks"][wildcards.task]
    args = [f"--source {task['source']}"]
    if task["source"] == "local":
        args.append(f"--task {wildcards.task}")
        args.append(f"--train-file {task['train_file']}")
        args.append(f"--validation-file {task['validation_file']}")
        if "format" in task:
            args.append(f"--format {task['format']}")
        cmap = ",".join(f"{k}={v}" for k, v in task["column_map"].items())
        args.append(f"--column-map '{cmap}'")
        if "label_names" in task:
            args.append(f"--label-names '{','.join(task['label_names'])}'")
    else:
        args.append(f"--task {task.get('name', wildcards.task)}")
    if "revision" in task:
        args.append(f"--revision {task['revision']}")
    for key in ("max_train", "max_validation"):
        if key in task:
            args.append(f"--{key.replace('_', '-')} {task[key]}")
    return " ".join(args)


def revision_arg(wildcards):
    revision = PLAN.checkpoint(wildcards.family, wildcards.task).get("revision")
    return f"--revision {revision}" if revision else ""


def finetune_args(wildcards):
    tune = config["finetune"]
    args = [
        f"--epochs {tune['epochs']}",
        f"--batch-size {tune['batch_size']}",
        f"--lr {tune['lr']}",
        f"--max-length {tune['max_length']}",
        f"--seed {tune['seed']}",
    ]
    for key in ("max_steps", "max_train_examples"):
        if key in tune:
            args.append(f"--{key.replace('_', '-')} {tune[key]}")
    if config["families"][wildcards.family].get("allow_pickle", False):
        args.append("--allow-pickle")
    args.append(f"--device {COMPUTE['device']}")
    return " ".join(args)


def fisher_args(wildcards):
    args = [
        f"--seed {FISHER['seed']}",
        f"--estimator {FISHER['estimator']}",
        f"--neuron-mask {FISHER['neuron_mask']}",
        f"--labels {FISHER['labels']}",
        f"--batch-size {FISHER['batch_size']}",
        f"--chunk-size {FISHER['chunk_size']}",
        f"--max-length {FISHER['max_length']}",
        f"--device {COMPUTE['device']}",
    ]
    if not FISHER["count_flops"]:
        args.append("--no-count-flops")
    return " ".join(args)


def evaluate_args(wildcards):
    evaluation = config["evaluation"]
    return (
        f"--batch-size {evaluation['batch_size']} "
        f"--max-length {evaluation['max_length']} --device {COMPUTE['device']}"
    )


def merged_eval_meta(wildcards):
    merge = PLAN.merge_from_wildcards(
        wildcards.family, wildcards.subset, wildcards.merge_id
    )
    meta = [
        f"family={merge.family}",
        "kind=merged",
        f"method={merge.method}",
        f"subset={merge.subset_id}",
        f"task={wildcards.task}",
    ]
    if merge.n is not None:
        meta.append(f"n={merge.n}")
    return " ".join(meta)


def plot_args(wildcards):
    args = [f"--default-metric {config['report']['default_metric']}"]
    for task, metric in PLAN.task_metrics().items():
        args.append(f"--task-metric {task}={metric}")
    if "runtime_n" in config["report"]:
        args.append(f"--runtime-n {config['report']['runtime_n']}")
    return " ".join(args)


def report_args(wildcards):
    args = [plot_args(wildcards)]
    for entry in config["report"]["accept_near_chance"]:
        args.append(f"--accept-near-chance {entry}")
    return " ".join(args)
