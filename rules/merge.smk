rule merge:
    input:
        unpack(merge_inputs),
    output:
        merged_output(directory("results/merged/{family}/{subset}/{merge_id}")),
    log:
        "logs/merge/{family}/{subset}/{merge_id}.log",
    conda:
        "../envs/fisher-merging.yaml"
    threads: 1
    resources:
        mem_mb=COMPUTE["mem_mb"],
    params:
        args=merge_args,
        fishers=lambda wc, input: (
            f"--fishers {' '.join(input.fishers)}" if "fishers" in input.keys() else ""
        ),
    shell:
        "python -m workflow_scripts merge --models {input.models} "
        "{params.fishers} {params.args} --out {output} > {log} 2>&1"


rule evaluate_merged:
    input:
        merged="results/merged/{family}/{subset}/{merge_id}",
        validation="resources/tasks/{task}/validation.parquet",
    output:
        "results/eval/{family}/merged/{subset}/{merge_id}/{task}.json",
    log:
        "logs/evaluate_merged/{family}/{subset}/{merge_id}/{task}.log",
    conda:
        "../envs/fisher-merging.yaml"
    threads: 1
    resources:
        **gpu_resources("evaluate_runtime"),
    params:
        meta=merged_eval_meta,
        args=evaluate_args,
    shell:
        "python -m workflow_scripts evaluate --model {input.merged}/{wildcards.task} "
        "--data {input.validation} --task {wildcards.task} {params.args} "
        "--meta {params.meta} --out {output} > {log} 2>&1"
