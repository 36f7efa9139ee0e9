rule prepare_task:
    output:
        train="resources/tasks/{task}/train.parquet",
        validation="resources/tasks/{task}/validation.parquet",
        info="resources/tasks/{task}/info.json",
    log:
        "logs/prepare_task/{task}.log",
    conda:
        "../envs/fisher-merging.yaml"
    params:
        args=prepare_task_args,
    shell:
        "python -m workflow_scripts prepare-task {params.args} "
        "--out-train {output.train} --out-validation {output.validation} "
        "--out-info {output.info} > {log} 2>&1"


rule sample:
    input:
        train="resources/tasks/{task}/train.parquet",
    output:
        "results/samples/{task}/n{n}-seed{seed}.parquet",
    log:
        "logs/sample/{task}/n{n}-seed{seed}.log",
    conda:
        "../envs/fisher-merging.yaml"
    params:
        allow_full="--allow-full" if FISHER["allow_full_split"] else "",
    shell:
        "python -m workflow_scripts sample --train {input.train} --n {wildcards.n} "
        "--seed {wildcards.seed} {params.allow_full} --out {output} > {log} 2>&1"
