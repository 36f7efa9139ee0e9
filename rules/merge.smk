rule merge:
    input:
        unpack(merge_inputs),
    output:
        merged_output(directory(PATHS["merged"])),
    log:
        "logs/merge/{family}/{rep}/{subset}/{merge_id}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=COMPUTE["mem_mb"],
    params:
        flags=merge_flags,
    shell:
        "python -m workflow_scripts merge --models {input.models} {params.flags} "
        "--out {output} > {log} 2>&1"


rule evaluate_merged:
    input:
        merged=PATHS["merged"],
        validation=PATHS["task_validation"],
    output:
        PATHS["eval_merged"],
    log:
        "logs/evaluate_merged/{family}/{rep}/{subset}/{merge_id}/{task}.log",
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("evaluate_runtime"),
    params:
        meta=merged_eval_meta,
        flags=PLAN.evaluate_flags(),
        card="--card" if config["merge"]["keep_merged"] else "",
    shell:
        "python -m workflow_scripts evaluate --model {input.merged}/{wildcards.task} "
        "--data {input.validation} --task {wildcards.task} {params.flags} {params.card} "
        "--meta {params.meta} --out {output} > {log} 2>&1"
