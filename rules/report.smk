# The report rules read their (possibly thousands of) inputs from list files
# that common.smk keeps in step with the config, so no command line overflows.
# Merged evaluations come as one directory per merge (PLAN.eval_outputs); the
# list names the files in them.


# With held-out selection on: each merge's candidate chosen from held-out evaluations
# alone (no validation evaluation is an input); the report and the plots read the choice.
rule select:
    input:
        evals=PLAN.holdout_outputs(),
        eval_list=PATHS["report_holdout_list"],
    output:
        report(PATHS["selection"], caption="../report/selection.rst", category="Data"),
    log:
        LOGS["select"],
    conda:
        ENV
    params:
        flags=PLAN.metric_flags(),
    shell:
        "python -m workflow_scripts select --evals-from {input.eval_list:q} {params.flags} "
        "--out {output:q} > {log:q} 2>&1"


rule report:
    input:
        **selection_input(),
        evals=PLAN.eval_outputs(),
        fishers=PLAN.fisher_paths(),
        eval_list=PATHS["report_eval_list"],
        fisher_list=PATHS["report_fisher_list"],
    output:
        **selection_tables(),
        summary=report(
            f"{REPORT}/{REPORT_FILES['summary']}",
            caption="../report/summary.rst",
            category="Tables",
        ),
        evidence=report(
            f"{REPORT}/{REPORT_FILES['evidence']}",
            caption="../report/table1_html.rst",
            category="Tables",
        ),
        tables=[
            report(
                f"{REPORT}/{table_file(table, 'md')}",
                caption=f"../report/{table}.rst",
                category="Tables",
            )
            for table in REPORT_TABLES
        ],
        csv=[f"{REPORT}/{table_file(table, 'csv')}" for table in REPORT_TABLES],
        scores=report(
            f"{REPORT}/{REPORT_FILES['scores']}",
            caption="../report/scores_long.rst",
            category="Data",
        ),
        finetuned=report(
            f"{REPORT}/{REPORT_FILES['finetuned']}",
            caption="../report/finetuned.rst",
            category="Data",
        ),
        spread=report(
            f"{REPORT}/{REPORT_FILES['spread']}",
            caption="../report/seed_spread.rst",
            category="Tables",
        ),
        warnings=report(
            f"{REPORT}/{REPORT_FILES['warnings']}",
            caption="../report/warnings.rst",
            category="Tables",
        ),
        runs=f"{REPORT}/{REPORT_FILES['runs']}",
    log:
        LOGS["report"],
    conda:
        ENV
    params:
        flags=PLAN.report_flags(near_chance=True),
        out_dir=lambda wc, output: os.path.dirname(output.summary),
    shell:
        "python -m workflow_scripts report --evals-from {input.eval_list:q} "
        "--fishers-from {input.fisher_list:q} {params.flags} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plots:
    input:
        **selection_input(),
        evals=PLAN.eval_outputs(),
        fishers=PLAN.fisher_paths(),
        eval_list=PATHS["report_eval_list"],
        fisher_list=PATHS["report_fisher_list"],
    output:
        scores=report(
            f"{PLOTS}/{plot_file('scores')}",
            caption="../report/scores_vs_n.rst",
            category="Plots",
        ),
        interference=report(
            f"{PLOTS}/{plot_file('interference')}",
            caption="../report/interference.rst",
            category="Plots",
        ),
        heatmap=report(
            f"{PLOTS}/{plot_file('heatmap')}",
            caption="../report/pair_heatmap.rst",
            category="Plots",
        ),
        paired=[
            report(
                f"{PLOTS}/{plot_file('paired', family)}",
                caption="../report/paired.rst",
                category="Plots",
                subcategory="Against averaging",
            )
            for family in PLAN.families
        ],
        runtime=report(
            f"{PLOTS}/{plot_file('runtime')}",
            caption="../report/runtime.rst",
            category="Plots",
        ),
        layers=[
            report(
                f"{PLOTS}/{plot_file('layers', family)}",
                caption="../report/mask_fisher_layers.rst",
                category="Plots",
                subcategory="Mask Fisher per layer",
            )
            for family in PLAN.families
        ],
    log:
        LOGS["plots"],
    conda:
        ENV
    params:
        flags=PLAN.report_flags(),
        out_dir=lambda wc, output: os.path.dirname(output.scores),
    shell:
        "python -m workflow_scripts plots --evals-from {input.eval_list:q} "
        "--fishers-from {input.fisher_list:q} {params.flags} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
