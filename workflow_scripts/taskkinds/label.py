"""``label``: a classifier's task (objective ``classification``): text (or a text pair)
and its class id.

Batches are the tokenizer's encodings of the text (pair) and the class ids; the loss of one
example is the cross-entropy of its class, and the true Fisher draws a class from the
model's softmax (the expected Fisher sums over every class).  An evaluation records the
task's metrics (:mod:`workflow_scripts.classifier`), its label counts (the report's chance
level: the majority-class rate); the report normalises a merged score by the fine-tuned
one, ``merged / fine-tuned x 100``, and refuses a fine-tune within a margin of chance.
"""

from __future__ import annotations

from ..errors import UserError
from .base import TaskKind


class LabelKind(TaskKind):
    name = "label"
    objective = "classification"
    description = "text (or a text pair) and its class id, scored by the task's metric"
    metric = None
    higher_is_better = True
    needs_base = False
    caption = "merged / fine-tuned metric x 100"
    unit = "of fine-tuned"
    labels = True
    expected_fisher = True

    def label_names(self, info: dict) -> list[str]:
        num_labels = int(info["num_labels"])
        names = [str(n) for n in info.get("label_names") or range(num_labels)]
        if len(names) != num_labels:
            raise UserError(f"task info: {num_labels} labels but {len(names)} label names")
        if num_labels < 2:
            raise UserError(f"fine-tuning needs a classification task with >= 2 labels, got "
                            f"{num_labels}")
        return names

    def label_counts(self, samples, num_labels: int) -> list[int]:
        from ..tasks.info import label_counts

        return label_counts(samples, num_labels)

    def check_samples(self, samples, num_labels: int | None, where: str) -> None:
        from ..data import check_labels

        if num_labels is not None:
            check_labels(samples, num_labels, where=where)

    def training_batches(self, tokenizer, train, max_length: int, device):
        import torch

        from ..data import pad_batch, tokenize, warn_unknown_tokens

        encoded = tokenize(tokenizer, train, max_length)
        warn_unknown_tokens(tokenizer, encoded)

        def make(rows):
            labels = torch.tensor([train.label[i] for i in rows], dtype=torch.long, device=device)
            return pad_batch(tokenizer, encoded, rows, device), labels

        return [len(e["input_ids"]) for e in encoded], make

    def batches(self, model, tokenizer, samples, *, batch_size: int, max_length: int,
                sort_by_length: bool, device) -> list:
        from ..data import batches, check_labels

        if len(samples) == 0:
            raise ValueError("no samples: the Fisher needs at least one example")
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, not {batch_size}")
        check_labels(samples, int(model.config.num_labels))
        return list(batches(tokenizer, samples, batch_size, max_length,
                            sort_by_length=sort_by_length, device=device))

    def example_losses(self, logits, labels):
        import torch
        import torch.nn.functional as F

        acc = torch.promote_types(logits.dtype, torch.float32)
        return F.cross_entropy(logits.to(acc), labels, reduction="none")

    def drawn_labels(self, logits, labels, generator):
        import torch

        probs = torch.softmax(logits.detach().float(), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    def classes(self, model) -> int:
        return int(model.config.num_labels)

    def evaluate(self, model, tokenizer, samples, task: str, settings, *, record,
                 num_labels: int | None = None, progress: bool = True) -> dict:
        from ..classifier import evaluate_model, label_counts
        from ..data import check_labels

        model_labels = int(model.config.num_labels)
        if num_labels is not None and num_labels != model_labels:
            raise UserError(f"checkpoint {record.model} has {model_labels} labels but task {task} "
                            f"needs {num_labels} (--num-labels); wrong checkpoint or task?")
        if model_labels < 2:
            raise UserError(f"checkpoint {record.model} has {model_labels} output label; "
                            "evaluation needs a classification head with >= 2 labels (regression heads "
                            "are not supported)")
        check_labels(samples, model_labels, where=f"{record.data} for checkpoint {record.model}")
        device = next(model.parameters()).device.type
        metrics = evaluate_model(model, tokenizer, samples, task, settings.batch_size,
                                 settings.max_length, device, progress)
        return {"n_examples": len(samples), "num_labels": model_labels,
                "label_counts": label_counts(samples, model_labels), "metrics": metrics}

    def validation(self, model, tokenizer, valid, task_info: dict, max_length: int,
                   batch_size: int) -> dict:
        from ..classifier import compute_metrics, predict

        device = next(model.parameters()).device
        scores = predict(model, tokenizer, valid, batch_size, max_length, device, progress=False)
        acc = compute_metrics(task_info.get("task"), valid.label, scores,
                              model.config.num_labels)["accuracy"]
        return {"accuracy": acc, "n": len(valid)}

    def finetuned_row(self, data: dict, row: dict, metric_of, path, warnings: list) -> dict:
        score = metric_of(row["metric"])
        num_labels = _num_labels(data, path)
        if score is None or score <= 0:
            raise UserError(f"evaluation file {path}: fine-tuned {row['metric']} is {score}; "
                            "scores cannot be normalised by it")
        chance, warning = _chance(data, num_labels, path)
        if warning:
            warnings.append(warning)
        return row | {"score": score, "accuracy": metric_of("accuracy"),
                      "num_labels": num_labels, "n_examples": data.get("n_examples"),
                      "chance": chance, "base": None}

    def normalised(self):
        import polars as pl

        return pl.col("merged").fill_null(0.0) / pl.col("finetuned") * 100

    def weak(self, finetuned, margin: float) -> list:
        import polars as pl

        rows = finetuned.filter(pl.col("accuracy") <= pl.col("chance") + margin)
        return [(r, f"{r['family']}/{r['task']}: fine-tuned model {r['model']} ({r['file']}) "
                    f"has accuracy {r['accuracy']:.3f} on its own validation set, within "
                    f"{margin} of or below chance ({r['chance']:.3f})")
                for r in rows.iter_rows(named=True)]


def _num_labels(data: dict, path) -> int:
    num_labels = data.get("num_labels")
    if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 2:
        if num_labels is None:
            raise UserError(f"evaluation file {path}: no 'num_labels' (keys present: "
                            f"{', '.join(sorted(data)) or 'none'})")
        raise UserError(f"evaluation file {path}: num_labels is {num_labels!r}; every task is a "
                        "classification with 2 or more labels")
    return num_labels


def _chance(data: dict, num_labels: int, path) -> tuple[float, str | None]:
    """(chance level, warning or None): the majority-class rate of the evaluated samples,
    at least 1/num_labels; 1/num_labels with a warning when no label counts are recorded."""
    counts = data.get("label_counts")
    if counts is None:
        return 1.0 / num_labels, (
            f"evaluation file {path} records no label counts; chance taken as 1/{num_labels}; "
            "rerun its evaluation to check the model against its task's majority-class rate")
    if (not isinstance(counts, list) or len(counts) != num_labels
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
            or sum(counts) == 0):
        raise UserError(f"evaluation file {path}: label_counts is {counts!r}, not {num_labels} "
                        "non-negative counts (one per label id) with a positive sum")
    return max(1.0 / num_labels, max(counts) / sum(counts)), None


KIND = LabelKind()
