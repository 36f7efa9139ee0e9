"""The recipe of a merged checkpoint, for machines (``merge.json``) and people
(``README.md``, a Hugging Face model card).

One source: :func:`write_card` writes the recipe dict as ``merge.json`` and
renders ``README.md`` from that same dict; :func:`add_scores` adds a task's
evaluation to the card (kept in the card's ``model-index`` front matter, the
hub's place for results) and renders it again.  Scores never enter
``merge.json``: it is hashed into the checkpoint's fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .. import objectives, outputs
from ..errors import UserError
from ..io import write_json, write_text

RECIPE_FILE = "merge.json"
CARD_FILE = "README.md"
TAGS = ["merge", "fisher-merging"]


def _objective(recipe: dict):
    return objectives.OBJECTIVES[recipe.get("objective") or objectives.DEFAULT]


def _front_matter(recipe: dict, scores: dict[str, dict]) -> dict:
    tag = _objective(recipe).pipeline_tag
    front = {
        "base_model": [i["source"] for i in recipe["inputs"]],
        "tags": list(TAGS),
        "library_name": "transformers",
        "pipeline_tag": tag,
    }
    if scores:
        front["model-index"] = [{
            "name": recipe.get("name") or "merged",
            "results": [
                {
                    "task": {"type": tag},
                    "dataset": {"name": task, "type": task},
                    "metrics": [{"type": k, "value": v} for k, v in metrics.items()],
                }
                for task, metrics in sorted(scores.items())
            ],
        }]
    return front


def _value(value) -> str:
    return "-" if value is None else f"`{value}`"


def render_card(recipe: dict, scores: dict[str, dict] | None = None) -> str:
    """The model card (front matter + recipe + scores) of one merged checkpoint."""
    scores = scores or {}
    front = yaml.safe_dump(_front_matter(recipe, scores), sort_keys=False)
    inputs = recipe["inputs"]
    lines = [
        "---", front.rstrip("\n"), "---", "",
        f"# {recipe.get('name') or 'merged'}: a {recipe['method']} merge of "
        f"{len(inputs)} fine-tuned checkpoints", "",
        ("A merge of the whole models below (embeddings and lm_head included), written by "
         if _objective(recipe).whole_model else
         "A merge of the shared body of the checkpoints below, written by ")
        + f"`fisher-merge merge` (workflow_scripts {recipe.get('workflow_scripts_version')}); "
        + ("its config, tokenizer and generation config are those of "
           if _objective(recipe).whole_model else "its classification head is that of ")
        + f"`{recipe.get('head_of')}`. `{RECIPE_FILE}` holds this recipe for machines.", "",
        "## Recipe", "",
        "| setting | value |", "| --- | --- |",
        f"| method | {_value(recipe['method'])} |",
        f"| scheme | {_value(recipe.get('scheme'))} |",
        f"| n (Fisher samples) | {_value(recipe.get('n'))} |",
        f"| seed (Fisher samples) | {_value(recipe.get('seed'))} |",
    ]
    for key, value in sorted((recipe.get("parameters") or {}).items()):
        lines.append(f"| {key} | {_value(value)} |")
    lines += ["", "## Input checkpoints", "",
              "| # | source | fingerprint | label map | Fisher file |",
              "| --- | --- | --- | --- | --- |"]
    for j, i in enumerate(inputs):
        lines.append(f"| {j} | `{i['source']}` | `{i['fingerprint']}` | {_value(i.get('label_map'))} "
                     f"| {_value(i.get('fisher'))} |")
    if recipe.get("fisher_files"):
        lines += ["", "## Fisher files", "", "| file | task | n | sha256 |",
                  "| --- | --- | --- | --- |"]
        for f in recipe["fisher_files"]:
            meta = f.get("metadata") or {}
            lines.append(f"| `{f['path']}` | {_value(meta.get('task'))} | {_value(meta.get('n'))} "
                         f"| `{f['sha256']}` |")
    if scores:
        lines += ["", "## Scores", "", "| task | metric | value |", "| --- | --- | --- |"]
        for task, metrics in sorted(scores.items()):
            for metric, value in metrics.items():
                shown = "-" if value is None else f"{value:.4f}"
                lines.append(f"| {task} | {metric} | {shown} |")
    return "\n".join(lines) + "\n"


def write_card(directory, recipe: dict) -> None:
    """``merge.json`` and ``README.md`` of a merged checkpoint directory (atomically each)."""
    directory = Path(directory)
    write_json(directory / RECIPE_FILE, recipe, outputs.RECIPE, sort_keys=True)
    write_text(directory / CARD_FILE, render_card(recipe), outputs.CARD)


def read_card(directory) -> tuple[dict, dict]:
    """(front matter, body) of a checkpoint's ``README.md``."""
    text = (Path(directory) / CARD_FILE).read_text()
    if not text.startswith("---\n"):
        raise UserError(f"{Path(directory) / CARD_FILE} has no YAML front matter")
    front, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(front) or {}, body


def card_scores(front: dict) -> dict[str, dict]:
    """task -> metrics, from the card's ``model-index``."""
    scores = {}
    for entry in front.get("model-index") or []:
        for result in entry.get("results") or []:
            scores[result["dataset"]["name"]] = {m["type"]: m["value"] for m in result["metrics"]}
    return scores


def check_card(directory) -> Path:
    """The recipe file of a merged checkpoint directory; a UserError if it has none."""
    recipe_path = Path(directory) / RECIPE_FILE
    if not recipe_path.is_file():
        raise UserError(
            f"--card: {directory} has no {RECIPE_FILE}; only merged checkpoints (written by "
            "`merge`) have a model card to add scores to"
        )
    return recipe_path


def add_scores(directory, task: str, metrics: dict) -> None:
    """Add (or replace) ``task``'s scores in the card of a merged checkpoint."""
    directory = Path(directory)
    recipe = json.loads(check_card(directory).read_text())
    scores = card_scores(read_card(directory)[0]) if (directory / CARD_FILE).is_file() else {}
    scores[task] = dict(metrics)
    write_text(directory / CARD_FILE, render_card(recipe, scores), outputs.CARD)
