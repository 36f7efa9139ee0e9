"""``plots``: the report's figures, from the same inputs as ``report``.

Writes under ``--out-dir``:

{figures}

Figures are deterministic: Agg backend, no software/date metadata in the PNGs.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import PLOT_FILES, plot_file
from . import options
from .report import add_input_args, load_from_args

# What each of paths.PLOT_FILES shows (the same keys).
FIGURES = {
    "scores": "median normalised score against n per method, one panel per model family "
              "(and subset size, when several), "
              "with 95 % bootstrap intervals of the medians as error bars; averaging as a "
              "horizontal line with its interval as a band, the fine-tuned level (100) dashed.",
    "interference": "the interference curve: median normalised score of each merge (and n) "
                    "against the number of tasks merged, with 95 % bootstrap intervals, one "
                    "panel per model family.",
    "heatmap": "merged / fine-tuned score (%) per merged subset and task, one row of panels "
               "per family, one column per method (at ``--heatmap-n``).",
    "paired": "one panel per merge and n, each (subset, task, seed) normalised score against "
              "averaging's on the same (subset, task), with the diagonal: points above it are "
              "where the merge beats averaging.",
    "runtime": "mask vs full Fisher time per family and task (log scale), with the speed-up of "
               "the mean times.",
    "layers": "per layer, box plots of the mask Fisher values of heads and neurons for each "
              "fine-tuned model (at ``--layers-n``).",
}
SLUG = ("``{family}``: the family's name with characters other than letters, digits, ``.``, "
        "``_`` and ``-`` replaced by ``_`` (:func:`workflow_scripts.paths.family_slug`).")


def _figures() -> str:
    import textwrap

    items = [f"- ``{name}``: {FIGURES[key]}" for key, name in PLOT_FILES.items()]
    return ("\n".join(textwrap.fill(item, 80, subsequent_indent="  ") for item in items)
            + "\n\n" + textwrap.fill(SLUG, 80))


__doc__ = __doc__.replace("{figures}", _figures())


def register(subparsers) -> None:
    parser = options.add_command(
        subparsers, "plots", "figures from evaluation JSONs and Fisher artifacts", __doc__)
    add_input_args(parser)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--heatmap-n", type=int, default=None, metavar="N",
                        help=f"n of the Fisher-weighted merges in {plot_file('heatmap')} "
                             "(default: the smallest present)")
    parser.add_argument("--layers-n", type=int, default=None, metavar="N",
                        help="n of the mask Fisher artifacts in "
                             f"{PLOT_FILES['layers'].format(family='*')} "
                             "(default: the largest present)")
    parser.set_defaults(func=run)


def run(args) -> None:
    from ..reporting.plots import write_plots
    from .report import check_out_dir

    data = load_from_args(args)
    per_family = [key for key, name in PLOT_FILES.items() if "{family}" in name]
    check_out_dir(args, [plot_file(key) for key in PLOT_FILES if key not in per_family]
                  + [plot_file(key, family) for family in data.families for key in per_family])
    write_plots(data, args.out_dir, args.heatmap_n, args.layers_n)
