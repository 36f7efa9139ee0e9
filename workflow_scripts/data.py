"""Task samples in Parquet and their tokenised batches.

Schema: ``idx`` int64, ``text_a`` string, ``text_b`` string (null for
single-sentence tasks), ``label`` int64 (a class id).  Rows are used in file
order.  :func:`write_samples` is the one Parquet writer of samples: fixed
settings, so the same rows give a bit-identical file.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .errors import SampleError
from . import outputs
from .io import atomic_path

SCHEMA = pa.schema(
    [
        ("idx", pa.int64()),
        ("text_a", pa.string()),
        ("text_b", pa.string()),
        ("label", pa.int64()),
    ]
)

# Fixed Parquet writer settings (do not depend on pyarrow's defaults).
PARQUET_SETTINGS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    version="2.6",
    data_page_version="1.0",
    row_group_size=1 << 20,
    store_schema=True,
)


@dataclass
class Samples:
    idx: list[int]
    text_a: list[str]
    text_b: list[str | None]
    label: list[int]

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def is_pair(self) -> bool:
        return any(t is not None for t in self.text_b)

    def subset(self, rows) -> "Samples":
        rows = list(rows)
        return Samples(
            [self.idx[i] for i in rows],
            [self.text_a[i] for i in rows],
            [self.text_b[i] for i in rows],
            [self.label[i] for i in rows],
        )

    def to_table(self) -> pa.Table:
        return pa.table(
            {"idx": self.idx, "text_a": self.text_a, "text_b": self.text_b, "label": self.label},
            schema=SCHEMA,
        )


def read_samples(path, nonempty: bool = False) -> Samples:
    """The samples of a Parquet file in :data:`SCHEMA`; ``nonempty``: a file without rows
    is an error too."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SampleError(f"cannot read samples {path}: {exc}") from exc
    missing = [c for c in SCHEMA.names if c not in table.column_names]
    if missing:
        raise SampleError(
            f"samples file {path} lacks column(s) {missing}; expected columns {SCHEMA.names}"
        )
    try:
        table = table.select(SCHEMA.names).cast(SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SampleError(f"samples file {path} does not match schema {SCHEMA}: {exc}") from exc
    if nonempty and table.num_rows == 0:
        raise SampleError(f"samples file {path} has no rows")
    cols = table.to_pydict()
    if any(v is None for v in cols["label"]) or any(v is None for v in cols["text_a"]):
        raise SampleError(f"samples file {path} has null text_a or label values")
    return Samples(cols["idx"], cols["text_a"], cols["text_b"], cols["label"])


def write_samples(samples: Samples | pa.Table, path) -> None:
    """Write samples atomically with fixed Parquet settings (deterministic bytes)."""
    table = samples.to_table() if isinstance(samples, Samples) else samples
    table = table.cast(SCHEMA).replace_schema_metadata(None)
    with atomic_path(path, outputs.SAMPLES) as tmp:
        pq.write_table(table, tmp, **PARQUET_SETTINGS)


def check_labels(samples: Samples, num_labels: int, where: str = "") -> None:
    bad = sorted({y for y in samples.label if not 0 <= y < num_labels})
    if bad:
        raise SampleError(
            f"{where or 'samples'}: labels {bad[:10]} lie outside the model's "
            f"{num_labels} labels (0..{num_labels - 1}); check the task's label column "
            "or the model's label mapping"
        )


@dataclass
class Batch:
    rows: list[int]  # positions in the Samples
    inputs: dict[str, torch.Tensor]  # tokenizer output (input_ids, attention_mask, ...)
    labels: torch.Tensor


def tokenize(tokenizer, samples: Samples, max_length: int = 128):
    """Tokenise every sample once, without padding; returns a list of dicts."""
    pair = samples.is_pair
    if pair:
        text_b = [b if b is not None else "" for b in samples.text_b]
        enc = tokenizer(samples.text_a, text_b, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(samples.text_a, truncation=True, max_length=max_length)
    keys = list(enc.keys())
    return [{k: enc[k][i] for k in keys} for i in range(len(samples))]


def pad_batch(tokenizer, encoded, rows, device: str | torch.device = "cpu") -> dict:
    """The tokenised ``rows`` of ``encoded`` padded to their longest, as tensors on ``device``."""
    padded = tokenizer.pad([encoded[i] for i in rows], return_tensors="pt")
    return {k: v.to(device) for k, v in padded.items()}


def batches(
    tokenizer,
    samples: Samples,
    batch_size: int,
    max_length: int = 128,
    sort_by_length: bool = False,
    device: str | torch.device = "cpu",
    encoded=None,
) -> Iterator[Batch]:
    """Dynamically padded batches in file order (or sorted by length)."""
    encoded = encoded if encoded is not None else tokenize(tokenizer, samples, max_length)
    order = list(range(len(samples)))
    if sort_by_length:
        order.sort(key=lambda i: len(encoded[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        inputs = pad_batch(tokenizer, encoded, rows, device)
        labels = torch.tensor([samples.label[i] for i in rows], dtype=torch.long, device=device)
        yield Batch(rows, inputs, labels)


def warn_unknown_tokens(tokenizer, encoded, limit: float = 0.5) -> float:
    """Share of non-special tokens that are unknown; warn above ``limit`` (a broken vocabulary)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return 0.0
    special = set(tokenizer.all_special_ids) - {unk}
    total = unknown = 0
    for e in encoded:
        for t in e["input_ids"]:
            if t not in special:
                total += 1
                unknown += t == unk
    share = unknown / total if total else 0.0
    if share > limit:
        logging.getLogger(__name__).warning(
            "%.0f%% of the training tokens are the unknown token %r: the tokenizer's "
            "vocabulary does not fit this text (or failed to load)", 100 * share,
            tokenizer.unk_token)
    return share
