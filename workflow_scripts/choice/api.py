"""What a ``choice`` task kind calls, on the engine's samples (:func:`.rows.to_samples`):
training batches, the Fisher's batches and per-example loss, the true Fisher's drawn
choices, and an evaluation's record fields.  Each drops the rows without room for their
longest choice (:func:`.encode.encode_rows`) and says how many.
"""

from __future__ import annotations

import logging

from .encode import DELIMITER, encode_rows
from .rows import from_samples

log = logging.getLogger(__name__)


def encoded(tokenizer, samples, max_length: int, where: str, delimiter: str = DELIMITER):
    """``(encoded rows, their positions in samples)``."""
    return encode_rows(tokenizer, from_samples(samples, where), max_length, delimiter, where)


def training_batches(tokenizer, train, max_length: int, device, delimiter: str = DELIMITER):
    """``(each kept example's length, positions -> (padded inputs, labels))`` for a loop
    minimising ``model(**inputs, labels=labels).loss``: the prompt then the gold choice,
    only the choice's tokens counting."""
    from .examples import labelled_example, pad_id, pad_labelled

    rows, _ = encoded(tokenizer, train, max_length, "train samples", delimiter)
    items = [labelled_example(e, e.row.answer, max_length) for e in rows]
    pad = pad_id(tokenizer)
    return ([len(e["input_ids"]) for e in items],
            lambda positions: pad_labelled([items[i] for i in positions], pad, device))


def fisher_batches(model, tokenizer, samples, *, batch_size: int, max_length: int,
                   sort_by_length: bool, device, generator=None, delimiter: str = DELIMITER):
    """The Fisher's batches (:class:`workflow_scripts.data.Batch`: ``rows`` positions in
    ``samples``, ``labels`` the targets :func:`.examples.choice_nll` reads): the gold choice,
    or with a ``generator`` (the true Fisher) a choice drawn from ``model``'s distribution
    over each row's choices."""
    from ..data import Batch
    from .examples import batches, drawn_choices, pad_id

    rows, kept = encoded(tokenizer, samples, max_length, "samples", delimiter)
    choices = None
    if generator is not None:
        choices = drawn_choices(model, rows, max_length, generator, batch_size)
    return [Batch([kept[i] for i in b.rows], b.inputs, b.targets)
            for b in batches(rows, max_length, batch_size, pad_id(tokenizer), choices=choices,
                             sort_by_length=sort_by_length, device=device)]


def example_losses(logits, targets):
    """Each example's ``-log p(choice | prompt)`` [B] (at least float32)."""
    from .examples import choice_nll

    return choice_nll(logits, targets)[0]


def evaluate(model, tokenizer, samples, task: str, *, batch_size: int, max_length: int,
             num_labels: int | None = None, progress: bool = True,
             delimiter: str = DELIMITER) -> dict:
    """An evaluation record's fields: ``metrics`` (``accuracy``, ``acc_norm`` and, with
    ``num_labels``, the task's own), ``n_examples``, ``dropped_examples``, ``chance``."""
    from .examples import pad_id
    from .metrics import choice_metrics, predictions
    from .score import loglikelihoods

    rows, _ = encoded(tokenizer, samples, max_length, "samples", delimiter)
    lls = loglikelihoods(model, rows, max_length, batch_size, pad_id(tokenizer), progress)
    preds = predictions([e.row for e in rows], lls)
    metrics = choice_metrics(preds, task, num_labels)
    log.info("%s: accuracy %.4f, acc_norm %.4f on %d rows", task, metrics["accuracy"],
             metrics["acc_norm"], len(rows))
    return {"n_examples": len(rows), "dropped_examples": len(samples) - len(rows),
            "chance": preds.chance, "metrics": metrics}
