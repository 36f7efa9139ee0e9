"""Hooks and contexts the Fisher estimators put on a model while they run.

:func:`mask_hooks` installs the multiplicative head and neuron masks (forward
hooks: transformers 5 has no ``head_mask`` argument) whose gradients are the
mask Fisher; :func:`frozen_parameters`, :func:`eval_mode` and
:func:`attn_implementation` change a model's state for the duration of a
computation and restore it after.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .. import architectures as arch
from .kinds import NEURON_MASKS, check_choice


def _check_mask(mask: torch.Tensor, layers: int, width: int, what: str) -> None:
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (layers, width):
        raise ValueError(
            f"{what} mask must have shape [layers, {width}] or [batch, layers, {width}] "
            f"with layers={layers}; got {tuple(mask.shape)}"
        )


def _per_token(mask_l: torch.Tensor, x: torch.Tensor, trailing: int) -> torch.Tensor:
    """Broadcast one layer's mask ([width] or [batch, width]) against ``x``.

    ``trailing`` singleton dimensions follow the width (1 for heads: head_dim).
    """
    if mask_l.dim() == 1:
        return mask_l.view(*mask_l.shape, *([1] * trailing))
    # [batch, width] -> [batch, 1 (tokens...), width, 1...]
    middle = x.dim() - 1 - 1 - trailing  # dims of x between batch and width
    return mask_l.view(mask_l.shape[0], *([1] * middle), mask_l.shape[1], *([1] * trailing))


class _UnitMask(torch.autograd.Function):
    """``y = m * (x - c) + c`` where ``m`` is known to be all ones (so ``y == x``).

    The forward pass costs nothing and the backward pass passes the gradient
    of ``x`` through untouched; only the mask's own gradient,
    ``sum (dL/dy) * (x - c)`` over the dimensions ``m`` is broadcast along, is
    computed.  At ``m == 1`` the gradient with respect to ``c`` is zero.
    """

    @staticmethod
    def forward(ctx, x, m, center):
        ctx.save_for_backward(x, center)
        ctx.mask_shape = m.shape
        return x.view_as(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, center = ctx.saved_tensors
        grad_m = None
        if ctx.needs_input_grad[1]:
            value = x if center is None else x - center
            grad_m = (grad * value).sum_to_size(ctx.mask_shape)
        return grad if ctx.needs_input_grad[0] else None, grad_m, None


def _apply(x: torch.Tensor, m: torch.Tensor, ones: bool, center: torch.Tensor | None = None):
    """``m * (x - c) + c`` (``m`` already broadcastable against ``x``)."""
    if ones:
        return _UnitMask.apply(x, m, center)
    if center is None:
        return x * m
    return m * (x - center) + center


def _all_ones(mask: torch.Tensor) -> bool:
    with torch.no_grad():
        return bool((mask == 1).all())


@contextlib.contextmanager
def mask_hooks(
    model: nn.Module,
    head_mask: torch.Tensor | None = None,
    neuron_mask: torch.Tensor | None = None,
    *,
    neuron_position: str = "post-activation",
):
    """Install multiplicative head and neuron masks on ``model`` while inside.

    ``head_mask``: ``[layers, heads]`` (shared by every example) or
    ``[batch, layers, heads]`` (one mask per example); it scales each head's
    attention output before the attention output projection, through a
    forward pre-hook on that projection (its input reshaped to
    ``[batch, tokens, heads, head_dim]``).

    ``neuron_mask``: ``[layers, intermediate]`` or ``[batch, layers, intermediate]``.
    ``neuron_position="post-activation"`` scales the input of the FFN output
    projection (released code); ``"pre-activation"`` scales the FFN input
    projection's output before its bias, ``act(m * W1 x + b1)`` (Eq. 2),
    through a forward hook returning ``m * (out - b1) + b1``.  In a gated FFN,
    ``W2 (act(W_g x) * W_u x)``, the pre-activation mask scales the gate's
    pre-activation only, ``act(m * W_g x + b_g) * (W_u x + b_u)`` (the block of
    the FFN input projection that goes through the activation:
    ``ArchSpec.ffn_act_block``); the post-activation mask scales the product.

    Masks are used as given (usually ones with ``requires_grad=True``); the
    gradient of a loss with respect to them is the mask gradient.  A mask of
    exactly ones (checked on entry; do not change the values inside) takes a
    fast path with the same gradients: no multiplication in the forward pass
    and none on the activations' gradients in the backward pass.
    """
    check_choice("neuron_position", neuron_position, NEURON_MASKS)
    d = arch.dims(model)
    handles = []
    try:
        if head_mask is not None:
            _check_mask(head_mask, d.layers, d.heads, "head")
            heads, head_ones = d.heads, _all_ones(head_mask)
            for l, proj in enumerate(arch.head_out_projections(model)):

                def pre_hook(module, args, l=l):
                    x = args[0]
                    m = head_mask[l] if head_mask.dim() == 2 else head_mask[:, l]
                    split = x.view(*x.shape[:-1], heads, x.shape[-1] // heads)
                    scaled = _apply(split, _per_token(m, split, 1), head_ones).view(x.shape)
                    return (scaled, *args[1:])

                handles.append(proj.register_forward_pre_hook(pre_hook))
        if neuron_mask is not None:
            _check_mask(neuron_mask, d.layers, d.intermediate, "neuron")
            neuron_ones = _all_ones(neuron_mask)
            if neuron_position == "post-activation":
                for l, proj in enumerate(arch.ffn_outputs(model)):

                    def post_act_hook(module, args, l=l):
                        x = args[0]
                        m = neuron_mask[l] if neuron_mask.dim() == 2 else neuron_mask[:, l]
                        return (_apply(x, _per_token(m, x, 0), neuron_ones), *args[1:])

                    handles.append(proj.register_forward_pre_hook(post_act_hook))
            else:
                spec = arch.spec_for(model)
                blocks, act = spec.ffn_in_blocks, spec.ffn_act_block
                for l, proj in enumerate(arch.ffn_inputs(model)):

                    def pre_act_hook(module, args, out, l=l):
                        m = neuron_mask[l] if neuron_mask.dim() == 2 else neuron_mask[:, l]
                        if blocks == 1:
                            return _apply(out, _per_token(m, out, 0), neuron_ones, module.bias)
                        # gated FFN: only the activated block is the pre-activation
                        parts = list(out.chunk(blocks, dim=-1))
                        bias = None if module.bias is None else module.bias.chunk(blocks)[act]
                        x = parts[act]
                        parts[act] = _apply(x, _per_token(m, x, 0), neuron_ones, bias)
                        return torch.cat(parts, dim=-1)

                    handles.append(proj.register_forward_hook(pre_act_hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """Set ``requires_grad=False`` on every parameter while inside; restore after."""
    params = list(model.parameters())
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` while inside (no dropout); the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def attn_implementation(model: nn.Module, name: str | None):
    """Temporarily switch the model's attention implementation (e.g. ``"eager"``)."""
    current = getattr(model.config, "_attn_implementation", None)
    if name is None or name == current:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(current)
