"""``causal-lm``: causal language models (``AutoModelForCausalLM``).

Trained with the mean next-token cross-entropy over an example's counted tokens (the loss
transformers computes from token ``labels``, -100 where a token does not count).  The whole
model is merged (embeddings and ``lm_head`` included; a tied ``lm_head`` once, with the
embeddings).  Its tasks are ``text`` tasks by default (:mod:`workflow_scripts.taskkinds.text`),
scored by their token loss; other task kinds of causal LMs name this objective.
"""

NAME = "causal-lm"
OBJECTIVE = dict(
    name=NAME,
    auto_class="AutoModelForCausalLM",
    # GPT-2's own head class is GPT2LMHeadModel
    architecture_suffixes=("ForCausalLM", "LMHeadModel"),
    pipeline_tag="text-generation",
    whole_model=True,
    task_kind="text",
    labels=False,
    decoders_only=True,
    description="causal language models: next-token loss, whole-model merges",
)
