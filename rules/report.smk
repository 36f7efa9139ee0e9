# The report rules read their (possibly thousands of) inputs from list files
# that common.smk keeps in step with the config, so no command line overflows.


rule report:
    input:
        evals=PLAN.eval_paths(),
        fishers=PLAN.fisher_paths(),
        eval_list=EVAL_LIST,
        fisher_list=FISHER_LIST,
    output:
        summary=report(
            "results/report/summary.md",
            caption="../report/summary.rst",
            category="Tables",
        ),
        tables=[
            report(
                f"results/report/{table}.md",
                caption=f"../report/{table}.rst",
                category="Tables",
            )
            for table in REPORT_TABLES
        ],
        csv=expand("results/report/{table}.csv", table=REPORT_TABLES),
        scores=report(
            "results/report/scores_long.csv",
            caption="../report/scores_long.rst",
            category="Data",
        ),
        finetuned=report(
            "results/report/finetuned.csv",
            caption="../report/finetuned.rst",
            category="Data",
        ),
        warnings=report(
            "results/report/warnings.md",
            caption="../report/warnings.rst",
            category="Tables",
        ),
        runs="results/report/fisher_runs.csv",
    log:
        "logs/report/report.log",
    conda:
        "../envs/fisher-merging.yaml"
    params:
        args=report_args,
    shell:
        "python -m workflow_scripts report --evals-from {input.eval_list} "
        "--fishers-from {input.fisher_list} {params.args} "
        "--out-dir results/report > {log} 2>&1"


rule plots:
    input:
        evals=PLAN.eval_paths(),
        fishers=PLAN.fisher_paths(),
        eval_list=EVAL_LIST,
        fisher_list=FISHER_LIST,
    output:
        scores=report(
            "results/report/plots/scores_vs_n.png",
            caption="../report/scores_vs_n.rst",
            category="Plots",
        ),
        heatmap=report(
            "results/report/plots/pair_heatmap.png",
            caption="../report/pair_heatmap.rst",
            category="Plots",
        ),
        runtime=report(
            "results/report/plots/runtime.png",
            caption="../report/runtime.rst",
            category="Plots",
        ),
        layers=[
            report(
                f"results/report/plots/mask_fisher_layers_{family}.png",
                caption="../report/mask_fisher_layers.rst",
                category="Plots",
                subcategory="Mask Fisher per layer",
            )
            for family in PLAN.families
        ],
    log:
        "logs/report/plots.log",
    conda:
        "../envs/fisher-merging.yaml"
    params:
        args=plot_args,
    shell:
        "python -m workflow_scripts plots --evals-from {input.eval_list} "
        "--fishers-from {input.fisher_list} {params.args} "
        "--out-dir results/report/plots > {log} 2>&1"
