"""Fused decoding for the GPU runtime: the WAM's decoder layers with the fused kernels plugged in.

``fuse_decoder(model)`` wraps every ``WamDecoderLayer`` so that a one-token decode step is a short chain of
kernels, each reading its weights once: RMSNorm, one projection for q/k/v (their weights stacked by rows),
rotary embedding + KV-cache write, decode attention, the output projection, residual add + RMSNorm, one
projection for gate/up, SiLU x up, the down projection with the residual add in its epilogue; the final norm
is one kernel too. With ``QuantizedLinear`` the projections are the fused dequant + GEMV kernels. Prefill
(several tokens) keeps the layer's own path. Kernel selection stays automatic: on CPU the wrapped layers
compute with the torch references. Fusing is a runtime transform: ``.to``/``.cuda``/``.half`` of a fused
model keep one copy of the stacked weights (the originals are re-pointed at their rows), but do not save a
fused model (the stacked weights and the layers' row slices of them share storage).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..models.wam.modeling_wam import WamDecoderLayer, WamRMSNorm, apply_rotary_pos_emb
from . import kernels
from .quantize import QuantizedLinear


class RowStack(nn.Module):
    """Linears that read the same input, computed as one: ``forward`` returns their outputs concatenated.
    Layers of one kind (``nn.Linear``, or ``QuantizedLinear`` of one precision and group size) are stacked by
    rows into one layer, and each original is re-pointed at its row slice, so nothing is stored twice (also
    after ``.to``/``.cuda``/``.half`` of the fused model, which re-point them again); other mixes run one
    by one."""

    def __init__(self, linears: list[nn.Module]) -> None:
        super().__init__()
        self.stacked = _stack(linears)
        self.parts = nn.ModuleList(linears) if self.stacked is None else None
        self._originals = list(linears)  # not submodules: their owners (the decoder layer) hold and save them
        self.relink()

    def forward(self, x: Tensor) -> Tensor:
        if self.stacked is not None:
            return self.stacked(x)
        return torch.cat([part(x) for part in self.parts], -1)  # type: ignore[union-attr]

    def relink(self) -> None:
        """Point each original's tensors at its row slice of the stacked ones (drops any separate copy)."""
        if self.stacked is None:
            return
        for name in _TENSORS[type(self.stacked)]:
            whole = getattr(self.stacked, name, None)
            if whole is None:
                continue
            start = 0
            for m in self._originals:
                _assign(m, name, whole.detach()[start : start + m.out_features])
                start += m.out_features


_TENSORS: dict[type, list[str]] = {QuantizedLinear: ["qweight", "scale", "zero", "bias"], nn.Linear: ["weight", "bias"]}


def _kind(module: nn.Module) -> tuple | None:
    """What must agree for layers to stack: class, input width, bias, and precision/group size if quantized."""
    if type(module) is nn.Linear:
        return (nn.Linear, module.in_features, module.bias is None)
    if type(module) is QuantizedLinear:
        return (QuantizedLinear, module.in_features, module.bias is None, module.precision, module.group_size)
    return None


def _stack(linears: list[nn.Module]) -> nn.Module | None:
    """One layer holding the rows of ``linears`` (concatenated copies), or None when they do not stack."""
    first = linears[0]
    if _kind(first) is None or any(_kind(m) != _kind(first) for m in linears):
        return None
    total = sum(m.out_features for m in linears)
    if isinstance(first, QuantizedLinear):
        stacked: nn.Module = QuantizedLinear(first.in_features, total, first.precision, first.group_size, first.bias is not None)
    else:
        stacked = nn.Linear(first.in_features, total, bias=first.bias is not None, device="meta")
    for name in _TENSORS[type(stacked)]:
        if getattr(first, name, None) is not None:
            _assign(stacked, name, torch.cat([getattr(m, name).detach() for m in linears]))
    return stacked


def _assign(module: nn.Module, name: str, tensor: Tensor) -> None:
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[name] = tensor


