# With held-out selection on, the task's held-out split too (moved out of its train split).
rule prepare_task:
    output:
        **holdout_output(),
        train=PATHS["task_train"],
        validation=PATHS["task_validation"],
        info=PATHS["task_info"],
    log:
        LOGS["prepare_task"],
    conda:
        ENV
    params:
        flags=prepare_task_flags,
    shell:
        "python -m workflow_scripts prepare-task {params.flags} "
        "--out-train {output.train} --out-validation {output.validation} "
        "--out-info {output.info} > {log} 2>&1"


rule sample:
    input:
        train=PATHS["task_train"],
    output:
        PATHS["samples"],
    log:
        LOGS["sample"],
    conda:
        ENV
    params:
        allow_full="--allow-full" if config["fisher"]["allow_full_split"] else "",
    shell:
        "python -m workflow_scripts sample --train {input.train} --n {wildcards.n} "
        "--seed {wildcards.seed} {params.allow_full} --out {output} > {log} 2>&1"
