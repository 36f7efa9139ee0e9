REPORT_TABLES = [
    "table1_scores",
    "table2_mask_runtime",
    "table3_full_runtime",
    "runtime_speedup",
    "table4_flops",
]


rule report:
    input:
        evals=PLAN.eval_paths(),
        fishers=PLAN.fisher_paths(),
    output:
        summary=report(
            "results/report/summary.md",
            caption="../report/summary.rst",
            category="Tables",
        ),
        tables=expand("results/report/{table}.{ext}", table=REPORT_TABLES, ext=["csv", "md"]),
        scores="results/report/scores_long.csv",
        finetuned="results/report/finetuned.csv",
    params:
        args=report_args,
    log:
        "logs/report/report.log",
    conda:
        "../envs/fisher-merging.yaml"
    shell:
        "python -m workflow_scripts report --evals {input.evals} "
        "--fishers {input.fishers} {params.args} --out-dir results/report > {log} 2>&1"


rule plots:
    input:
        evals=PLAN.eval_paths(),
        fishers=PLAN.fisher_paths(),
    output:
        scores=report(
            "results/report/plots/scores_vs_n.png",
            caption="../report/scores_vs_n.rst",
            category="Plots",
        ),
    log:
        "logs/report/plots.log",
    conda:
        "../envs/fisher-merging.yaml"
    shell:
        "python -m workflow_scripts plots --evals {input.evals} "
        "--fishers {input.fishers} --out-dir results/report/plots > {log} 2>&1"
