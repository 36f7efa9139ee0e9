"""The one place that knows transformer architectures.

Everything the engine needs to know about a model family lives here, as data:
where the attention heads and FFN neurons are (for the mask hooks), how each
body parameter is laid out (which role every block of its rows belongs to,
which of its axes are indexed by heads or neurons: for the mask merge
schemes), how an example's attention mask is presented to a vmapped forward
pass (full Fisher), and which module of the task head holds one row per label
(for label mappings).  Scripts never spell module names themselves; they ask
this package.

Supported families and their units (see docs/architectures.md):

=========================  ==============================  ===============================
model types                head h (mask on the input of)   neuron r
=========================  ==============================  ===============================
bert roberta electra       attention.output.dense          intermediate.dense row r
distilbert                 attention.out_lin               ffn.lin1 row r
deberta-v2 (v2, v3)        attention.output.dense          intermediate.dense row r
modernbert                 attn.Wo                         mlp.Wi row r of each half
gpt2                       attn.c_proj (Conv1D)            mlp.c_fc column r (Conv1D)
llama qwen2 mistral        self_attn.o_proj (query heads)  gate_proj and up_proj row r
=========================  ==============================  ===============================

``layout``: the vocabulary (roles, units, module kinds) and the dataclasses of a
layout; ``table``: the layouts of the supported model types; ``access``: what the
engine asks of a model, config or parameter name.  Torch is imported only inside the
functions that take a model.
"""

from __future__ import annotations

from ..errors import UnsupportedArchitectureError
from .access import *  # noqa: F401,F403
from .access import __all__ as _access
from .layout import *  # noqa: F401,F403
from .layout import __all__ as _layout
from .table import SPECS, SUPPORTED

__all__ = [*_layout, *_access, "SPECS", "SUPPORTED", "UnsupportedArchitectureError"]
