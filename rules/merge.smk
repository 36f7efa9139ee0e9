# One job per merge: merge the subset's checkpoints, then evaluate each merged model on
# its own task's validation set in the same process (one JSON per task).


rule merge:
    input:
        unpack(merge_inputs),
    output:
        evals=directory(PATHS["eval_merged_dir"]),
        merged=merged_output(directory(PATHS["merged"])),
    log:
        "logs/merge/{family}/{rep}/{subset}/{merge_id}.log",
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("evaluate_runtime"),
    params:
        flags=merge_flags,
        evaluation=merged_eval_flags,
    shell:
        "python -m workflow_scripts merge --models {input.models} {params.flags} "
        "--out {output.merged} --eval-data {input.validation} "
        "--eval-task-infos {input.infos} {params.evaluation} --eval-out {output.evals} "
        "> {log} 2>&1"