class FusedDecoderLayer(nn.Module):
    """A ``WamDecoderLayer`` (its weights, shared) decoding one token through the fused kernels. A cache with
    ``in_place`` set (the fixed-size slot cache of ``LoopStepGraph``) gets the new key/value written by the
    rotary kernel; any other cache is updated through its ``update``."""

    def __init__(self, layer: WamDecoderLayer) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.layer = layer
        self.qkv = RowStack([attn.q_proj, attn.k_proj, attn.v_proj])
        self.gate_up = RowStack([mlp.gate_proj, mlp.up_proj])

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FusedDecoderLayer:
        """``.to``/``.cuda``/``.half`` convert the originals and the stacked copies one by one; point the
        originals back at the stacked rows so the model keeps one copy."""
        out = super()._apply(fn, recurse)
        self.qkv.relink()
        self.gate_up.relink()
        return out

    def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor], attention_mask: Tensor, cache: object = None) -> Tensor:
        layer, attn = self.layer, self.layer.self_attn
        B, L, _ = hidden_states.shape
        if cache is None or L != 1:
            x = layer.input_layernorm(hidden_states)
            normed, h = kernels.add_rmsnorm(attn(x, position_embeddings, attention_mask, cache), hidden_states, *_norm(layer.post_attention_layernorm))
            return h + layer.mlp(normed)
        x = kernels.rmsnorm(hidden_states, *_norm(layer.input_layernorm))
        width = attn.num_heads * attn.head_dim
        q, k, v = (t.view(B, attn.num_heads, attn.head_dim) for t in self.qkv(x)[:, 0].split(width, -1))
        cos, sin = position_embeddings
        if getattr(cache, "in_place", False):
            keys, values = cache.keys[attn.layer_idx], cache.values[attn.layer_idx]  # type: ignore[attr-defined]
            q = kernels.rope_cache(q, k, v, cos[:, 0], sin[:, 0], keys, values, cache.slot)  # type: ignore[attr-defined]
        else:
            q4, k4 = apply_rotary_pos_emb(q[:, :, None], k[:, :, None], cos, sin)
            keys, values = cache.update(k4, v[:, :, None], attn.layer_idx)  # type: ignore[attr-defined]
            q = q4[:, :, 0]
        out = kernels.decode_attention(q, keys, values, attention_mask[:, 0, -1, :])
        normed, h = kernels.add_rmsnorm(attn.o_proj(out.reshape(B, 1, -1)), hidden_states, *_norm(layer.post_attention_layernorm))
        return _plus_linear(layer.mlp.down_proj, kernels.silu_mul(self.gate_up(normed)), h)


def _plus_linear(linear: nn.Module, x: Tensor, residual: Tensor) -> Tensor:
    """``residual + linear(x)`` with the add in the projection's epilogue where the layer allows (one kernel
    on CUDA: the quantized GEMV, or ``addmm`` for a float Linear); any other module adds separately."""
    if isinstance(linear, QuantizedLinear):
        return linear(x, residual)
    if type(linear) is nn.Linear:
        return kernels.linear(x, linear.weight, linear.bias, residual)
    return residual + linear(x)


def _norm(norm: nn.Module) -> tuple[Tensor, float]:
    return norm.weight, norm.eps  # type: ignore[return-value]


class FusedRMSNorm(nn.Module):
    """A ``WamRMSNorm`` (its weight, shared) as one kernel: the trunk's final norm, which a decode step runs
    before the action head."""

    def __init__(self, norm: WamRMSNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return kernels.rmsnorm(x, *_norm(self.norm))


def fuse_decoder(model: nn.Module) -> nn.Module:
    """Wrap the decoder layers and the final norm of a ``WamForActionPrediction`` (or ``WamModel``) in place;
    returns the model."""
    trunk = getattr(model, "model", model)
    for i, layer in enumerate(trunk.layers):
        if isinstance(layer, WamDecoderLayer):
            trunk.layers[i] = FusedDecoderLayer(layer)
    if isinstance(trunk.norm, WamRMSNorm):
        trunk.norm = FusedRMSNorm(trunk.norm)
    return model
