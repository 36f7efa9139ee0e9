"""A byte-level BPE tokenizer trained offline and tiny random causal LMs, for the choice
tests and benchmark.  (The tests' WordPiece tokenizer appends ``[SEP]`` to every text, so a
continuation's tokens would end in it: no use for comparing choice scoring.)
"""

from __future__ import annotations

import random

from ..testing import WORDS

EXTRA = ("positive negative neutral superman supermarket superb answer review sentiment "
         "question choice true false entailment contradiction").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = list(WORDS) + EXTRA
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))).capitalize() + "."
            for _ in range(n)]


def make_bpe_tokenizer(vocab_size: int = 400, add_bos: bool = True):
    """A ``PreTrainedTokenizerFast`` with GPT-2's byte-level BPE scheme, trained on
    :func:`corpus`; ``add_bos``: a Llama-style ``<s>`` before every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left")


def make_causal_lm(model_type: str, tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2,
                   max_positions: int = 128):
    """A randomly initialised tiny ``llama`` (grouped-query attention) or ``gpt2`` causal LM
    over ``tokenizer``'s vocabulary, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if model_type == "llama":
        config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden + 5,
                             num_hidden_layers=layers, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=max_positions,
                             tie_word_embeddings=False, **ids)
    elif model_type == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_inner=2 * hidden + 5,
                            n_positions=max_positions, **ids)
    else:
        raise ValueError(f"no tiny causal LM of type {model_type!r} (llama, gpt2)")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # larger weights than the default init, so that choices' scores differ clearly
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


HARNESS_TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: prompt
doc_to_choice: choices
doc_to_target: answer
target_delimiter: "{delimiter}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def harness_task_yaml(name: str, path, delimiter: str = " ") -> str:
    """An lm-evaluation-harness task YAML scoring the choice rows of JSONL file ``path`` (a
    ``prompt``, its ``choices`` and the ``answer`` index) by acc and acc_norm."""
    return HARNESS_TASK_YAML.format(name=name, path=path, delimiter=delimiter)
