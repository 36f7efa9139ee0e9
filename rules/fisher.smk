rule fisher:
    input:
        model=checkpoint_dir,
        samples=fisher_samples,
    output:
        "results/fisher/{family}/{task}/n{n}/{method}.safetensors",
    log:
        "logs/fisher/{family}/{task}/n{n}/{method}.log",
    conda:
        "../envs/fisher-merging.yaml"
    threads: heavy_threads()
    resources:
        **gpu_resources("fisher_runtime"),
    params:
        label_map=label_map_arg,
        pickle=pickle_arg,
        args=fisher_args,
    shell:
        "python -m workflow_scripts fisher --model {input.model} {params.label_map} "
        "{params.pickle} --data {input.samples} --method {wildcards.method} "
        "--task {wildcards.task} --n {wildcards.n} {params.args} "
        "--meta family={wildcards.family} --out {output} > {log} 2>&1"
