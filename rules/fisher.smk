rule fisher:
    input:
        model=checkpoint_dir,
        samples=fisher_samples,
    output:
        "results/fisher/{family}/{task}/n{n}/{method}.safetensors",
    params:
        label_map=label_map_arg,
        pickle=pickle_arg,
        flops="" if FISHER["count_flops"] else "--no-count-flops",
    threads: workflow.cores
    resources:
        **gpu_resources("fisher_runtime"),
    log:
        "logs/fisher/{family}/{task}/n{n}/{method}.log",
    conda:
        "../envs/fisher-merging.yaml"
    shell:
        "python -m workflow_scripts fisher --model {input.model} {params.label_map} "
        "{params.pickle} --data {input.samples} --method {wildcards.method} "
        "--estimator {FISHER[estimator]} --neuron-mask {FISHER[neuron_mask]} "
        "--labels {FISHER[labels]} --batch-size {FISHER[batch_size]} "
        "--chunk-size {FISHER[chunk_size]} --max-length {FISHER[max_length]} "
        "--task {wildcards.task} --n {wildcards.n} --seed {FISHER[seed]} "
        "--device {COMPUTE[device]} {params.flops} --meta family={wildcards.family} "
        "--out {output} > {log} 2>&1"
