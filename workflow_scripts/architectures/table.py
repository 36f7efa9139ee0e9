"""The supported architectures, as data: one :class:`.layout.ArchSpec` per model type."""

from __future__ import annotations

from .layout import (
    ATTN_OUT, CONV1D, FFN_IN, FFN_OUT, GLOBAL, HEAD, KV_HEAD, NEURON, QK, VALUE, ArchSpec, Block,
    Module, lin, other,
)

# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #

_BERT_LIKE = dict(
    layer_list="encoder.layer",
    head_out_proj="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    modules=(
        lin(r"attention\.self\.(query|key)", QK, HEAD),
        lin(r"attention\.self\.value", VALUE, HEAD),
        lin(r"attention\.output\.dense", ATTN_OUT, in_unit=HEAD),
        other(r"attention\.output\.LayerNorm", ATTN_OUT),
        lin(r"intermediate\.dense", FFN_IN, NEURON),
        lin(r"output\.dense", FFN_OUT, in_unit=NEURON),
        other(r"output\.LayerNorm", FFN_OUT),
    ),
    global_patterns=(r"embeddings\..+", r"pooler\..+", r"embeddings_project\..+"),
)

# Llama and the families sharing its layout: separate q/k/v/o projections with
# grouped-query attention (k_proj, v_proj rows are key/value heads), a gated
# SiLU FFN: down_proj(silu(gate_proj x) * up_proj x).
_LLAMA_LIKE = dict(
    layer_list="layers",
    head_out_proj="self_attn.o_proj",
    ffn_in="mlp.gate_proj",
    ffn_out="mlp.down_proj",
    label_rows="score",
    modules=(
        lin(r"self_attn\.q_proj", QK, HEAD),
        lin(r"self_attn\.k_proj", QK, KV_HEAD),
        lin(r"self_attn\.v_proj", VALUE, KV_HEAD),
        lin(r"self_attn\.o_proj", ATTN_OUT, in_unit=HEAD),
        other(r"input_layernorm", ATTN_OUT),
        lin(r"mlp\.(gate_proj|up_proj)", FFN_IN, NEURON),
        lin(r"mlp\.down_proj", FFN_OUT, in_unit=NEURON),
        other(r"post_attention_layernorm", FFN_OUT),
    ),
    global_patterns=(r"embed_tokens\..+", r"norm\..+"),
    full_fisher_mask="causal",
    position_ids_from_mask=True,
    config_kv_heads="num_key_value_heads",
    lm_head="lm_head",
)

