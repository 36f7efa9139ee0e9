rule fetch_base_model:
    output:
        directory(PATHS["base_model"]),
    log:
        LOGS["fetch_base_model"],
    conda:
        ENV
    params:
        source=lambda wc: config["families"][wc.family]["base"],
        flags=lambda wc: PLAN.fetch_flags(wc.family),
    shell:
        "python -m workflow_scripts fetch-model --source {params.source:q} "
        "{params.flags} --out {output:q} > {log:q} 2>&1"


rule fetch_model:
    output:
        directory(PATHS["fetched_model"]),
    log:
        LOGS["fetch_model"],
    conda:
        ENV
    params:
        source=lambda wc: PLAN.checkpoint(wc.family, wc.task)["source"],
        flags=lambda wc: PLAN.fetch_flags(wc.family, wc.task),
    shell:
        "python -m workflow_scripts fetch-model --source {params.source:q} "
        "{params.flags} --out {output:q} > {log:q} 2>&1"


rule finetune:
    input:
        unpack(task_files),
        base=PATHS["base_model"],
    output:
        directory(PATHS["finetuned_model"]),
    log:
        LOGS["finetune"],
    conda:
        ENV
    threads: heavy_threads()
    resources:
        **gpu_resources("finetune"),
    params:
        flags=lambda wc: PLAN.finetune_flags(wc.family, wc.rep),
    shell:
        "python -m workflow_scripts finetune --base {input.base:q} --train {input.train:q} "
        "--validation {input.validation:q} --info {input.info:q} {params.flags} "
        "--out {output:q} > {log:q} 2>&1"


rule evaluate_finetuned:
    input:
        unpack(task_files),
        model=checkpoint_dir,
    output:
        PATHS["eval_finetuned"],
    log:
        LOGS["evaluate_finetuned"],
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("evaluate_finetuned"),
    params:
        model=model_flags,
        flags=lambda wc: PLAN.evaluate_flags(wc.family),
        meta=lambda wc: PLAN.finetuned_eval_meta(wc.family, wc.rep, wc.task),
    shell:
        "python -m workflow_scripts evaluate --model {input.model:q} "
        "--data {input.validation:q} --task-info {input.info:q} --task {wildcards.task:q} "
        "{params.model} {params.flags} --meta {params.meta:q} "
        "--out {output:q} > {log:q} 2>&1"


# With held-out selection on: each fine-tuned model on its task's held-out split (the
# normaliser of the candidates' held-out scores; only the select job reads it).
rule evaluate_finetuned_holdout:
    input:
        holdout=PATHS["task_holdout"],
        info=PATHS["task_info"],
        model=checkpoint_dir,
    output:
        PATHS["holdout_finetuned"],
    log:
        LOGS["evaluate_finetuned_holdout"],
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("evaluate_finetuned_holdout"),
    params:
        model=model_flags,
        flags=lambda wc: PLAN.evaluate_flags(wc.family),
        meta=lambda wc: PLAN.finetuned_eval_meta(wc.family, wc.rep, wc.task, "holdout"),
    shell:
        "python -m workflow_scripts evaluate --model {input.model:q} "
        "--data {input.holdout:q} --task-info {input.info:q} --task {wildcards.task:q} "
        "{params.model} {params.flags} --meta {params.meta:q} "
        "--out {output:q} > {log:q} 2>&1"


# The base model on each task whose kind's score needs it (a causal LM's text task: the loss
# its fine-tunes improve on; a merge's score is the share of that gain it keeps).
rule evaluate_base:
    input:
        unpack(task_files),
        base=PATHS["base_model"],
    output:
        PATHS["eval_base"],
    log:
        LOGS["evaluate_base"],
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("evaluate_base"),
    params:
        flags=lambda wc: PLAN.evaluate_flags(wc.family),
        meta=lambda wc: PLAN.base_eval_meta(wc.family, wc.task),
    shell:
        "python -m workflow_scripts evaluate --model {input.base:q} "
        "--data {input.validation:q} --task-info {input.info:q} --task {wildcards.task:q} "
        "{params.flags} --meta {params.meta:q} --out {output:q} > {log:q} 2>&1"


# With held-out selection on: the base model on the held-out split, which the held-out score
# of such a task kind is normalised by.
rule evaluate_base_holdout:
    input:
        holdout=PATHS["task_holdout"],
        info=PATHS["task_info"],
        base=PATHS["base_model"],
    output:
        PATHS["holdout_base"],
    log:
        LOGS["evaluate_base_holdout"],
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("evaluate_base_holdout"),
    params:
        flags=lambda wc: PLAN.evaluate_flags(wc.family),
        meta=lambda wc: PLAN.base_eval_meta(wc.family, wc.task, "holdout"),
    shell:
        "python -m workflow_scripts evaluate --model {input.base:q} "
        "--data {input.holdout:q} --task-info {input.info:q} --task {wildcards.task:q} "
        "{params.flags} --meta {params.meta:q} --out {output:q} > {log:q} 2>&1"
