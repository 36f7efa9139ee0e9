"""The report's checks: the near-chance error and the warnings the report lists."""

from __future__ import annotations

import polars as pl

from ..errors import UserError


def undefined_warnings(merged: pl.DataFrame) -> list[str]:
    """Merged evaluations whose metric is undefined (null); they count as 0."""
    undefined = merged.filter(pl.col("merged").is_null())
    if undefined.is_empty():
        return []
    return [f"{undefined.height} merged evaluations have an undefined metric (recorded as null, "
            "e.g. a correlation of constant predictions); their normalised score counts as 0: "
            + ", ".join(undefined["file"])]


NEAR_CHANCE_ERROR = (
    "fine-tuned models score near chance on their own task (a causal LM: no better than "
    "its base). Two causes, two fixes:\n"
    "  * the fine-tune did not learn (common on real data, e.g. RTE after a few hundred "
    "steps): train longer, with more steps (`epochs`, `max_steps`) or a higher learning "
    "rate (`lr`) in the config's `finetune` section;\n"
    "  * the checkpoint's label order differs from the dataset's (a fetched checkpoint; it "
    "usually scores below chance): set its `label_map` in the config "
    "(families.FAMILY.checkpoints.TASK.label_map).\n"
    "To report them anyway, as warnings, list them as FAMILY:TASK in the config's "
    "`report.accept_near_chance` (or pass --accept-near-chance FAMILY:TASK to `report`):"
)


def weak_finetunes(finetuned: pl.DataFrame, margin: float) -> list[tuple[dict, str]]:
    """Fine-tuned models with nothing for a merge to keep, as each one's task kind judges
    (a classifier at or below chance + margin on its own task: a fine-tune that did not
    learn scores about chance, a label-order mismatch usually under it; a causal LM's text
    task whose loss is not below its base's), each with the sentence that says why."""
    from .. import taskkinds

    out = []
    for name in dict.fromkeys(finetuned["task_kind"]):
        rows = finetuned.filter(pl.col("task_kind") == name)
        out += taskkinds.kind(name).weak(rows, margin)
    return out


def parse_accepted(items: list[str]) -> set[tuple[str, str]]:
    """``["FAMILY:TASK", ...]`` -> {(family, task)} (lower-cased)."""
    out = set()
    for item in items:
        family, sep, task = item.rpartition(":")
        if not sep or not family or not task:
            raise UserError(f"--accept-near-chance {item!r}: expected FAMILY:TASK")
        out.add((family.lower(), task.lower()))
    return out


def check_near_chance(finetuned: pl.DataFrame, margin: float, accepted_items: list[str]) -> list[str]:
    """Error for near-chance fine-tuned models unless accepted; the accepted ones as warnings.

    Chance is the majority-class rate of the model's evaluated validation samples
    (see :mod:`.inputs`), so a model that always predicts the majority class fails.
    """
    accepted = parse_accepted(accepted_items)
    errors, warnings = [], []
    failed = weak_finetunes(finetuned, margin)
    for r, what in failed:
        if (r["family"].lower(), r["task"].lower()) in accepted:
            warnings.append(f"{what}; accepted with --accept-near-chance, so the normalised "
                            f"scores on {r['task']} divide by a near-chance score.")
        else:
            errors.append(what)
    if errors:
        raise UserError(NEAR_CHANCE_ERROR + "\n  - " + "\n  - ".join(errors))
    return warnings


def coverage_warnings(scores: pl.DataFrame, medians: pl.DataFrame) -> list[str]:
    """Medians of one family and subset size that rest on fewer (replicate, subset, task)
    cells than the family has at that size."""
    totals = scores.group_by("family", "subset_size").agg(
        pl.struct("replicate", "subset", "task").n_unique().alias("total"))
    short = (medians.join(totals, on=["family", "subset_size"])
             .filter(pl.col("n_cells") < pl.col("total")))
    return [f"{r['family']}: the median for {r['method']}"
            + ("" if r["n"] is None else f" n={r['n']}")
            + f" over subsets of {r['subset_size']} tasks rests on {r['n_cells']} of "
            f"{r['total']} (subset, task) cells; the grid is incomplete, so Table 1 compares "
            "medians over different sets."
            for r in short.iter_rows(named=True)]


def runtime_warnings(fishers: pl.DataFrame, n) -> list[str]:
    """Runtimes at ``n`` from different devices; mask Fisher runs without FLOPs."""
    at_n = fishers.filter(pl.col("n") == n)
    devices = sorted(set(at_n["device"]))
    out = []
    if len(devices) > 1:
        out.append(f"Fisher runtimes at n={n} were measured on different devices "
                   f"({', '.join(devices)}); Tables 2-3 and the speed-ups mix them.")
    if at_n.filter(pl.col("method") == "mask")["flops"].null_count():
        out.append(f"some mask Fisher artifacts at n={n} record no FLOPs; Table 4 leaves them out.")
    return out


def empty_runtime_warnings(tables: dict[str, pl.DataFrame], n) -> list[str]:
    """``tables``: Fisher kind -> its runtime table at ``n``; one warning per empty table."""
    return [f"no {kind} Fisher artifacts at n={n}: its runtime table is empty."
            for kind, wide in tables.items() if wide.is_empty()]
