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
        "--out-train {output.train:q} --out-validation {output.validation:q} "
        "--out-info {output.info:q} > {log:q} 2>&1"


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
        "python -m workflow_scripts sample --train {input.train:q} --n {wildcards.n:q} "
        "--seed {wildcards.seed:q} {params.allow_full} --out {output:q} > {log:q} 2>&1"
