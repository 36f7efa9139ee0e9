"""The model card (``README.md``) of a checkpoint dequantised from a GGUF file."""

from __future__ import annotations

CAVEAT = (
    "**These are the weights of the quantised model, dequantised: not the weights its authors "
    "released.** Each quantised tensor keeps the rounding error of its quantisation, so this "
    "model's outputs differ from the released model's. Fine-tunes of this checkpoint, and "
    "merges of them, are fine-tunes of the dequantised model; a checkpoint fine-tuned from "
    "other weights (the released ones, or another quantisation) differs from it by more than "
    "its fine-tuning."
)


def _table(record: dict) -> str:
    gguf = record["gguf"]
    rows = ["| stored as | tensors | parameters |", "| --- | ---: | ---: |"]
    for kind, count in gguf["tensor_types"].items():
        rows.append(f"| {kind} | {count} | {gguf['parameters_by_type'][kind]:,} |")
    return "\n".join(rows)


def model_card(record: dict) -> str:
    """The card of the checkpoint ``record`` (fetch's ``source.json``) describes."""
    gguf, done = record["gguf"], record["dequantised"]
    origin = f"`{record['source']}`"
    if record.get("package"):
        origin += f" (Python package {record['package']} {record.get('package_version') or '?'})"
    quantised = ", ".join(gguf["quantisation"]) or "none (the file holds plain floats)"
    title = gguf.get("model_name") or gguf["name"]
    return f"""---
library_name: transformers
tags:
- gguf-dequantised
---

# {title}, dequantised from GGUF

Dequantised from the GGUF file `{gguf['name']}` ({origin}) by transformers
{done['transformers']} (gguf {done['gguf']}), written in {done['dtype']}.

{CAVEAT}

- GGUF file: `{gguf['name']}`, {gguf['bytes']:,} bytes, sha256 `{gguf['sha256']}`
- quantisation types: {quantised}
- model: {', '.join(done['architectures'])} (GGUF architecture {gguf['architecture']}),
  {done['parameters']:,} parameters

How the file stores its tensors:

{_table(record)}

`source.json` records the same, and the sha256 of every file of this checkpoint.
"""
