"""The report's tables and figures, from evaluation JSONs and Fisher artifacts.

``inputs`` reads and checks the files (:func:`inputs.load_inputs`); ``tables``
builds the paper's tables and their Markdown; ``checks`` holds the near-chance
check and the warnings; ``summary`` writes every table and the files beside
them (:func:`summary.write_report`); ``plots`` draws the figures
(:func:`plots.write_plots`).  Method names, labels, colours and their order come
from :mod:`workflow_scripts.merging.registry` and
:mod:`workflow_scripts.fisher.kinds`.  ``plots`` may import the other modules,
never the reverse.  The files' names come from :mod:`workflow_scripts.paths`.  This
``__init__`` imports nothing.
"""
