"""What a GGUF file must be for this tool, told from its header alone (no torch)."""

from __future__ import annotations

from .. import architectures
from ..errors import UserError
from .header import GGUFHeader

# GGUF architecture names that are not the transformers model type of the same model
MODEL_TYPES = {"command-r": "cohere", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe",
               "gpt-oss": "gpt_oss", "gemma3": "gemma3_text"}


def model_type(header: GGUFHeader) -> str:
    """The transformers model type of a GGUF's architecture (Mistral's GGUFs say llama)."""
    return MODEL_TYPES.get(header.architecture, header.architecture)


def check_architecture(header: GGUFHeader) -> str:
    """The model type of ``header``'s model; one the engine does not know is a UserError."""
    kind = model_type(header)
    if kind not in architectures.SPECS or not architectures.SPECS[kind].lm_head:
        known = [t for t, s in sorted(architectures.SPECS.items()) if s.lm_head]
        raise UserError(
            f"GGUF file {header.path} holds a {header.architecture!r} model, an architecture "
            f"this tool cannot merge as a causal language model (it knows {', '.join(known)}); "
            "give a GGUF of one of those, or a Hugging Face checkpoint directory")
    return kind
