"""The one encoder of a (context, continuation) pair, lm-evaluation-harness's (0.4.13,
``lm_eval/api/model.py`` ``_encode_pair`` and ``models/huggingface.py``), used by
fine-tuning, the Fisher and scoring alike.

* The continuation is ``delimiter + choice`` (``delimiter`` defaults to ``" "``).
* Whitespace that ends the context is moved to the start of the continuation.
* ``whole = encode(context + continuation)``, ``context_ids = encode(context)``; the
  continuation's tokens are ``whole[len(context_ids):]``: tokenised in context, not alone.
* ``encode`` uses the tokenizer's own default for special tokens (a BOS where the tokenizer
  adds one), except that a text already starting with the BOS (or, without one, the EOS)
  token's text gets none added.
* Window: the last ``max_length + 1`` tokens of ``context_ids + continuation`` are kept and
  all but the last are fed to the model, so the context is cut from the left and the
  answer never is.  A row whose longest choice has more than ``max_length`` tokens leaves no
  room for a context token: it is dropped and counted; a task left with none is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import SampleError
from .rows import ChoiceRow

log = logging.getLogger(__name__)
DELIMITER = " "


def _prefix_text(tokenizer) -> str | None:
    token_id = tokenizer.bos_token_id
    if token_id is None:
        token_id = tokenizer.eos_token_id
    return None if token_id is None else tokenizer.decode([token_id])


def tok_encode(tokenizer, text: str) -> list[int]:
    """``text``'s token ids as the harness's ``tok_encode`` gives them."""
    prefix = _prefix_text(tokenizer)
    if prefix and text.startswith(prefix):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def split_space(context: str, continuation: str) -> tuple[str, str]:
    """The context without its trailing whitespace, which starts the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context_ids, continuation_ids)`` of one pair (``context`` not empty)."""
    context, continuation = split_space(context, continuation)
    whole = tok_encode(tokenizer, context + continuation)
    context_ids = tok_encode(tokenizer, context)
    return context_ids, whole[len(context_ids):]


def window(context_ids, continuation_ids, max_length: int) -> tuple[int, ...]:
    """The context tokens the model sees before this continuation: the last ``max_length +
    1 - len(continuation)`` (the harness's left truncation)."""
    keep = max_length + 1 - len(continuation_ids)
    if keep <= 0:
        return ()
    return tuple(context_ids[-keep:] if len(context_ids) > keep else context_ids)


@dataclass(frozen=True)
class EncodedRow:
    row: ChoiceRow
    context: tuple[int, ...]  # the context's ids, before any truncation
    continuations: tuple[tuple[int, ...], ...]  # one per choice

    def request(self, k: int, max_length: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(context ids in the window, continuation ids)`` of choice ``k``."""
        cont = self.continuations[k]
        return window(self.context, cont, max_length), cont


def encode_row(tokenizer, row: ChoiceRow, delimiter: str, where: str) -> EncodedRow:
    conts, context = [], None
    for k, choice in enumerate(row.choices):
        context, cont = encode_pair(tokenizer, row.prompt, delimiter + choice)
        if not cont:
            raise SampleError(f"{where}: choice {k} {choice!r} tokenises to nothing after the "
                              "prompt; give it text the tokenizer keeps")
        conts.append(tuple(cont))
    if not context:
        raise SampleError(f"{where}: the prompt {row.prompt!r} tokenises to nothing; give it text")
    return EncodedRow(row, tuple(context), tuple(conts))


def encode_rows(tokenizer, rows: list[ChoiceRow], max_length: int, delimiter: str = DELIMITER,
                where: str = "rows") -> tuple[list[EncodedRow], list[int]]:
    """``(encoded rows, their positions in rows)``: rows whose longest choice has more than
    ``max_length`` tokens are dropped (logged with their count; none left: an error)."""
    encoded, kept = [], []
    for i, row in enumerate(rows):
        enc = encode_row(tokenizer, row, delimiter, f"{where} row {i + 1}")
        if max(len(c) for c in enc.continuations) > max_length:
            continue
        encoded.append(enc)
        kept.append(i)
    dropped = len(rows) - len(encoded)
    if dropped:
        log.warning("%s: %d of %d rows have a choice longer than max_length (%d tokens), which "
                    "leaves no room for the prompt: dropped", where, dropped, len(rows), max_length)
    if not encoded:
        raise SampleError(f"{where}: every row has a choice longer than max_length ({max_length} "
                          "tokens); raise max_length or shorten the choices")
    return encoded, kept
