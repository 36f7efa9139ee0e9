"""Our choice scoring against lm-evaluation-harness itself: the same JSONL file read by a task
YAML, ``lm_eval.simple_evaluate`` on an in-memory tiny Llama and GPT-2 with a byte-level BPE
tokenizer built offline; per-request log-likelihoods within 1e-4, the same acc and acc_norm
(rows whose top two choices lie within 1e-3 excluded)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from workflow_scripts.choice.encode import encode_pair, encode_rows, tok_encode
from workflow_scripts.choice.metrics import predictions
from workflow_scripts.choice.read import read_choice_file
from workflow_scripts.choice.score import loglikelihoods
from workflow_scripts.choice.testing import harness_task_yaml, make_bpe_tokenizer, make_causal_lm

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("lm_eval.models.huggingface")

MAX_LENGTH = 40
LONG = "the story of the movie was very good and the actor was great but the plot " * 3
ROWS = [
    {"prompt": "Review: the film was good.\nSentiment:", "choices": ["positive", "negative"],
     "answer": 0},
    {"prompt": "Review: a terrible plot.\nSentiment: ", "choices": ["positive", "negative",
                                                                     "neutral"], "answer": 1},
    {"prompt": "Question: what is it?\nAnswer:", "choices": ["superman", "supermarket",
                                                             "superb answer", "a sad song"],
     "answer": "supermarket"},
    {"prompt": "Review: " + LONG + "\nSentiment:", "choices": ["positive", "negative",
                                                               "very very neutral indeed"],
     "answer": 2},
    {"prompt": "Is it true?  ", "choices": ["true", "false"], "answer": 1},
    {"prompt": "the weather is hot and the day is", "choices": ["sun", "rain", "cold night",
                                                                "hot day"], "answer": 3},
    {"prompt": "He went to the super", "choices": ["man and the actor", "market", "b song"],
     "answer": 1},
] + [
    {"prompt": f"Review: {w} movie {v}.\nSentiment:", "choices": ["positive", "negative",
                                                                   "neutral"][:2 + i % 2],
     "answer": i % 2}
    for i, (w, v) in enumerate([("good", "plot"), ("bad", "actor"), ("great", "story"),
                                ("sad", "song"), ("happy", "day"), ("fine", "film")])
]


def harness_run(model, tokenizer, tmp_path, delimiter: str):
    """``(per-row lists of log-likelihoods, acc, acc_norm)`` from simple_evaluate."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    os.environ["HF_DATASETS_OFFLINE"] = "1"
    data = tmp_path / "rows.jsonl"
    # the harness indexes a text answer against doc_to_choice: write indices for it
    with data.open("w") as f:
        for row in ROWS:
            answer = row["answer"]
            if isinstance(answer, str):
                answer = row["choices"].index(answer)
            f.write(json.dumps({**row, "answer": answer}) + "\n")
    name = "toy_choice_" + ("space" if delimiter else "none")
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{name}.yaml").write_text(harness_task_yaml(name, data, delimiter))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=4,
              device="cpu")
    out = lm_eval.simple_evaluate(model=lm, tasks=[name], num_fewshot=0, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tasks),
                                                           include_defaults=False),
                                  bootstrap_iters=0)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    logliks = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    res = out["results"][name]
    return logliks, res["acc,none"], res["acc_norm,none"]


def write_jsonl(tmp_path):
    path = tmp_path / "ours.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("delimiter", [" ", ""])
def test_scores_equal_the_harness(model_type, delimiter, tmp_path, one_thread):
    tokenizer = make_bpe_tokenizer(add_bos=model_type == "llama")
    model = make_causal_lm(model_type, tokenizer)
    rows = read_choice_file(write_jsonl(tmp_path))
    encoded, kept = encode_rows(tokenizer, rows, MAX_LENGTH, delimiter=delimiter)
    assert kept == list(range(len(ROWS)))
    ours = loglikelihoods(model, encoded, MAX_LENGTH, batch_size=3)
    theirs, acc, acc_norm = harness_run(model, tokenizer, tmp_path, delimiter)

    # the cases the comparison must cover are there
    assert {len(r.choices) for r in rows} == {2, 3, 4}
    assert rows[1].prompt.endswith(" ")
    assert any(len(e.context) + max(map(len, e.continuations)) > MAX_LENGTH + 1
               for e in encoded), "no left-truncated context"
    in_context = [(e.continuations[k], tuple(tok_encode(tokenizer, delimiter + c)))
                  for e in encoded for k, c in enumerate(e.row.choices)]
    assert any(len(a) > 1 for a, _ in in_context)
    if model_type == "gpt2":  # no BOS: the choice alone encodes to comparable tokens
        assert any(a != b for a, b in in_context), "no choice tokenised differently in context"

    assert len(theirs) == len(ours)
    for r, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=f"row {r}")

    preds = predictions(rows, ours)
    clear = [r for r, lls in enumerate(ours)
             if np.diff(np.sort(lls)[-2:])[0] > 1e-3
             and np.diff(np.sort(np.array(lls) / [len(c) for c in rows[r].choices])[-2:])[0] > 1e-3]
    assert len(clear) >= len(rows) - 2
    harness_pred = [int(np.argmax(lls)) for lls in theirs]
    assert [preds.pred[r] for r in clear] == [harness_pred[r] for r in clear]
    ours_acc = np.mean(np.array(preds.pred) == preds.answers)
    ours_norm = np.mean(np.array(preds.pred_norm) == preds.answers)
    if len(clear) == len(rows):
        assert ours_acc == pytest.approx(acc)
        assert ours_norm == pytest.approx(acc_norm)


def test_encode_pair_moves_trailing_space_and_encodes_in_context():
    tokenizer = make_bpe_tokenizer(add_bos=False)
    ctx, cont = encode_pair(tokenizer, "Sentiment: ", " positive")
    assert ctx == tokenizer.encode("Sentiment:")
    whole = tokenizer.encode("Sentiment:  positive")
    assert ctx + cont == whole
    assert cont != tokenizer.encode(" positive")  # the moved space is its own token


def test_a_choice_that_tokenises_to_nothing_is_refused():
    from workflow_scripts.choice.rows import make_row
    from workflow_scripts.errors import SampleError

    tokenizer = make_bpe_tokenizer(add_bos=False)
    row = make_row("He went to the super", ["man", "market"], 0, "t")
    # "super" + "man" is one token, as "super" is: the harness would assert here
    with pytest.raises(SampleError, match="choice 0 'man' tokenises to nothing"):
        encode_rows(tokenizer, [row], MAX_LENGTH, delimiter="")


def test_a_prompt_already_starting_with_bos_gets_no_second():
    tokenizer = make_bpe_tokenizer(add_bos=True)
    bos = tokenizer.bos_token_id
    assert tok_encode(tokenizer, "Answer:")[:1] == [bos]
    ids = tok_encode(tokenizer, "<s>Answer:")
    assert ids[0] == bos and bos not in ids[1:]
    assert ids == tok_encode(tokenizer, "Answer:")
