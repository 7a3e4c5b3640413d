"""Fused kernels with automatic selection: Triton on CUDA tensors, the pure-torch reference elsewhere.

``EMBODYHUB_KERNELS=torch`` forces the reference everywhere (``triton`` forces Triton, e.g. with
``TRITON_INTERPRET=1`` on CPU). Tracing for ONNX always takes the reference path, so the exported
graph is made of standard operators. A machine without an importable Triton falls back silently.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import torch
from torch import Tensor

from . import reference

__all__ = [
    "add_rmsnorm", "backend", "decode_attention", "fp8_linear", "greedy_advance", "int4_linear", "int8_linear", "linear", "reference", "rmsnorm",
    "rope_cache", "silu_mul", "step_inputs", "triton_module",
]


@functools.lru_cache(maxsize=1)
def triton_module() -> ModuleType | None:
    """The Triton kernel module, or None when Triton cannot be imported here."""
    try:
        from . import triton_kernels
    except Exception:  # noqa: BLE001  (no triton for this platform, or a broken install: use the reference)
        return None
    return triton_kernels


def backend(x: Tensor) -> str:
    """``"triton"`` or ``"torch"`` for an input tensor (device, tracing state, override, availability)."""
    forced = os.environ.get("EMBODYHUB_KERNELS", "").lower()
    if forced == "torch" or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return "torch"
    if (forced == "triton" or x.is_cuda) and triton_module() is not None:
        return "triton"
    return "torch"


def _impl(x: Tensor) -> ModuleType:
    return triton_module() if backend(x) == "triton" else reference  # type: ignore[return-value]


def int8_linear(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """int8 weight-only linear (per-channel scales), ``+ residual`` if given."""
    return _impl(x).int8_linear(x, qweight, scale, bias, residual)


def int4_linear(
    x: Tensor, qweight: Tensor, scale: Tensor, zero: Tensor, group_size: int, bias: Tensor | None = None, residual: Tensor | None = None
) -> Tensor:
    """int4 weight-only linear (group-wise scale and integer zero point), ``+ residual`` if given."""
    return _impl(x).int4_linear(x, qweight, scale, zero, group_size, bias, residual)


def fp8_linear(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """fp8 (e4m3) weight-only linear: dequantize then matmul (no Triton kernel yet; TensorRT fuses it on Thor)."""
    return reference.fp8_linear(x, qweight, scale, bias, residual)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """A float Linear, ``+ residual`` if given (in the GEMM's epilogue on CUDA)."""
    return _impl(x).linear(x, weight, bias, residual)


def rmsnorm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm (``WamRMSNorm``'s arithmetic)."""
    return _impl(x).rmsnorm(x, weight, eps)


def add_rmsnorm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Residual add + RMSNorm -> ``(normed, h)``."""
    return _impl(x).add_rmsnorm(x, residual, weight, eps)


def rope_cache(q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor, keys: Tensor, values: Tensor, slot: Tensor) -> Tensor:
    """Rotary embedding of one decode token's query and key, key and value written into the cache at ``slot``."""
    return _impl(q).rope_cache(q, k, v, cos, sin, keys, values, slot)


def silu_mul(gate_up: Tensor) -> Tensor:
    """``silu(gate) * up`` from the stacked gate/up projections ``[..., 2I]``."""
    return _impl(gate_up).silu_mul(gate_up)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float | None = None) -> Tensor:
    """One query per head over a KV cache -> ``[B, H, D]``."""
    return _impl(q).decode_attention(q, k, v, valid, scale)


def step_inputs(
    token: Tensor, i: Tensor, embed: Tensor, slot_embeds: Tensor, cos: Tensor, sin: Tensor, causal: Tensor, prefill_mask: Tensor,
    first_slot: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A fixed-schedule decode step's ``(hidden, cos, sin, key mask, cache slot)`` from per-step tables."""
    return _impl(embed).step_inputs(token, i, embed, slot_embeds, cos, sin, causal, prefill_mask, first_slot)


def greedy_advance(logits: Tensor, bins: int, token: Tensor, tokens: Tensor, i: Tensor) -> None:
    """Greedy token into ``token`` and column ``i + 1`` of ``tokens``, then ``i += 1`` (in place)."""
    _impl(logits).greedy_advance(logits, bins, token, tokens, i)