SPECS: dict[str, ArchSpec] = {
    "bert": ArchSpec(model_type="bert", label_rows="classifier", **_BERT_LIKE),
    "roberta": ArchSpec(
        model_type="roberta", label_rows="classifier.out_proj", **_BERT_LIKE
    ),
    "electra": ArchSpec(
        model_type="electra", label_rows="classifier.out_proj", **_BERT_LIKE
    ),
    "distilbert": ArchSpec(
        model_type="distilbert",
        layer_list="transformer.layer",
        head_out_proj="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        label_rows="classifier",
        modules=(
            lin(r"attention\.(q_lin|k_lin)", QK, HEAD),
            lin(r"attention\.v_lin", VALUE, HEAD),
            lin(r"attention\.out_lin", ATTN_OUT, in_unit=HEAD),
            other(r"sa_layer_norm", ATTN_OUT),
            lin(r"ffn\.lin1", FFN_IN, NEURON),
            lin(r"ffn\.lin2", FFN_OUT, in_unit=NEURON),
            other(r"output_layer_norm", FFN_OUT),
        ),
        global_patterns=(r"embeddings\..+",),
        config_layers="n_layers",
        config_heads="n_heads",
        config_intermediate="hidden_dim",
        config_hidden="dim",
    ),
    # DeBERTa v2/v3: disentangled attention; the relative-position projections
    # (absent with share_att_key) and tables are GLOBAL; ContextPooler is part
    # of the task head (outside base_model).
    "deberta-v2": ArchSpec(
        model_type="deberta-v2",
        layer_list="encoder.layer",
        head_out_proj="attention.output.dense",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        label_rows="classifier",
        modules=(
            lin(r"attention\.self\.(query_proj|key_proj)", QK, HEAD),
            lin(r"attention\.self\.value_proj", VALUE, HEAD),
            lin(r"attention\.self\.(pos_key_proj|pos_query_proj)", GLOBAL),
            lin(r"attention\.output\.dense", ATTN_OUT, in_unit=HEAD),
            other(r"attention\.output\.LayerNorm", ATTN_OUT),
            lin(r"intermediate\.dense", FFN_IN, NEURON),
            lin(r"output\.dense", FFN_OUT, in_unit=NEURON),
            other(r"output\.LayerNorm", FFN_OUT),
        ),
        global_patterns=(r"embeddings\..+", r"encoder\.rel_embeddings\..+",
                         r"encoder\.LayerNorm\..+", r"encoder\.conv\..+"),
        full_fisher_mask="binary",
    ),
    # ModernBERT: fused Wqkv (blocks q, k, v), gated FFN Wi = [input | gate]
    # with Wo(act(input) * gate): neuron r owns row r of each half.
    "modernbert": ArchSpec(
        model_type="modernbert",
        layer_list="layers",
        head_out_proj="attn.Wo",
        ffn_in="mlp.Wi",
        ffn_out="mlp.Wo",
        label_rows="classifier",
        modules=(
            Module(r"attn\.Wqkv", (Block(QK, HEAD), Block(QK, HEAD), Block(VALUE, HEAD))),
            lin(r"attn\.Wo", ATTN_OUT, in_unit=HEAD),
            other(r"attn_norm", ATTN_OUT),
            lin(r"mlp\.Wi", FFN_IN, NEURON, blocks=2),
            lin(r"mlp\.Wo", FFN_OUT, in_unit=NEURON),
            other(r"mlp_norm", FFN_OUT),
        ),
        global_patterns=(r"embeddings\..+", r"final_norm\..+"),
        ffn_in_blocks=2,
        ffn_act_block=0,
        full_fisher_mask="layer-types",
    ),
    # GPT-2: Conv1D (weights [in, out]), fused c_attn = [q | k | v] columns.
    "gpt2": ArchSpec(
        model_type="gpt2",
        layer_list="h",
        head_out_proj="attn.c_proj",
        ffn_in="mlp.c_fc",
        ffn_out="mlp.c_proj",
        label_rows="score",
        modules=(
            other(r"ln_1", ATTN_OUT),
            Module(r"attn\.c_attn", (Block(QK, HEAD), Block(QK, HEAD), Block(VALUE, HEAD)), CONV1D),
            lin(r"attn\.c_proj", ATTN_OUT, in_unit=HEAD, kind=CONV1D),
            other(r"ln_2", FFN_OUT),
            lin(r"mlp\.c_fc", FFN_IN, NEURON, kind=CONV1D),
            lin(r"mlp\.c_proj", FFN_OUT, in_unit=NEURON, kind=CONV1D),
        ),
        global_patterns=(r"wte\..+", r"wpe\..+", r"ln_f\..+"),
        full_fisher_mask="causal",
        position_ids_from_mask=True,
        lm_head="lm_head",
        config_layers="n_layer",
        config_heads="n_head",
        config_intermediate="n_inner",
        config_hidden="n_embd",
        intermediate_default=4,
    ),
    "llama": ArchSpec(model_type="llama", **_LLAMA_LIKE),
    "qwen2": ArchSpec(model_type="qwen2", **_LLAMA_LIKE),
    "mistral": ArchSpec(model_type="mistral", **_LLAMA_LIKE),
}
SUPPORTED = tuple(sorted(SPECS))
