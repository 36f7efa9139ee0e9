"""The supported architectures, as data: one :class:`.layout.ArchSpec` per model type."""

from __future__ import annotations

from .layout import (
    ATTN_OUT, CONV1D, FFN_IN, FFN_OUT, GLOBAL, HEAD, KV_HEAD, NEURON, QK, VALUE, ArchSpec, Block,
    Module, lin, other,
)

# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #


def hooks(layer_list: str, head_out_proj: str, ffn_in: str, ffn_out: str) -> dict:
    """Where the mask hooks go: the layers' list, and in each layer the attention output
    projection (its input: the heads) and the FFN's input and output projections."""
    return dict(layer_list=layer_list, head_out_proj=head_out_proj, ffn_in=ffn_in,
                ffn_out=ffn_out)


def layer_modules(attention: tuple, ffn: tuple, kv_unit: str = HEAD) -> tuple[Module, ...]:
    """A layer's modules in the common form, from their patterns: ``attention`` (query, key
    (None: the query pattern covers both), value, output projection, its norm) and ``ffn``
    (input projection, output projection, its norm).  Query and key rows are QK by head,
    value rows VALUE (``kv_unit``: HEAD, or KV_HEAD with grouped-query attention), the
    output projection's columns by head; FFN-in rows by neuron, FFN-out columns by neuron;
    each norm goes with its block's output."""
    query, key, value, out, norm = attention
    ffn_in, ffn_out, ffn_norm = ffn
    keys = (lin(key, QK, kv_unit),) if key is not None else ()
    return ((lin(query, QK, HEAD),) + keys
            + (lin(value, VALUE, kv_unit), lin(out, ATTN_OUT, in_unit=HEAD), other(norm, ATTN_OUT),
               lin(ffn_in, FFN_IN, NEURON), lin(ffn_out, FFN_OUT, in_unit=NEURON),
               other(ffn_norm, FFN_OUT)))


_BERT_LIKE = dict(
    **hooks("encoder.layer", "attention.output.dense", "intermediate.dense", "output.dense"),
    modules=layer_modules(
        (r"attention\.self\.(query|key)", None, r"attention\.self\.value",
         r"attention\.output\.dense", r"attention\.output\.LayerNorm"),
        (r"intermediate\.dense", r"output\.dense", r"output\.LayerNorm")),
    global_patterns=(r"embeddings\..+", r"pooler\..+", r"embeddings_project\..+"),
)

# Llama and the families sharing its layout: separate q/k/v/o projections with
# grouped-query attention (k_proj, v_proj rows are key/value heads), a gated
# SiLU FFN: down_proj(silu(gate_proj x) * up_proj x).
_LLAMA_LIKE = dict(
    **hooks("layers", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"),
    label_rows="score",
    modules=layer_modules(
        (r"self_attn\.q_proj", r"self_attn\.k_proj", r"self_attn\.v_proj", r"self_attn\.o_proj",
         r"input_layernorm"),
        (r"mlp\.(gate_proj|up_proj)", r"mlp\.down_proj", r"post_attention_layernorm"), KV_HEAD),
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
        **hooks("transformer.layer", "attention.out_lin", "ffn.lin1", "ffn.lin2"),
        label_rows="classifier",
        modules=layer_modules(
            (r"attention\.(q_lin|k_lin)", None, r"attention\.v_lin", r"attention\.out_lin",
             r"sa_layer_norm"),
            (r"ffn\.lin1", r"ffn\.lin2", r"output_layer_norm")),
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
        **hooks("encoder.layer", "attention.output.dense", "intermediate.dense", "output.dense"),
        label_rows="classifier",
        modules=layer_modules(
            (r"attention\.self\.(query_proj|key_proj)", None, r"attention\.self\.value_proj",
             r"attention\.output\.dense", r"attention\.output\.LayerNorm"),
            (r"intermediate\.dense", r"output\.dense", r"output\.LayerNorm"))
        + (lin(r"attention\.self\.(pos_key_proj|pos_query_proj)", GLOBAL),),
        global_patterns=(r"embeddings\..+", r"encoder\.rel_embeddings\..+",
                         r"encoder\.LayerNorm\..+", r"encoder\.conv\..+"),
        full_fisher_mask="binary",
    ),
    # ModernBERT: fused Wqkv (blocks q, k, v), gated FFN Wi = [input | gate]
    # with Wo(act(input) * gate): neuron r owns row r of each half.
    "modernbert": ArchSpec(
        model_type="modernbert",
        **hooks("layers", "attn.Wo", "mlp.Wi", "mlp.Wo"),
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
        **hooks("h", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
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
