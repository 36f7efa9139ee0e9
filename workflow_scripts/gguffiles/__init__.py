"""GGUF model sources: a ``.gguf`` file (local, or ``python-package:PKG/FILE.gguf``) given
as a family's base or a checkpoint is dequantised into a plain checkpoint by ``fetch-model``.

``header``: the file's metadata and tensor table, read with the standard library;
``checks``: what a GGUF must be for this tool (its architecture); ``sources``: the config
check of GGUF sources (before any job); ``convert``: the dequantisation through
transformers; ``card``: the model card of the result.
"""
