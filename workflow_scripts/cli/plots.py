"""``plots``: the report's figures, from the same inputs as ``report``.

Writes under ``--out-dir``:

- ``scores_vs_n.png``: median normalised score against n per method, one panel
  per model family, with 95 % bootstrap intervals of the medians as error bars;
  averaging as a horizontal line with its interval as a band, the fine-tuned
  level (100) dashed.
- ``pair_heatmap.png``: merged / fine-tuned score (%) per merged subset and
  task, one row of panels per family, one column per method (at ``--heatmap-n``).
- ``paired_{family}.png``: one panel per merge and n, each (subset, task, seed)
  normalised score against averaging's on the same (subset, task), with the
  diagonal: points above it are where the merge beats averaging.
- ``runtime.png``: mask vs full Fisher time per family and task (log scale),
  with the speed-up of the mean times.
- ``mask_fisher_layers_{family}.png``: per layer, box plots of the mask Fisher
  values of heads and neurons for each fine-tuned model (at ``--layers-n``);
  ``family`` with characters other than letters, digits, ``.``, ``_`` and
  ``-`` replaced by ``_`` (:func:`family_slug`).

Figures are deterministic: Agg backend, no software/date metadata in the PNGs.
"""

from __future__ import annotations

from pathlib import Path

from . import options
from .report import add_input_args, load_from_args


def register(subparsers) -> None:
    parser = options.add_command(
        subparsers, "plots", "figures from evaluation JSONs and Fisher artifacts", __doc__)
    add_input_args(parser)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--heatmap-n", type=int, default=None, metavar="N",
                        help="n of the Fisher-weighted merges in pair_heatmap.png "
                             "(default: the smallest present)")
    parser.add_argument("--layers-n", type=int, default=None, metavar="N",
                        help="n of the mask Fisher artifacts in mask_fisher_layers_*.png "
                             "(default: the largest present)")
    parser.set_defaults(func=run)


def run(args) -> None:
    from ..reporting.plots import write_plots

    write_plots(load_from_args(args), args.out_dir, args.heatmap_n, args.layers_n)
