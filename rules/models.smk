rule fetch_base_model:
    output:
        directory("resources/base_models/{family}"),
    log:
        "logs/fetch_base_model/{family}.log",
    conda:
        "../envs/fisher-merging.yaml"
    params:
        source=lambda wc: config["families"][wc.family]["base"],
        pickle=pickle_arg,
    shell:
        "python -m workflow_scripts fetch-model --source {params.source} "
        "{params.pickle} --out {output} > {log} 2>&1"


rule fetch_model:
    output:
        directory("resources/models/{family}/{task}"),
    log:
        "logs/fetch_model/{family}/{task}.log",
    conda:
        "../envs/fisher-merging.yaml"
    params:
        source=lambda wc: PLAN.checkpoint(wc.family, wc.task)["source"],
        revision=revision_arg,
        pickle=pickle_arg,
    shell:
        "python -m workflow_scripts fetch-model --source {params.source} "
        "{params.revision} {params.pickle} --out {output} > {log} 2>&1"


rule finetune:
    input:
        unpack(task_files),
        base="resources/base_models/{family}",
    output:
        directory("results/finetuned/{family}/{task}"),
    log:
        "logs/finetune/{family}/{task}.log",
    conda:
        "../envs/fisher-merging.yaml"
    threads: heavy_threads()
    resources:
        **gpu_resources("finetune_runtime"),
    params:
        args=finetune_args,
    shell:
        "python -m workflow_scripts finetune --base {input.base} --train {input.train} "
        "--validation {input.validation} --info {input.info} {params.args} "
        "--out {output} > {log} 2>&1"


rule evaluate_finetuned:
    input:
        unpack(task_files),
        model=checkpoint_dir,
    output:
        "results/eval/{family}/finetuned/{task}.json",
    log:
        "logs/evaluate_finetuned/{family}/{task}.log",
    conda:
        "../envs/fisher-merging.yaml"
    threads: 1
    resources:
        **gpu_resources("evaluate_runtime"),
    params:
        label_map=label_map_arg,
        args=evaluate_args,
    shell:
        "python -m workflow_scripts evaluate --model {input.model} "
        "--data {input.validation} --task-info {input.info} --task {wildcards.task} "
        "{params.label_map} {params.args} "
        "--meta family={wildcards.family} kind=finetuned task={wildcards.task} "
        "--out {output} > {log} 2>&1"
