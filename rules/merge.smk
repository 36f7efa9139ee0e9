# One job per merge: merge the subset's checkpoints, then evaluate each merged model on
# its own task's validation set in the same process (one JSON per task), and with
# held-out selection on, on its held-out split too. The merged checkpoints are written
# only when merge.keep_merged asks for them.


rule merge:
    input:
        unpack(merge_inputs),
    output:
        **merged_output(),
        evals=directory(PATHS["eval_merged_dir"]),
    log:
        LOGS["merge"],
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources("merge"),
    params:
        flags=merge_flags,
        evaluation=merged_eval_flags,
        out=lambda wc, output: (
            f"--out {shlex.quote(output.merged)}" if "merged" in output.keys() else ""
        ),
    shell:
        "python -m workflow_scripts merge --models {input.models:q} {params.flags} "
        "{params.out} --eval-data {input.validation:q} "
        "--eval-task-infos {input.infos:q} {params.evaluation} --eval-out {output.evals:q} "
        "> {log:q} 2>&1"
