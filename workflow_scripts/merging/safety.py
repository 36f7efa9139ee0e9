"""What a merge may write, checked before it merges anything (:mod:`workflow_scripts.outputs`):
``--out`` (a folder of merged checkpoints) is not an input nor a folder holding one, and
holds nothing but an earlier merge's checkpoints; ``--eval-out`` and ``--holdout-out``
get one ``NAME.json`` per model, each new or an earlier evaluation, and nothing else in
those folders is touched; the file system has room for the checkpoints the headers imply.
"""

from __future__ import annotations

from pathlib import Path

from .. import outputs


def merge_inputs(sources, evaluation) -> list[tuple[str, str]]:
    """Every path a merge reads, as ``(flag, path)``."""
    given = dict(models=sources.models, fishers=sources.fishers, grams=sources.grams,
                 base=sources.base)
    if evaluation is not None:
        for split in evaluation.splits:
            given["eval_data" if split.name == "validation" else f"{split.name}_data"] = split.data
        given["eval_task_infos"] = evaluation.task_infos
    return outputs.inputs_of(**given)


def split_flag(split) -> str:
    return "--eval-out" if split.name == "validation" else f"--{split.name}-out"


def check_merge_outputs(sources, out_dir, evaluation, names: list[str]) -> None:
    """Before the merge: ``--out`` and each split's evaluation files (``NAME.json`` in
    ``--eval-out`` / ``--holdout-out``) pass :func:`workflow_scripts.outputs.check_output`,
    and no two outputs overlap."""
    inputs = merge_inputs(sources, evaluation)
    planned = [("--out", out_dir, outputs.MERGED)]
    for split in evaluation.splits if evaluation is not None else ():
        planned.append((split_flag(split), split.out_dir, None))
    outputs.check_distinct((flag, str(path)) for flag, path, _ in planned if path is not None)
    if out_dir is not None:
        outputs.check_output(out_dir, outputs.MERGED, "--out", inputs)
    for split in evaluation.splits if evaluation is not None else ():
        outputs.check_files_in(split.out_dir, [f"{name}.json" for name in names],
                               lambda _: outputs.EVALUATION, split_flag(split), inputs)


def merged_bytes(models, dtypes: dict) -> int:
    """The bytes of the merged checkpoints: each model's body in the merge's dtypes and its
    own head, from the headers; models without a head of their own (a whole-model merge)
    share the first one's weights (:func:`.stream.write_merged`)."""
    import torch

    total = 0
    for j, model in enumerate(models):
        if j and not model.head:
            continue
        for name, info in model.shapes().items():
            size = torch.tensor([], dtype=dtypes[name]).element_size() if name in dtypes else None
            total += info.numel * size if size is not None else info.nbytes
        total += sum(model.ckpt.tensors[n].nbytes for n in model.head)
    return total


def check_merge_space(target: Path, models, dtypes: dict, flag: str = "--out") -> None:
    """The file system of ``target`` holds the merged checkpoints (with 1 % to spare)."""
    needed = merged_bytes(models, dtypes)
    outputs.check_space(target, needed + needed // 100, flag)
