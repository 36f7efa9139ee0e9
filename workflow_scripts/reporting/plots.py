"""The report's figures, named by :data:`workflow_scripts.paths.PLOT_FILES` (the ``plots``
command's help describes each):

{figures}

Labels and colours of the merge methods come from
:data:`workflow_scripts.merging.registry.ALL_VARIANTS`; a Fisher kind is drawn
in the label and colour of the merge that uses it.  Figures are deterministic:
Agg backend, no software/date metadata in the PNGs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import polars as pl

from .. import artifacts
from ..errors import UserError
from .. import outputs
from ..io import atomic_path
from ..merging.registry import ALL_VARIANTS, rank, variant
from ..paths import PLOT_FILES, plot_file
from .inputs import Inputs, runs_at
from .tables import (
    BASELINE, CLASSIFIER_UNIT, column_label, fisher_tables, median_scores, method_rank,
    score_units, task_rank,
)

__doc__ = __doc__.replace("{figures}", "\n".join(f"- ``{name}``" for name in PLOT_FILES.values()))

log = logging.getLogger(__name__)

RC = {"svg.hashsalt": "fisher-mask-merging", "savefig.dpi": 110, "font.size": 9}


def kind_style(kind: str) -> tuple[str, str]:
    """(label, colour) of a Fisher kind: those of the first merge variant that uses it."""
    first = next(v for v in ALL_VARIANTS.values() if v.method.fisher == kind)
    return first.label, first.color


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


def _legend(fig, handles: dict) -> None:
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncol=min(len(handles), 3), frameon=False)


def _collect(ax, handles: dict) -> None:
    for handle, label in zip(*ax.get_legend_handles_labels()):
        handles.setdefault(label, handle)


def _save(plt, fig, path: Path) -> None:
    with atomic_path(path, outputs.PNG) as tmp:
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
    import numpy as np

    medians = median_scores(scores)
    panels = sorted(set(medians.select("family", "subset_size").iter_rows()))
    sized = len({size for _, size in panels}) > 1
    fig, axes = _grid(plt, len(panels), 4.2, 3.3)
    handles = {}
    for ax, (family, size) in zip(axes, panels):
        fam = medians.filter((pl.col("family") == family) & (pl.col("subset_size") == size))
        ax.axhline(100, color="black", ls="--", lw=1, label="Fine-tuned")
        keys = sorted(set(fam["method"]), key=rank)
        for key in keys:  # merges without n: horizontal lines (one style per lambda)
            v = variant(key)
            level = fam.filter(pl.col("method") == key)
            if not v.per_n and level.height:
                lambdas = sorted(variant(k).lam for k in keys if variant(k).base_key == v.base_key
                                 and variant(k).lam is not None)
                style = ("-", "--", ":", "-.")[lambdas.index(v.lam) % 4] if v.lam is not None else "-"
                ax.axhline(level["median_normalised"][0], color=v.color, lw=1.5, ls=style,
                           label=v.label)
                if level["ci_low"][0] is not None:  # its 95 % interval as a band
                    ax.axhspan(level["ci_low"][0], level["ci_high"][0], color=v.color,
                               alpha=0.12, lw=0)
        ns = sorted(set(fam.filter(pl.col("n").is_not_null())["n"]))
        for key in keys:
            v = variant(key)
            sub = fam.filter(pl.col("method") == key).sort("n")
            if v.per_n and sub.height:
                y = sub["median_normalised"].to_numpy()
                low = sub["ci_low"].fill_null(float("nan")).to_numpy()
                high = sub["ci_high"].fill_null(float("nan")).to_numpy()
                yerr = np.nan_to_num(np.vstack([y - low, high - y]))
                ax.errorbar(sub["n"].to_list(), y, yerr=yerr, marker="o", capsize=3,
                            color=v.color, label=v.label)
        if ns:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ns, [f"{n:,}" for n in ns])
            ax.minorticks_off()
        ax.set_title(f"{family}, {size} tasks merged" if sized else family)
        ax.set_xlabel("Fisher samples n")
        ax.set_ylabel("median normalised score (%)")
        _collect(ax, handles)
    if not panels:
        _no_data(axes[0], "no merged evaluations")
    _legend(fig, handles)
    _save(plt, fig, path)


def plot_interference(plt, scores: pl.DataFrame, path: Path) -> None:
    """Per family, each merge's (and n's) median normalised score against the number of tasks
    merged, with its 95 % bootstrap interval."""
    import numpy as np

    medians = median_scores(scores)
    families = sorted(set(medians["family"]))
    fig, axes = _grid(plt, len(families), 4.2, 3.3)
    handles = {}
    for ax, family in zip(axes, families):
        fam = medians.filter(pl.col("family") == family)
        lines = fam.select("method", "n").unique().sort(method_rank(), "n", nulls_last=False)
        sizes = sorted(set(fam["subset_size"]))
        ax.axhline(100, color="black", ls="--", lw=1, label="Fine-tuned")
        for k, (method, n) in enumerate(lines.iter_rows()):
            same_n = pl.col("n").is_null() if n is None else pl.col("n") == n
            sub = fam.filter((pl.col("method") == method) & same_n).sort("subset_size")
            y = sub["median_normalised"].to_numpy()
            low = sub["ci_low"].fill_null(float("nan")).to_numpy()
            high = sub["ci_high"].fill_null(float("nan")).to_numpy()
            x = np.asarray(sub["subset_size"].to_list(), dtype=float) + 0.04 * (k - len(lines) / 2)
            ax.errorbar(x, y, yerr=np.nan_to_num(np.vstack([y - low, high - y])), marker="o",
                        capsize=3, color=variant(method).color, label=column_label(method, n),
                        ls=("-", "--", ":", "-.")[k % 4])
        ax.set_xticks(sizes, [str(size) for size in sizes])
        ax.set_title(family)
        ax.set_xlabel("tasks merged")
        ax.set_ylabel("median normalised score (%)")
        _collect(ax, handles)
    if not families:
        _no_data(axes[0], "no merged evaluations")
    _legend(fig, handles)
    _save(plt, fig, path)


def plot_pair_heatmap(plt, scores: pl.DataFrame, n: int | None, path: Path) -> None:
    import numpy as np
    from matplotlib.colors import Normalize

    scores = scores.filter(pl.col("n").is_null() | (pl.lit(False) if n is None else
                                                     pl.col("n") == n))
    families = sorted(set(scores["family"]))
    methods = sorted(set(scores["method"]), key=rank)
    tasks = scores.select("task").unique().sort(task_rank(), "task")["task"].to_list()
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
            v = variant(method)
            label = v.label + (f", n={n:,}" if v.per_n else "")
            ax.set_title(f"{family}: {label}", fontsize=8)
    if image is None:
        _no_data(axes[0][0], "no merged evaluations")
    else:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="normalised score (%)", shrink=0.8)
    _save(plt, fig, path)


def plot_paired(plt, scores: pl.DataFrame, family: str, path: Path,
                unit: str = CLASSIFIER_UNIT) -> None:
    """One panel per merge and n: each score against averaging's on the same cell;
    ``unit``: what the scores are a percentage of (:func:`.tables.score_units`)."""
    fam = scores.filter(pl.col("family") == family)
    base = fam.filter(pl.col("method") == BASELINE).select(
        "replicate", "subset", "task", pl.col("normalised").alias("_average"))
    panels = (fam.filter(pl.col("method") != BASELINE).select("method", "n").unique()
              .sort(method_rank(), "n", nulls_last=False).rows())
    fig, axes = _grid(plt, max(1, len(panels)), 3.0, 3.0)
    values = fam["normalised"].to_list() or [100.0]
    lo, hi = min(values + [100.0]) - 2, max(values + [100.0]) + 2
    for ax, (method, n) in zip(axes, panels):
        pairs = (fam.filter((pl.col("method") == method)
                            & (pl.col("n").is_null() if n is None else pl.col("n") == n))
                 .join(base, on=["replicate", "subset", "task"]))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
        ax.scatter(pairs["_average"].to_list(), pairs["normalised"].to_list(), s=14,
                   color=variant(method).color, alpha=0.8)
        above = int((pairs["normalised"] > pairs["_average"]).sum())
        ax.set_title(f"{column_label(method, n)}\nabove averaging: {above} of {pairs.height}",
                     fontsize=8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"averaging (% {unit})")
        ax.set_ylabel(f"this merge (% {unit})")
    if not panels or base.is_empty():
        _no_data(axes[0], "no merges paired with averaging")
    fig.suptitle(f"{family}: each (subset, task, seed) score against averaging")
    _save(plt, fig, path)


def plot_runtime(plt, fishers: pl.DataFrame, families: list[str], n: int | None, path: Path) -> None:
    tables = fisher_tables(runs_at(fishers, n), families)
    speedups = {r["family"]: r["speedup"] for r in tables.speedup.iter_rows(named=True)}
    shown = [f for f in families if f in tables.mask_seconds.columns or f in tables.full_seconds.columns]
    fig, axes = _grid(plt, len(shown), 4.2, 3.3)
    handles = {}
    for ax, family in zip(axes, shown):
        for k, (kind, wide) in enumerate((("mask", tables.mask_seconds),
                                          ("full", tables.full_seconds))):
            if family not in wide.columns:
                continue
            rows = wide.filter(pl.col("task") != "Mean").drop_nulls(family)
            tasks = rows["task"].to_list()
            label, color = kind_style(kind)
            ax.bar([t + (k - 0.5) * 0.4 for t in range(len(tasks))], rows[family].to_list(),
                   width=0.4, color=color, label=label)
            ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("Fisher time (s)")
        title = family
        if family in speedups:
            title += f": speed-up {speedups[family]:.1f}x"
        ax.set_title(title)
        _collect(ax, handles)
    if not shown:
        _no_data(axes[0], "no Fisher artifacts")
    _legend(fig, handles)
    fig.suptitle("Fisher computation time" + ("" if n is None else f", n = {n:,}"))
    _save(plt, fig, path)


def _mask_tensors(path: str) -> dict:
    tensors, _ = artifacts.load_fisher(path)
    lacking = [k for k in ("head", "neuron") if k not in tensors]
    if lacking:
        raise UserError(f"mask Fisher artifact {path} has no {' or '.join(lacking)} tensor")
    return tensors


def plot_mask_layers(plt, runs: pl.DataFrame, family: str, n: int | None, path: Path) -> None:
    """``runs``: the family's mask Fisher runs at n; the first file per task is shown."""
    runs = runs.sort(task_rank(), "task", "file").unique("task", keep="first", maintain_order=True)
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


