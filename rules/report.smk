# The report rules read their (possibly thousands of) inputs from list files
# that common.smk keeps in step with the config, so no command line overflows.
# Merged evaluations come as one directory per merge (PLAN.eval_outputs); the
# list names the files in them.


rule report:
    input:
        evals=PLAN.eval_outputs(),
        fishers=PLAN.fisher_paths(),
        eval_list=PATHS["report_eval_list"],
        fisher_list=PATHS["report_fisher_list"],
    output:
        summary=report(
            f"{REPORT}/summary.md",
            caption="../report/summary.rst",
            category="Tables",
        ),
        evidence=report(
            f"{REPORT}/table1.html",
            caption="../report/table1_html.rst",
            category="Tables",
        ),
        tables=[
            report(
                f"{REPORT}/{table}.md",
                caption=f"../report/{table}.rst",
                category="Tables",
            )
            for table in REPORT_TABLES
        ],
        csv=expand(f"{REPORT}/{{table}}.csv", table=REPORT_TABLES),
        scores=report(
            f"{REPORT}/scores_long.csv",
            caption="../report/scores_long.rst",
            category="Data",
        ),
        finetuned=report(
            f"{REPORT}/finetuned.csv",
            caption="../report/finetuned.rst",
            category="Data",
        ),
        spread=report(
            f"{REPORT}/seed_spread.md",
            caption="../report/seed_spread.rst",
            category="Tables",
        ),
        warnings=report(
            f"{REPORT}/warnings.md",
            caption="../report/warnings.rst",
            category="Tables",
        ),
        runs=f"{REPORT}/fisher_runs.csv",
    log:
        "logs/report/report.log",
    conda:
        ENV
    params:
        flags=PLAN.report_flags(near_chance=True),
    shell:
        "python -m workflow_scripts report --evals-from {input.eval_list} "
        "--fishers-from {input.fisher_list} {params.flags} "
        f"--out-dir {REPORT} > {{log}} 2>&1"


rule plots:
    input:
        evals=PLAN.eval_outputs(),
        fishers=PLAN.fisher_paths(),
        eval_list=PATHS["report_eval_list"],
        fisher_list=PATHS["report_fisher_list"],
    output:
        scores=report(
            f"{PLOTS}/scores_vs_n.png",
            caption="../report/scores_vs_n.rst",
            category="Plots",
        ),
        heatmap=report(
            f"{PLOTS}/pair_heatmap.png",
            caption="../report/pair_heatmap.rst",
            category="Plots",
        ),
        paired=[
            report(
                f"{PLOTS}/paired_{family}.png",
                caption="../report/paired.rst",
                category="Plots",
                subcategory="Against averaging",
            )
            for family in PLAN.families
        ],
        runtime=report(
            f"{PLOTS}/runtime.png",
            caption="../report/runtime.rst",
            category="Plots",
        ),
        layers=[
            report(
                f"{PLOTS}/mask_fisher_layers_{family}.png",
                caption="../report/mask_fisher_layers.rst",
                category="Plots",
                subcategory="Mask Fisher per layer",
            )
            for family in PLAN.families
        ],
    log:
        "logs/report/plots.log",
    conda:
        ENV
    params:
        flags=PLAN.report_flags(),
    shell:
        "python -m workflow_scripts plots --evals-from {input.eval_list} "
        "--fishers-from {input.fisher_list} {params.flags} "
        f"--out-dir {PLOTS} > {{log}} 2>&1"
