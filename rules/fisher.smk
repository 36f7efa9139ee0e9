rule fisher:
    input:
        model=checkpoint_dir,
        samples=fisher_samples,
    output:
        PATHS["fisher"],
    log:
        LOGS["fisher"],
    conda:
        ENV
    threads: heavy_threads()
    resources:
        **gpu_resources("fisher", "fisher_runtime"),
    params:
        model=model_flags,
        flags=lambda wc: PLAN.fisher_flags(wc.n, wc.method, wc.family),
    shell:
        "python -m workflow_scripts fisher --model {input.model} {params.model} "
        "--data {input.samples} --method {wildcards.method} "
        "--task {wildcards.task} --n {wildcards.n} --seed {wildcards.seed} "
        "{params.flags} --meta family={wildcards.family} replicate={wildcards.rep} "
        "--out {output} > {log} 2>&1"


rule gram:
    input:
        model=checkpoint_dir,
        samples=fisher_samples,
    output:
        PATHS["gram"],
    log:
        LOGS["gram"],
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("gram", "fisher_runtime"),
    params:
        model=model_flags,
        flags=lambda wc: PLAN.gram_flags(wc.family),
    shell:
        "python -m workflow_scripts gram --model {input.model} {params.model} "
        "--data {input.samples} --task {wildcards.task} --n {wildcards.n} "
        "--seed {wildcards.seed} {params.flags} --meta family={wildcards.family} "
        "replicate={wildcards.rep} --out {output} > {log} 2>&1"
