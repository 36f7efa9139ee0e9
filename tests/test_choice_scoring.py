"""Choice scoring's cost (one forward per shared prompt, the output projection at scored
positions), its window, the training examples and their loss (the same log-likelihood
scoring gives), the true Fisher's drawn choices, and the metrics."""

from __future__ import annotations

import pytest
import torch

from workflow_scripts.choice.encode import encode_rows
from workflow_scripts.choice.examples import batches, choice_nll, drawn_choices, pad_id
from workflow_scripts.choice.metrics import choice_metrics, predictions
from workflow_scripts.choice.rows import make_row
from workflow_scripts.choice.score import loglikelihoods
from workflow_scripts.choice.testing import make_bpe_tokenizer, make_causal_lm
from workflow_scripts.errors import SampleError

WORDS = ["positive", "negative", "neutral", "superb answer", "the sad song"]


def rows(n=6, single=False):
    out = []
    for i in range(n):
        k = 2 + i % 3
        choices = ["yes", "no", "sad", "happy"][:k] if single else WORDS[:k]
        out.append(make_row(f"Review: the movie {i} was good and the plot " + "very " * i
                            + "\nSentiment:", choices, i % k, f"r{i}", i))
    return out


@pytest.fixture(scope="module")
def lm():
    tokenizer = make_bpe_tokenizer()
    return tokenizer, make_causal_lm("llama", tokenizer)


def reference(model, enc, max_length):
    """One full forward per choice, as the harness runs them."""
    out = []
    for e in enc:
        lls = []
        for k in range(len(e.continuations)):
            ctx, cont = e.request(k, max_length)
            seq = torch.tensor([list(ctx) + list(cont)[:-1]])
            with torch.no_grad():
                lp = torch.log_softmax(model(seq).logits[0].float(), -1)
            lls.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
        out.append(lls)
    return out


class Calls:
    """Counts the model's forwards and the positions its output projection sees."""

    def __init__(self, model):
        self.forwards, self.projected = 0, 0
        self.handles = [model.register_forward_pre_hook(self.forward),
                        model.get_output_embeddings().register_forward_hook(self.project)]

    def forward(self, module, args):
        self.forwards += 1

    def project(self, module, args, output):
        self.projected += output.shape[0] * output.shape[1]

    def remove(self):
        for h in self.handles:
            h.remove()


def test_one_forward_per_prompt_for_single_token_choices(lm, one_thread):
    tokenizer, model = lm
    enc, _ = encode_rows(tokenizer, rows(6, single=True), 64)
    assert all(len(c) == 1 for e in enc for c in e.continuations)
    calls = Calls(model)
    ours = loglikelihoods(model, enc, 64, batch_size=3)
    calls.remove()
    assert calls.forwards == 2  # 6 prompts, 3 a batch; no choice has a second token
    assert calls.projected == 6  # the last position of each prompt only
    for a, b in zip(ours, reference(model, enc, 64)):
        assert a == pytest.approx(b, abs=1e-4)


def test_multi_token_choices_continue_from_the_prompts_cache(lm, one_thread):
    tokenizer, model = lm
    enc, _ = encode_rows(tokenizer, rows(6), 64)
    calls = Calls(model)
    ours = loglikelihoods(model, enc, 64, batch_size=6)
    calls.remove()
    assert calls.forwards == 2  # one over the 6 prompts, one over all their continuations
    # only the choices of more than one token continue, each at its tokens but the last
    multi = sum(len(c) > 1 for e in enc for c in e.continuations)
    assert 0 < multi < sum(len(e.continuations) for e in enc)
    width = max(len(c) for e in enc for c in e.continuations) - 1
    assert calls.projected == 6 + multi * width
    for a, b in zip(ours, reference(model, enc, 64)):
        assert a == pytest.approx(b, abs=1e-4)


def test_left_truncation_keeps_the_answer_and_drops_rows_without_room(lm, one_thread):
    tokenizer, model = lm
    enc, kept = encode_rows(tokenizer, rows(6), 12)
    assert kept == list(range(6))
    assert all(len(e.request(k, 12)[0]) + len(e.continuations[k]) <= 13
               for e in enc for k in range(len(e.continuations)))
    for a, b in zip(loglikelihoods(model, enc, 12, batch_size=4), reference(model, enc, 12)):
        assert a == pytest.approx(b, abs=1e-4)
    long = make_row("Q:", ["yes", "the sad song and the happy song and the movie"], 0, "t")
    enc, kept = encode_rows(tokenizer, rows(2) + [long], 5)
    assert kept == [0, 1]
    with pytest.raises(SampleError, match="every row has a choice longer than max_length"):
        encode_rows(tokenizer, [long], 5)


@pytest.mark.parametrize("max_length", [64, 10])
def test_training_examples_loss_is_the_scored_loglikelihood(lm, one_thread, max_length):
    tokenizer, model = lm
    enc, _ = encode_rows(tokenizer, rows(6), max_length)
    scored = loglikelihoods(model, enc, max_length, batch_size=4)
    choices = [i % len(e.continuations) for i, e in enumerate(enc)]
    seen = {}
    for batch in batches(enc, max_length, 4, pad_id(tokenizer), choices=choices):
        logits = model(**batch.inputs).logits
        nll, counted = choice_nll(logits, batch.targets)
        for row, k, value, n in zip(batch.rows, batch.choices, nll.tolist(), counted.tolist()):
            assert n == len(enc[row].continuations[k])
            seen[row] = -value
    assert sorted(seen) == list(range(6))
    for row, value in seen.items():
        assert value == pytest.approx(scored[row][choices[row]], abs=1e-4)
    # gold choices by default
    assert [b.choices for b in batches(enc, max_length, 6, 0, sort_by_length=False)] == [
        [e.row.answer for e in enc]]


