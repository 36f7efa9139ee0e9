"""Merging fine-tuned models that share a body.

``registry``: the merge methods (names, the artifact each needs, base, lambda,
settings, labels, plot colours, merge ids); ``schemes``: the mask schemes, as
tables from parameter roles to weight rules; ``core``: the weighted-average
arithmetic and the compatibility checks; ``taskvectors``: task-vector helpers;
one module per method (``average``, ``fisher``, ``mask`` compute weights;
``task_arithmetic``, ``ties``, ``dare``, ``regmean`` the merged body);
``files``: loading checkpoints, Fisher and Gram files, writing merged
checkpoints and evaluating them in the same process.

This ``__init__`` imports nothing, so the light modules (``registry``,
``schemes``) can be read while Snakemake parses the workflow.
"""
