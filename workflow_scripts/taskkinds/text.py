"""``text``: a causal LM's task (objective ``causal-lm``): a text, or a prompt and its
response (:mod:`workflow_scripts.lm`).

An example's tokens are its text's (the prompt's then the response's); those that count
(every token after the first of a text, every response token) carry themselves as labels,
the rest -100.  The loss of one example is its mean next-token cross-entropy over the
counted tokens; the true Fisher draws each counted next token from the model's prediction
(the expected Fisher, a sum over a classifier's classes, does not apply).  An evaluation
records the mean token loss and perplexity (:mod:`workflow_scripts.lmeval`); the report
scores a merge by the share of the fine-tuning gain in loss it keeps,
``(L_base - L_merged) / (L_base - L_ft) x 100``, which needs the base model's evaluation
on the same split, and refuses a fine-tune whose loss is not below its base's.
"""

from __future__ import annotations

from ..errors import UserError
from ..metrics import LOSS
from .base import TaskKind


class TextKind(TaskKind):
    name = "text"
    objective = "causal-lm"
    description = "a text, or a prompt and its response, scored by its mean token loss"
    metric = LOSS
    higher_is_better = False
    needs_base = True
    caption = ("the share of the fine-tuning gain in validation token loss that the merge "
               "keeps, (L_base - L_merged) / (L_base - L_ft) x 100")
    unit = "of the fine-tuning gain"
    labels = False
    expected_fisher = False

    def label_names(self, info: dict) -> None:
        return None

    def label_counts(self, samples, num_labels: int) -> list[int]:
        return []

    def check_samples(self, samples, num_labels: int | None, where: str) -> None:
        return None  # the label column is unused (0)

    def training_batches(self, tokenizer, train, max_length: int, device):
        from .. import lm

        encoded, _ = lm.encode(tokenizer, train, max_length, where="train samples")
        return ([len(e["input_ids"]) for e in encoded],
                lambda rows: lm.pad(tokenizer, [encoded[i] for i in rows], device))

    def batches(self, model, tokenizer, samples, *, batch_size: int, max_length: int,
                sort_by_length: bool, device) -> list:
        from .. import lm

        if batch_size < 1:
            raise ValueError(f"batch size must be positive, not {batch_size}")
        return lm.batches(tokenizer, samples, batch_size, max_length,
                          sort_by_length=sort_by_length, device=device)

    def example_losses(self, logits, labels):
        from .. import lm

        return lm.token_losses(logits, labels)[0]

    def drawn_labels(self, logits, labels, generator):
        from .. import lm

        return lm.sampled_labels(logits, labels, generator)

    def chunk_labels(self, labels, width: int):
        return labels[:, :width]  # trimmed as the inputs are (their padding columns)

    def classes(self, model) -> int:
        return 1

    def evaluate(self, model, tokenizer, samples, task: str, settings, *, record,
                 num_labels: int | None = None, progress: bool = True) -> dict:
        import logging

        from ..lmeval import lm_metrics

        metrics, counts = lm_metrics(model, tokenizer, samples, settings.batch_size,
                                     settings.max_length, progress, where=f"{record.data}")
        logging.getLogger(__name__).info(
            "%s on %s: loss %.4f, perplexity %s", record.model, task, metrics["loss"],
            f"{metrics['perplexity']:.2f}" if metrics["perplexity"] is not None else "inf")
        return {"n_examples": counts["examples"], "n_tokens": counts["tokens"],
                "dropped_examples": counts["dropped"], "metrics": metrics}

    def validation(self, model, tokenizer, valid, task_info: dict, max_length: int,
                   batch_size: int) -> dict:
        import logging

        from ..lmeval import lm_metrics

        metrics, counts = lm_metrics(model, tokenizer, valid, batch_size, max_length,
                                     progress=False)
        logging.getLogger(__name__).info("validation loss %.4f on %d tokens", metrics["loss"],
                                         counts["tokens"])
        return {**metrics, "n": counts["examples"]}

    def finetuned_row(self, data: dict, row: dict, metric_of, path, warnings: list) -> dict:
        score = metric_of(row["metric"])
        if score is None:
            raise UserError(f"evaluation file {path}: fine-tuned loss is undefined")
        return row | {"score": score, "accuracy": None, "num_labels": None,
                      "n_examples": data.get("n_examples"), "chance": None, "base": None}

    def normalised(self):
        import polars as pl

        gain = (pl.col("base") - pl.col("merged")) / (pl.col("base") - pl.col("finetuned"))
        return gain * 100

    def weak(self, finetuned, margin: float) -> list:
        import polars as pl

        rows = finetuned.filter(pl.col("base").is_not_null()
                                & (pl.col("score") >= pl.col("base")))
        return [(r, f"{r['family']}/{r['task']}: fine-tuned causal LM {r['model']} "
                    f"({r['file']}) has validation loss {r['score']:.4f}, not below its base "
                    f"model's {r['base']:.4f}: there is no fine-tuning gain for a merge to keep")
                for r in rows.iter_rows(named=True)]


KIND = TextKind()
