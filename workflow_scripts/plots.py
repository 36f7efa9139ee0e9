"""``plots``: the report's figures, from the same inputs as ``report``.

Writes under ``--out-dir``:

- ``scores_vs_n.png``: median normalised score against n per method, one panel
  per model family; averaging as a horizontal line, the fine-tuned level (100)
  dashed.
- ``pair_heatmap.png``: merged / fine-tuned score (%) per merged subset and
  task, one row of panels per family, one column per method (at ``--heatmap-n``).
- ``runtime.png``: mask vs full Fisher time per family and task (log scale),
  with the speed-up of the mean times.
- ``mask_fisher_layers_{family}.png``: per layer, box plots of the mask Fisher
  values of heads and neurons for each fine-tuned model (at ``--layers-n``);
  ``family`` with characters other than letters, digits, ``.``, ``_`` and
  ``-`` replaced by ``_`` (:func:`family_slug`).

Figures are deterministic: Agg backend, no software/date metadata in the PNGs.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path

import polars as pl

from . import artifacts, report
from .cli import UserError
from .io import atomic_path

log = logging.getLogger(__name__)

METHOD_COLORS = {"average": "tab:gray", "fisher": "tab:blue", "mask": "tab:red",
                 "mask-released": "tab:orange", "full": "tab:blue"}
RC = {"svg.hashsalt": "fisher-mask-merging", "savefig.dpi": 110, "font.size": 9}


def register(subparsers) -> None:
    if "plots" in subparsers.choices:
        return
    parser = subparsers.add_parser(
        "plots", help="figures from evaluation JSONs and Fisher artifacts",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_input_args(parser)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--heatmap-n", type=int, default=None, metavar="N",
                        help="n of the Fisher-weighted merges in pair_heatmap.png "
                             "(default: the smallest present)")
    parser.add_argument("--layers-n", type=int, default=None, metavar="N",
                        help="n of the mask Fisher artifacts in mask_fisher_layers_*.png "
                             "(default: the largest present)")
    parser.set_defaults(func=run)


def family_slug(family: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", family)


def _grid(plt, count: int, width: float, height: float, max_cols: int = 4):
    cols = max(1, min(count, max_cols))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows),
                             squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(plt, fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    log.info("wrote %s", path)


def _pick_n(available, requested: int | None, flag: str, largest: bool = False) -> int | None:
    available = sorted(set(available))
    if requested is not None:
        if requested not in available:
            raise UserError(f"{flag} {requested}: not present (present: "
                            f"{', '.join(map(str, available)) or 'none'})")
        return requested
    if not available:
        return None
    return available[-1] if largest else available[0]


def plot_scores_vs_n(plt, scores: pl.DataFrame, path: Path) -> None:
    medians = report.median_scores(scores)
    families = sorted(set(medians["family"]))
    fig, axes = _grid(plt, len(families), 4.2, 3.3)
    handles = {}
    for ax, family in zip(axes, families):
        fam = medians.filter(pl.col("family") == family)
        ax.axhline(100, color="black", ls="--", lw=1, label="Fine-tuned")
        average = fam.filter(pl.col("method") == "average")
        if average.height:
            ax.axhline(average["median_normalised"][0], color=METHOD_COLORS["average"], lw=1.5,
                       label=report.METHOD_LABELS["average"])
        ns = sorted(set(fam.filter(pl.col("n").is_not_null())["n"]))
        for method in report.MERGE_METHODS[1:]:
            sub = fam.filter(pl.col("method") == method).sort("n")
            if sub.height:
                ax.plot(sub["n"].to_list(), sub["median_normalised"].to_list(), marker="o",
                        color=METHOD_COLORS[method], label=report.METHOD_LABELS[method])
        if ns:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ns, [f"{n:,}" for n in ns])
            ax.minorticks_off()
        ax.set_title(family)
        ax.set_xlabel("Fisher samples n")
        ax.set_ylabel("median normalised score (%)")
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not families:
        _no_data(axes[0], "no merged evaluations")
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncol=min(len(handles), 3), frameon=False)
    _save(plt, fig, path)


def plot_pair_heatmap(plt, scores: pl.DataFrame, n: int | None, path: Path) -> None:
    import numpy as np
    from matplotlib.colors import Normalize

    scores = scores.filter((pl.col("method") == "average") | (pl.col("n") == n))
    families = sorted(set(scores["family"]))
    methods = [m for m in report.MERGE_METHODS if m in set(scores["method"])]
    tasks = scores.select("task").unique().sort(report.task_rank(), "task")["task"].to_list()
    subsets = {f: sorted(set(scores.filter(pl.col("family") == f)["subset"])) for f in families}
    tallest = max((len(s) for s in subsets.values()), default=1)
    fig, axes = plt.subplots(max(1, len(families)), max(1, len(methods)), squeeze=False,
                             figsize=(1.6 + 0.55 * len(tasks) * max(1, len(methods)),
                                      (1.2 + 0.28 * tallest) * max(1, len(families))),
                             layout="constrained")
    cells = (scores.group_by("family", "method", "subset", "task")
             .agg(pl.col("normalised").mean()))
    # Symmetric about 100 (the fine-tuned level, yellow): red below it, green above.
    spread = max([1.0] + [abs(v - 100) for v in cells["normalised"]])
    norm = Normalize(vmin=100 - spread, vmax=100 + spread)
    image = None
    for i, family in enumerate(families):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            grid = np.full((len(subsets[family]), len(tasks)), np.nan)
            sub = cells.filter((pl.col("family") == family) & (pl.col("method") == method))
            for subset, task, value in sub.select("subset", "task", "normalised").iter_rows():
                grid[subsets[family].index(subset), tasks.index(task)] = value
            image = ax.imshow(grid, cmap="RdYlGn", norm=norm, aspect="auto")
            for (r, c), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
            ax.set_yticks(range(len(subsets[family])),
                          subsets[family] if j == 0 else [""] * len(subsets[family]))
            label = report.METHOD_LABELS[method] + ("" if method == "average" else f", n={n:,}")
            ax.set_title(f"{family}: {label}", fontsize=8)
    if image is None:
        _no_data(axes[0][0], "no merged evaluations")
    else:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="merged / fine-tuned (%)", shrink=0.8)
    _save(plt, fig, path)


def plot_runtime(plt, fishers: pl.DataFrame, families: list[str], n: int | None, path: Path) -> None:
    tables = report.fisher_tables(report.runs_at(fishers, n), families)
    speedups = {r["family"]: r["speedup"] for r in tables.speedup.iter_rows(named=True)}
    shown = [f for f in families if f in tables.mask_seconds.columns or f in tables.full_seconds.columns]
    fig, axes = _grid(plt, len(shown), 4.2, 3.3)
    handles = {}
    for ax, family in zip(axes, shown):
        for k, (method, wide) in enumerate((("mask", tables.mask_seconds),
                                            ("full", tables.full_seconds))):
            if family not in wide.columns:
                continue
            rows = wide.filter(pl.col("task") != "Mean").drop_nulls(family)
            tasks = rows["task"].to_list()
            ax.bar([t + (k - 0.5) * 0.4 for t in range(len(tasks))], rows[family].to_list(),
                   width=0.4, color=METHOD_COLORS[method],
                   label="Ours (mask)" if method == "mask" else "Fisher (full)")
            ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("Fisher time (s)")
        title = family
        if family in speedups:
            title += f": speed-up {speedups[family]:.1f}x"
        ax.set_title(title)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not shown:
        _no_data(axes[0], "no Fisher artifacts")
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncol=min(len(handles), 3), frameon=False)
    fig.suptitle("Fisher computation time" + ("" if n is None else f", n = {n:,}"))
    _save(plt, fig, path)


def _mask_tensors(path: str) -> dict:
    try:
        tensors, _ = artifacts.load_fisher(path)
    except artifacts.CorruptArtifactError as exc:
        raise UserError(str(exc)) from None
    lacking = [k for k in ("head", "neuron") if k not in tensors]
    if lacking:
        raise UserError(f"mask Fisher artifact {path} has no {' or '.join(lacking)} tensor")
    return tensors


def plot_mask_layers(plt, runs: pl.DataFrame, family: str, n: int | None, path: Path) -> None:
    """``runs``: the family's mask Fisher runs at n; the first file per task is shown."""
    runs = runs.sort(report.task_rank(), "task", "file").unique("task", keep="first",
                                                                 maintain_order=True)
    fig, axes = plt.subplots(max(1, runs.height), 2, squeeze=False,
                             figsize=(10, 2.4 * max(1, runs.height)), layout="constrained")
    for row, (task, file) in enumerate(runs.select("task", "file").iter_rows()):
        tensors = _mask_tensors(file)
        for col, name in enumerate(("head", "neuron")):
            ax = axes[row][col]
            values = tensors[name].double().numpy()
            per_layer = [v[v > 0] for v in values]
            ax.boxplot([v if v.size else [float("nan")] for v in per_layer],
                       positions=range(len(per_layer)), widths=0.6, showfliers=True,
                       flierprops={"markersize": 2})
            if any(v.size for v in per_layer):
                ax.set_yscale("log")
                ax.minorticks_off()  # halves the drawing time of these many log axes
            ax.set_xlabel("layer")
            ax.set_ylabel("Fisher")
            ax.set_title(f"{family} / {task}: {'heads' if name == 'head' else 'neurons'}")
    if not runs.height:
        _no_data(axes[0][0], "no mask Fisher artifacts")
        axes[0][1].set_visible(False)
    fig.suptitle(f"Mask Fisher per layer, {family}" + ("" if n is None else f", n = {n:,}"))
    _save(plt, fig, path)


def run(args) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    data = report.load_inputs(args)
    out = args.out_dir
    merged_n = data.scores.filter(pl.col("n").is_not_null())["n"]
    heatmap_n = _pick_n(merged_n, args.heatmap_n, "--heatmap-n")
    mask_runs = data.fishers.filter(pl.col("method") == "mask")
    layers_n = _pick_n(mask_runs["n"], args.layers_n, "--layers-n", largest=True)
    with matplotlib.rc_context(RC):
        plot_scores_vs_n(plt, data.scores, out / "scores_vs_n.png")
        plot_pair_heatmap(plt, data.scores, heatmap_n, out / "pair_heatmap.png")
        plot_runtime(plt, data.fishers, data.families, data.runtime_n, out / "runtime.png")
        for family in data.families:
            runs = mask_runs.filter((pl.col("family") == family) & (pl.col("n") == layers_n))
            plot_mask_layers(plt, runs, family, layers_n,
                             out / f"mask_fisher_layers_{family_slug(family)}.png")
