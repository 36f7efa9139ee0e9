# Fisher-weighted merging of fine-tuned transformers: mask-node Fisher vs full
# diagonal Fisher vs plain averaging, from Fisher artifacts to the paper's tables.


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/fisher.smk"
include: "rules/merge.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
