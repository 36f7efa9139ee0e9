"""Tiny models and toy samples built locally, for tests and benchmarks.

Nothing here touches the network: the tokenizer is a WordPiece vocabulary
written from a word list, the models are randomly initialised from configs.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, BertTokenizerFast

from .data import Samples, write_samples

WORDS = (
    "the a an and or but not very good bad great terrible movie film plot actor "
    "story happy sad love hate is was are be this that it of to in on for with "
    "question answer what why how who where when same different yes no maybe "
    "market stock sport team game win lose music song tech phone computer news "
    "hello hi thanks please sorry fine okay weather rain sun cold hot day night"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(directory: str | Path, model_input_names=None,
                   padding_side: str = "right") -> BertTokenizerFast:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = SPECIAL + list(dict.fromkeys(WORDS))
    kwargs = {"padding_side": padding_side}
    if model_input_names is not None:
        kwargs["model_input_names"] = list(model_input_names)
    # transformers 5 builds a fast tokenizer from ``vocab`` (it ignores ``vocab_file``)
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True, **kwargs)
    if tokenizer.convert_tokens_to_ids("good") == tokenizer.unk_token_id:
        raise RuntimeError("the toy tokenizer lost its vocabulary")
    return tokenizer


def tiny_config(
    model_type: str = "bert",
    num_labels: int = 2,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 37,
    vocab_size: int | None = None,
    **overrides,
):
    vocab_size = vocab_size or len(SPECIAL) + len(dict.fromkeys(WORDS))
    common = dict(num_labels=num_labels, vocab_size=vocab_size)
    if model_type == "distilbert":
        kw = dict(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=intermediate,
                  max_position_embeddings=64, pad_token_id=0)
    elif model_type == "gpt2":
        kw = dict(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
                  n_positions=64, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    else:
        kw = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate, max_position_embeddings=64, pad_token_id=0)
        if model_type == "roberta":
            kw["max_position_embeddings"] = 66  # RoBERTa offsets positions by pad+1
            kw["type_vocab_size"] = 1
        if model_type == "electra":
            kw["embedding_size"] = hidden // 2
        if model_type == "deberta-v2":  # v3-style: shared keys, relative buckets, rel. norm
            kw.update(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                      max_relative_positions=16, position_biased_input=False,
                      norm_rel_ebd="layer_norm", share_att_key=False)
        if model_type == "modernbert":  # local attention over 5 tokens, global every 2nd layer
            kw.update(global_attn_every_n_layers=2, local_attention=4, bos_token_id=2,
                      eos_token_id=3, cls_token_id=2, sep_token_id=3)
        if model_type in ("llama", "qwen2", "mistral"):  # grouped-query attention
            kw.update(num_key_value_heads=max(1, heads // 2), bos_token_id=2, eos_token_id=3)
    kw.update(common)
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def make_tiny_checkpoint(
    directory: str | Path,
    model_type: str = "bert",
    num_labels: int = 2,
    seed: int = 0,
    with_head: bool = True,
    padding_side: str = "right",
    objective: str = "classification",
    **config_overrides,
) -> Path:
    """A randomly initialised sequence classifier (or, with ``objective="causal-lm"``, a
    causal language model) with tokenizer, saved with save_pretrained.

    ``with_head=False`` saves the bare encoder, like a pre-trained base model.
    ``padding_side="left"`` and ``pad_token_id=None`` give a decoder base as released
    (left-padding tokenizer, no pad token id in the model config).
    """
    from . import objectives

    directory = Path(directory)
    torch.manual_seed(seed)
    config = tiny_config(model_type, num_labels, **config_overrides)
    model_class = objectives.auto_class(objective)
    if objective == objectives.DEFAULT and not with_head:
        model_class = AutoModel  # the bare encoder of a classifiers' base
    model = model_class.from_config(config)
    # only BERT and ELECTRA take token type ids
    names = None if model_type in ("bert", "electra") else ["input_ids", "attention_mask"]
    tokenizer = make_tokenizer(directory, model_input_names=names, padding_side=padding_side)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def toy_samples(n: int = 16, pair: bool = False, num_labels: int = 2, seed: int = 0) -> Samples:
    """Random sentences over the tiny vocabulary, of varied lengths."""
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))

    return Samples(
        idx=list(range(n)),
        text_a=[sentence() for _ in range(n)],
        text_b=[sentence() if pair else None for _ in range(n)],
        label=[rng.randrange(num_labels) for _ in range(n)],
    )


def write_toy_samples(path, **kwargs) -> Path:
    write_samples(toy_samples(**kwargs), path)
    return Path(path)