def write_plots(data: Inputs, out_dir: Path, heatmap_n: int | None = None,
                layers_n: int | None = None) -> None:
    """Every figure under ``out_dir``.

    ``heatmap_n``: n of the merges in the pair heatmap (None: the smallest present);
    ``layers_n``: n of the mask Fisher artifacts in the per-layer figures (None: the
    largest present).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    merged_n = data.scores.filter(pl.col("n").is_not_null())["n"]
    heatmap_n = _pick_n(merged_n, heatmap_n, "--heatmap-n")
    mask_runs = data.fishers.filter(pl.col("method") == "mask")
    layers_n = _pick_n(mask_runs["n"], layers_n, "--layers-n", largest=True)
    with matplotlib.rc_context(RC):
        plot_scores_vs_n(plt, data.scores, out / plot_file("scores"))
        plot_interference(plt, data.scores, out / plot_file("interference"))
        plot_pair_heatmap(plt, data.scores, heatmap_n, out / plot_file("heatmap"))
        plot_runtime(plt, data.fishers, data.families, data.runtime_n, out / plot_file("runtime"))
        units = score_units(data.finetuned)
        for family in data.families:
            plot_paired(plt, data.scores, family, out / plot_file("paired", family),
                        units.get(family, CLASSIFIER_UNIT))
        for family in data.families:
            runs = mask_runs.filter((pl.col("family") == family)
                                    & (pl.lit(False) if layers_n is None else
                                       pl.col("n") == layers_n))
            plot_mask_layers(plt, runs, family, layers_n, out / plot_file("layers", family))