def test_drawn_choices_follow_the_models_distribution(lm, one_thread):
    tokenizer, model = lm
    row = make_row("Review: good\nSentiment:", ["yes", "no", "sad"], 0, "t")
    enc, _ = encode_rows(tokenizer, [row] * 400, 64)
    lls = torch.tensor(loglikelihoods(model, enc[:1], 64)[0])
    probs = torch.softmax(lls.double(), 0)
    drawn = drawn_choices(model, enc, 64, torch.Generator().manual_seed(0), batch_size=64)
    freq = torch.bincount(torch.tensor(drawn), minlength=3).double() / len(drawn)
    assert torch.allclose(freq, probs, atol=0.08)
    again = drawn_choices(model, enc[:50], 64, torch.Generator().manual_seed(0), batch_size=64)
    assert again == drawn[:50]


def test_acc_acc_norm_and_the_tasks_own_metric():
    rs = [make_row("Q:", ["a", "bbbb"], 1, "t"), make_row("Q:", ["a", "bbbb"], 0, "t"),
          make_row("Q:", ["a", "bbbb"], 1, "t")]
    lls = [[-1.0, -2.0], [-1.0, -2.0], [-3.0, -2.0]]
    preds = predictions(rs, lls)
    assert preds.pred == [0, 0, 1]
    assert preds.pred_norm == [1, 1, 1]  # -2/4 beats -1/1
    got = choice_metrics(preds, "cola", num_labels=2)
    assert got["accuracy"] == pytest.approx(2 / 3) and got["acc_norm"] == pytest.approx(2 / 3)
    assert set(got) == {"accuracy", "acc_norm", "f1", "matthews"}
    assert set(choice_metrics(preds, "mc")) == {"accuracy", "acc_norm"}
    # ties go to the first choice, as np.argmax
    assert predictions(rs[:1], [[-1.0, -1.0]]).pred == [0]


def test_labelled_examples_train_on_the_choice_as_transformers_computes_the_loss(lm, one_thread):
    from workflow_scripts.choice.examples import labelled_example, pad_labelled

    tokenizer, model = lm
    enc, _ = encode_rows(tokenizer, rows(5), 64)
    scored = loglikelihoods(model, enc, 64)
    items = [labelled_example(e, e.row.answer, 64) for e in enc]
    inputs, labels = pad_labelled(items, pad_id(tokenizer))
    counted = sum(len(e.continuations[e.row.answer]) for e in enc)
    assert int((labels != -100).sum()) == counted
    with torch.no_grad():
        loss = model(**inputs, labels=labels).loss  # mean over the counted tokens
    gold = sum(lls[e.row.answer] for lls, e in zip(scored, enc))
    assert float(loss) * counted == pytest.approx(-gold, abs=1e-3)
    # within max_length fed tokens, the answer whole
    short = labelled_example(enc[4], 2, 8)
    assert len(short["input_ids"]) <= 8
    assert short["labels"][-len(enc[4].continuations[2]):] == list(enc[4].continuations[2])


def test_the_api_a_task_kind_calls_on_samples(lm, one_thread):
    from workflow_scripts.choice import api
    from workflow_scripts.choice.rows import to_samples

    tokenizer, model = lm
    long = make_row("Q:", ["yes", "the sad song and the happy song and the movie"], 0, "t", 99)
    samples = to_samples(rows(5) + [long])
    enc, _ = encode_rows(tokenizer, rows(5), 12)
    scored = loglikelihoods(model, enc, 12)

    record = api.evaluate(model, tokenizer, samples, "toy", batch_size=2, max_length=12,
                          progress=False)
    assert record["n_examples"] == 5 and record["dropped_examples"] == 1
    preds = predictions([e.row for e in enc], scored)
    assert record["metrics"] == choice_metrics(preds, "toy")
    assert record["chance"] == pytest.approx(preds.chance)

    fisher = api.fisher_batches(model, tokenizer, samples, batch_size=2, max_length=12,
                                sort_by_length=True, device="cpu")
    assert sorted(r for b in fisher for r in b.rows) == [0, 1, 2, 3, 4]
    for b in fisher:
        losses = api.example_losses(model(**b.inputs).logits, b.labels)
        for row, loss in zip(b.rows, losses.tolist()):
            assert -loss == pytest.approx(scored[row][enc[row].row.answer], abs=1e-4)
    drawn = api.fisher_batches(model, tokenizer, samples, batch_size=5, max_length=12,
                               sort_by_length=False, device="cpu",
                               generator=torch.Generator().manual_seed(1))
    assert [r for b in drawn for r in b.rows] == [0, 1, 2, 3, 4]

    lengths, make = api.training_batches(tokenizer, samples, 12, "cpu")
    assert len(lengths) == 5 and max(lengths) <= 12
    inputs, labels = make([0, 3])
    assert model(**inputs, labels=labels).loss.isfinite()


def test_window_edges():
    from workflow_scripts.choice.encode import EncodedRow, window
    from workflow_scripts.choice.examples import labelled_example

    assert window((1, 2, 3), (7, 8), 2) == (3,)  # 2 fed tokens: 3 and 7
    assert window((1, 2, 3), (7, 8, 9), 2) == ()
    enc = EncodedRow(make_row("Q:", ["a", "b"], 0, "t"), (1, 2, 3), ((7, 8, 9), (6,)))
    assert labelled_example(enc, 0, 3)["input_ids"] == [3, 7, 8, 9]
    assert labelled_example(enc, 1, 3)["input_ids"] == [2, 3, 6]
