"""Fisher-weighted merging of fine-tuned transformers: the core engine."""

__version__ = "0.1.0"
