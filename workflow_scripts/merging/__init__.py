"""Merging fine-tuned models that share a body.

``registry``: the merge methods (names, the artifact each needs, labels, plot
colours, merge ids); ``schemes``: the mask schemes, as tables from parameter
roles to weight rules; ``core``: the weighted-average arithmetic and the
compatibility checks; one module per method (``average``, ``fisher``,
``mask``) computing its weights; ``files``: loading checkpoints and Fisher
files and writing merged checkpoints.

This ``__init__`` imports nothing, so the light modules (``registry``,
``schemes``) can be read while Snakemake parses the workflow.
"""
