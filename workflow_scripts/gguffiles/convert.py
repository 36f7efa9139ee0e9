"""A GGUF file dequantised into a plain Hugging Face checkpoint (``fetch-model``'s GGUF source).

transformers reads the file (``from_pretrained(..., gguf_file=...)`` with
``GgufConfig(dequantize=True)``): every tensor is dequantised to floats and cast to the
requested dtype, the tokenizer and its chat template are rebuilt from the file's metadata.
The checkpoint is written with ``save_pretrained`` (safetensors, config, generation config,
tokenizer), a model card ``README.md`` and ``source.json`` naming the GGUF file, its sha256
and its quantisation types.  It holds the *dequantised quantised* model: each quantised
tensor keeps its rounding error, so it is not the model its authors released.

Memory: transformers holds every dequantised tensor and then the model built from them,
about two copies of the model in ``dtype`` at the peak (measured on SmolLM2-135M in
float32, 538 MB of weights: 1.2 GB peak resident), plus one float32 tensor being
dequantised; the GGUF file itself is memory-mapped.

Only the file is read: transformers is pointed at a temporary directory holding nothing but
a link to it, so no ``config.json`` or tokenizer files beside it are taken.  Everything that
can be told before the work (the file is GGUF and complete, its architecture, the libraries,
whether transformers can dequantise it and rebuild its tokenizer) is checked first.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tempfile
from pathlib import Path

from ..errors import UserError
from ..io import sha256_file
from .card import model_card
from .checks import check_architecture
from .header import GGUFError, GGUFHeader, read_header

EXTRA = "gguf"  # pyproject's optional extra: the gguf and accelerate packages
LIBRARIES = ("gguf", "accelerate")
LINK = "model.gguf"


def require_libraries(path: Path) -> None:
    """The packages transformers needs to read a GGUF; missing ones are a UserError naming
    the extra that installs them."""
    missing = []
    for name in LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f"{path} is a GGUF file: dequantising it needs the {' and '.join(missing)} "
            f"package{'s' if len(missing) > 1 else ''} (not installed); install the "
            f"project's {EXTRA} extra (pip install 'fisher-mask-merging[{EXTRA}]', or pip "
            f"install {' '.join(LIBRARIES)})")


def check_transformers(header: GGUFHeader) -> None:
    """transformers can dequantise this architecture and rebuild this tokenizer (from its own
    tables, where this version has them; else its errors are caught when loading)."""
    import transformers

    version = transformers.__version__
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        GGUF_SUPPORTED_ARCHITECTURES = None
    if GGUF_SUPPORTED_ARCHITECTURES is not None and header.architecture not in set(
            GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}:
        raise GGUFError(
            f"GGUF file {header.path} holds a {header.architecture!r} model, which transformers "
            f"{version} cannot dequantise; give a GGUF of an architecture it reads, or the "
            "model as a Hugging Face checkpoint directory")
    kind = header.tokenizer_model
    if kind is None or not isinstance(header.metadata.get("tokenizer.ggml.tokens"), int):
        raise GGUFError(
            f"GGUF file {header.path} holds no tokenizer (no tokenizer.ggml.model and "
            "tokenizer.ggml.tokens in its metadata); give a GGUF written with its tokenizer")
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_TYPES
    except ImportError:
        return
    if kind not in GGUF_TOKENIZER_TYPES:
        raise GGUFError(_tokenizer_error(header, f"it is of type {kind!r}; transformers "
                                         f"{version} rebuilds {', '.join(GGUF_TOKENIZER_TYPES)}"))


def _tokenizer_error(header: GGUFHeader, why: str) -> str:
    return (f"GGUF file {header.path}: its tokenizer cannot be rebuilt ({why}); give a GGUF "
            "whose tokenizer transformers can rebuild, or the model as a Hugging Face checkpoint "
            "directory with its tokenizer files")


def load(header: GGUFHeader, dtype: str):
    """(model, tokenizer) dequantised from the file in ``dtype``, read through a directory
    holding nothing but a link to it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with tempfile.TemporaryDirectory(prefix="gguf-") as view:
        (Path(view) / LINK).symlink_to(header.path.resolve())
        try:
            tokenizer = AutoTokenizer.from_pretrained(view, gguf_file=LINK)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise GGUFError(_tokenizer_error(header, f"{type(exc).__name__}: {exc}")) from None
        try:
            model = AutoModelForCausalLM.from_pretrained(
                view, gguf_file=LINK, dtype=getattr(torch, dtype),
                quantization_config=GgufConfig(dequantize=True))
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise GGUFError(f"transformers cannot dequantise GGUF file {header.path}: "
                            f"{type(exc).__name__}: {exc}") from None
    model.eval()
    return model, tokenizer


def describe_model(model, tokenizer, header: GGUFHeader, dtype: str) -> dict:
    """The provenance record's ``dequantised`` entry; non-finite weights, a model type the
    engine does not know, or a tokenizer larger than the embedding are GGUFErrors."""
    import torch
    import transformers

    from .. import architectures

    try:
        architectures.spec_for(model.config)
    except UserError as exc:
        raise GGUFError(f"GGUF file {header.path}: {exc}") from None
    seen, count = set(), 0
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # tied weights are one tensor
            continue
        seen.add(id(tensor))
        count += tensor.numel()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise GGUFError(f"GGUF file {header.path}: {name} dequantises to NaN or infinite "
                            "values; the file is damaged")
    if len(tokenizer) > model.config.vocab_size:
        raise GGUFError(f"GGUF file {header.path}: its tokenizer has {len(tokenizer)} tokens "
                        f"but its embedding {model.config.vocab_size} rows")
    return {"dtype": dtype, "model_type": model.config.model_type,
            "architectures": [type(model).__name__], "parameters": count,
            "transformers": transformers.__version__,
            "gguf": importlib.metadata.version("gguf")}


def gguf_record(header: GGUFHeader) -> dict:
    """What the provenance record says of the file."""
    return {
        "file": str(header.path), "name": header.path.name, "sha256": sha256_file(header.path),
        "bytes": header.file_size, "version": header.version,
        "architecture": header.architecture, "model_name": header.name,
        "quantisation": list(header.quantisation()), "tensor_types": header.type_counts(),
        "parameters_by_type": header.type_parameters(),
    }


def prepare(path: Path) -> GGUFHeader:
    """The file's header, after every check that needs no conversion: a GGUF file, complete,
    of an architecture this tool and transformers know, with a tokenizer it can rebuild, and
    the libraries installed."""
    header = read_header(path)
    check_architecture(header)
    require_libraries(path)
    check_transformers(header)
    return header


def write(model, tokenizer, record: dict, directory: Path) -> None:
    """The checkpoint (``save_pretrained``'s layout), its tokenizer and its model card."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "README.md").write_text(model_card(record))
