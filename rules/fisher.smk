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
        **gpu_resources("fisher"),
    params:
        model=model_flags,
        flags=lambda wc: PLAN.fisher_flags(wc.n, wc.method, wc.family),
    shell:
        "python -m workflow_scripts fisher --model {input.model:q} {params.model} "
        "--data {input.samples:q} --method {wildcards.method:q} "
        "--task {wildcards.task:q} --n {wildcards.n:q} --seed {wildcards.seed:q} "
        "{params.flags} --meta family={wildcards.family:q} replicate={wildcards.rep:q} "
        "--out {output:q} > {log:q} 2>&1"


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
        **gpu_resources("gram"),
    params:
        model=model_flags,
        flags=lambda wc: PLAN.gram_flags(wc.family),
    shell:
        "python -m workflow_scripts gram --model {input.model:q} {params.model} "
        "--data {input.samples:q} --task {wildcards.task:q} --n {wildcards.n:q} "
        "--seed {wildcards.seed:q} {params.flags} --meta family={wildcards.family:q} "
        "replicate={wildcards.rep:q} --out {output:q} > {log:q} 2>&1"
