# Fisher-weighted merging of fine-tuned transformers: mask-node Fisher vs full
# diagonal Fisher vs plain averaging, from Fisher artifacts to the paper's tables.


# config.yaml is the embedded default; a --configfile replaces it instead of being
# merged into it (which would add the default's tasks and families to any run).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/fisher.smk"
include: "rules/merge.smk"
include: "rules/report.smk"


# After a failure (the default profile keeps going with the other jobs), name each
# failed job, its error line and the log to read.
onerror:
    print(failure_summary(log), file=sys.stderr)


rule all:
    default_target: True
    input:
        report_outputs(),
