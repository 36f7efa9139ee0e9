"""Choice tasks: rows of a prompt, its choices and the right one, scored, trained on and
differentiated as lm-evaluation-harness scores multiple-choice tasks.

rows.py        a checked row (:class:`~.rows.ChoiceRow`); the prepared task's Parquet
read.py        rows from a JSONL, Parquet, CSV or TSV file (a column map names the columns)
verbalise.py   a classification task's rows as choices: ``template`` and ``label_words``
encode.py      the harness's (context, continuation) encoder and its left-truncated window
score.py       every choice's summed log-likelihood, one forward per shared prompt
metrics.py     ``accuracy`` (acc), ``acc_norm`` and the task's own metric from predictions
examples.py    training examples (prompt + gold choice, only its tokens count), their loss,
               and the true Fisher's choice drawn from the model's distribution over choices
api.py         what a ``choice`` task kind calls, on the engine's samples: training
               batches, the Fisher's batches (gold or drawn choice) and loss, evaluation
testing.py     a byte-level BPE tokenizer and tiny causal LMs for tests

A task's preparation makes rows (``read_choice_file`` or ``verbalise``) and stores them as
the engine's samples (``rows.to_samples``: the choices as a JSON list in ``text_b``); the
kind then calls :mod:`.api`.
"""
