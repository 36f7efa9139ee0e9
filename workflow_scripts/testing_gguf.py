"""Tiny GGUF files written locally with the ``gguf`` package's writer, for tests.

A tiny Llama (random weights) and a byte-level BPE tokenizer (GPT-2's kind, trained on the
toy word list) are written as llama.cpp's ``convert_hf_to_gguf.py`` writes a Llama: its
hyper-parameters under ``llama.*``, the tokenizer under ``tokenizer.ggml.*`` (model
``gpt2``, tokens, token types, merges, special token ids, chat template), tensors under
GGUF names with the query and key rows permuted (llama.cpp's ``LlamaModel.permute``, which
transformers' ``LlamaTensorProcessor`` undoes), the 2-D weights in a quantised type when
asked (``gguf.quants.quantize``), norms in F32.  Imports ``gguf`` and ``tokenizers`` only
inside its functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .testing import WORDS, tiny_config

SPECIAL = "<|endoftext|>"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")


def bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer (GPT2TokenizerFast) trained on the toy words; token 0 is
    ``<|endoftext|>`` (BOS, EOS and padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    tok.train_from_iterator(text, trainer)
    return GPT2TokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL,
                             unk_token=SPECIAL, pad_token=SPECIAL)


def tiny_llama(vocab_size: int, seed: int = 0, **overrides):
    """A random LlamaForCausalLM whose widths are whole Q8_0 blocks (32 values)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config("llama", hidden=64, heads=4, intermediate=128, vocab_size=vocab_size,
                         **{"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, **overrides})
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms away from 1, so that a norm read wrongly shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` of query (and key) rows."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """The model's tensors under their GGUF names, query and key rows permuted, float32."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out = {}
    for name, tensor in model.state_dict().items():
        base, suffix = name.rsplit(".", 1)
        data = tensor.detach().float().numpy()
        if base.endswith("q_proj"):
            data = permute(data, config.num_attention_heads, config.num_attention_heads)
        elif base.endswith("k_proj"):
            data = permute(data, config.num_attention_heads, config.num_key_value_heads)
        out[f"{names.get_name(base)}.{suffix}"] = np.ascontiguousarray(data)
    return out


def _metadata(writer, config, tokenizer, name: str, tokenizer_model: str) -> None:
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    if tokenizer is None:
        return
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token == SPECIAL else 1 for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m)
                             for m in state["model"]["merges"]])
    special = tokenizer.convert_tokens_to_ids(SPECIAL)
    writer.add_bos_token_id(special)
    writer.add_eos_token_id(special)
    writer.add_pad_token_id(special)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_gguf(path: str | Path, model, tokenizer, quant: str = "F32", *,
               architecture: str = "llama", name: str = "tiny-llama",
               tokenizer_model: str = "gpt2") -> Path:
    """Write ``model`` and ``tokenizer`` (None: no tokenizer metadata) as a GGUF file; its
    2-D weights in ``quant`` (F32, F16, Q8_0, ...), the rest in F32."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    writer = gguf.GGUFWriter(str(path), architecture)
    _metadata(writer, model.config, tokenizer, name, tokenizer_model)
    for gguf_name, data in gguf_tensors(model).items():
        if data.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def round_trip(model, quant: str):
    """A copy of ``model`` whose 2-D weights went through ``quant`` and back (the gguf
    package's own quantise and dequantise): what a GGUF of that type holds."""
    import copy

    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    out = copy.deepcopy(model)
    with torch.no_grad():
        for _, p in out.named_parameters():
            if p.ndim == 2:
                data = p.detach().float().numpy()
                back = gguf.quants.dequantize(gguf.quants.quantize(data, qtype), qtype)
                p.copy_(torch.from_numpy(np.asarray(back, dtype=np.float32).reshape(p.shape)))
    return out
