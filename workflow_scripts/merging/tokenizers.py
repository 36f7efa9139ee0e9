"""The inputs of a merge must share a tokenizer: the rows of their embeddings (and of a causal
LM's output layer) are averaged token by token, so the same row must mean the same token.

Compared: the vocabulary with its ids (added tokens included), the special tokens' ids
(the pad token aside: giving a tokenizer a pad token is incidental), the added tokens'
ids and whether they are special, and a BPE model's merges.  Not compared: padding,
truncation, lengths and other settings that do not change what an id means.  Models
whose tokenizers differ are refused, naming both and the first difference, unless
``--allow-tokenizer-mismatch`` (``merge.allow_tokenizer_mismatch``): then a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import MergeError, set_by

log = logging.getLogger(__name__)

ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token")


def tokenizer_facts(directory: Path) -> dict | None:
    """What the ids of a checkpoint's tokenizer mean (None: it has no tokenizer files)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except (OSError, ValueError, TypeError):  # no tokenizer files (a bare body)
        return None
    facts = {
        "vocab": tokenizer.get_vocab(),
        "special": {role: getattr(tokenizer, f"{role}_id", None) for role in ROLES},
        "added": {int(i): (str(t), bool(getattr(t, "special", False)))
                  for i, t in tokenizer.added_tokens_decoder.items()},
        "merges": None,
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model") or {}
        if model.get("type") == "BPE":
            facts["merges"] = [m if isinstance(m, str) else " ".join(m)
                               for m in model.get("merges") or []]
    return facts


def first_difference(a: dict, b: dict) -> str | None:
    """The first way two tokenizers' facts differ, in words (None: they agree)."""
    if a["vocab"] != b["vocab"]:
        if len(a["vocab"]) != len(b["vocab"]):
            return f"{len(a['vocab'])} tokens against {len(b['vocab'])}"
        for token, i in a["vocab"].items():
            if b["vocab"].get(token) != i:
                other = b["vocab"].get(token)
                return (f"token {token!r} is id {i} in one and "
                        f"{'absent' if other is None else f'id {other}'} in the other")
    for role in ROLES:
        if a["special"][role] != b["special"][role]:
            return f"the {role.replace('_token', '')} token is id {a['special'][role]} against " \
                   f"{b['special'][role]}"
    if a["added"] != b["added"]:
        ids = sorted(set(a["added"]) ^ set(b["added"])) or sorted(
            i for i in a["added"] if a["added"][i] != b["added"].get(i))
        i = ids[0]
        return f"added token id {i} is {a['added'].get(i)} against {b['added'].get(i)}"
    if a["merges"] != b["merges"]:
        return (f"their BPE merges differ ({len(a['merges'] or [])} against "
                f"{len(b['merges'] or [])} merges)")
    return None


def check_tokenizers(directories: list[Path], labels: list[str], allow: bool = False) -> None:
    """Every checkpoint with a tokenizer has the first one's (:func:`first_difference`);
    otherwise a MergeError naming both, or with ``allow`` a warning."""
    facts = [tokenizer_facts(Path(d)) for d in directories]
    known = [(label, f) for label, f in zip(labels, facts) if f is not None]
    for label, other in known[1:]:
        difference = first_difference(known[0][1], other)
        if difference is None:
            continue
        message = (f"the tokenizers of {known[0][0]} and {label} differ ({difference}): their "
                   "embedding rows would be averaged across different tokens")
        if allow:
            log.warning("%s; merging anyway (--allow-tokenizer-mismatch)", message)
            continue
        allow_it = set_by("--allow-tokenizer-mismatch", "merge.allow_tokenizer_mismatch", True)
        raise MergeError(f"{message}. Merge models that share one tokenizer, or pass "
                         f"{allow_it} to merge anyway")
