"""Tasks: their sources (GLUE, built-in offline text, local files), preparation and info.

``registry`` lists the sources; each source is a module of its own.  This
``__init__`` imports nothing, so the registry can be read while Snakemake
parses the workflow.
"""
