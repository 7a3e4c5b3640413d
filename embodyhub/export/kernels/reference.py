"""Pure-torch reference kernels: the CPU path, the ONNX-traced path, and the ground truth the Triton
kernels are tested against. Each function states the exact arithmetic the fused kernel must match.

Weight layouts (produced by ``embodyhub.export.quantize``):

- int8: ``qweight`` int8 ``[N, K]``, ``scale`` float32 ``[N]``; ``w = q * scale`` (symmetric, per output channel).
- int4: ``qweight`` uint8 ``[N, ceil(K / 2)]``, two 4-bit codes per byte split by halves of K: byte ``j``
  holds column ``j`` in its low nibble and column ``j + ceil(K / 2)`` in its high nibble (a column past
  ``K`` is padding). ``scale`` float16 and ``zero`` uint8 (0..15), both ``[N, ceil(K / group_size)]``;
  ``w = (code - zero) * scale``, the group of column ``k`` being ``k // group_size`` (asymmetric, group-wise,
  integer zero points: the ONNX blocked ``DequantizeLinear`` format TensorRT reads).
- fp8: ``qweight`` uint8 ``[N, K]`` holding float8 e4m3 bits, ``scale`` float32 ``[N]``; ``w = float(q) * scale``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def dequantize_int8(qweight: Tensor, scale: Tensor) -> Tensor:
    """int8 codes ``[N, K]`` and per-channel scales ``[N]`` -> float32 weight ``[N, K]``."""
    return qweight.to(torch.float32) * scale.to(torch.float32)[:, None]


def unpack_int4(qweight: Tensor, in_features: int) -> Tensor:
    """uint8 ``[N, ceil(K/2)]`` (half-split nibbles) -> codes ``[N, K]`` as int32 in ``0..15``."""
    packed = qweight.to(torch.int32)  # plain integer arithmetic (no bit ops) exports to every ONNX runtime
    high = torch.div(packed, 16, rounding_mode="floor")
    return torch.cat([packed - high * 16, high], 1)[:, :in_features]


def dequantize_int4(qweight: Tensor, scale: Tensor, zero: Tensor, group_size: int, in_features: int) -> Tensor:
    """Packed int4 codes with group-wise ``scale``/``zero`` ``[N, groups]`` -> float32 weight ``[N, K]``."""
    codes = unpack_int4(qweight, in_features).to(torch.float32)
    s = scale.to(torch.float32).repeat_interleave(group_size, 1)[:, :in_features]
    z = zero.to(torch.float32).repeat_interleave(group_size, 1)[:, :in_features]
    return (codes - z) * s


def dequantize_fp8(qweight: Tensor, scale: Tensor) -> Tensor:
    """float8 e4m3 bits (stored as uint8) ``[N, K]`` with per-channel scales ``[N]`` -> float32 weight ``[N, K]``."""
    return e4m3_to_float(qweight) * scale.to(torch.float32)[:, None]


def e4m3_to_float(bits: Tensor) -> Tensor:
    """Decode float8 e4m3fn bit patterns held in uint8 with integer arithmetic (sign, 4-bit exponent with bias 7,
    3-bit mantissa, subnormals at exponent 0). A dtype view would be shorter but the ONNX tracer cannot record it;
    the NaN pattern is never produced by the quantizer."""
    b = bits.to(torch.int32)
    sign = 1.0 - 2.0 * torch.div(b, 128, rounding_mode="floor").to(torch.float32)
    exponent = torch.remainder(torch.div(b, 8, rounding_mode="floor"), 16)
    mantissa = torch.remainder(b, 8).to(torch.float32) / 8.0
    normal = (1.0 + mantissa) * torch.pow(2.0, (exponent - 7).to(torch.float32))
    subnormal = mantissa * 2.0**-6
    return sign * torch.where(exponent > 0, normal, subnormal)


def int8_linear(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """``x @ dequant(w).T + bias`` in ``x``'s dtype, then ``+ residual`` (a decoder layer's residual add; the
    fused kernel adds it before its one rounding)."""
    return _linear_in(x, dequantize_int8(qweight, scale), bias, residual)


def int4_linear(
    x: Tensor, qweight: Tensor, scale: Tensor, zero: Tensor, group_size: int, bias: Tensor | None = None, residual: Tensor | None = None
) -> Tensor:
    """``x @ dequant(w).T + bias (+ residual)`` for packed int4 weights (``K`` is ``x.shape[-1]``)."""
    return _linear_in(x, dequantize_int4(qweight, scale, zero, group_size, x.shape[-1]), bias, residual)


def fp8_linear(x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """``x @ dequant(w).T + bias (+ residual)`` for float8 e4m3 weights."""
    return _linear_in(x, dequantize_fp8(qweight, scale), bias, residual)


def _linear_in(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None) -> Tensor:
    """A dequantized weight's Linear computed in ``x``'s dtype (weight and bias cast to it), then ``+ residual``."""
    return linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), residual)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """A float Linear, then ``+ residual``."""
    return plus_residual(F.linear(x, weight, bias), residual)


def plus_residual(y: Tensor, residual: Tensor | None) -> Tensor:
    """``y + residual`` (``y`` when there is none): the unfused form of a kernel's residual epilogue."""
    return y if residual is None else y + residual


def rmsnorm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``weight * rmsnorm(x)`` with the RMS taken in float32 and the normalized value rounded to ``x.dtype``,
    exactly as ``WamRMSNorm`` does."""
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def add_rmsnorm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``h = x + residual`` (rounded to ``x.dtype``), then ``(rmsnorm(h), h)``: the decoder layer's residual add
    and post-attention norm as one step."""
    h = x + residual
    return rmsnorm(h, weight, eps), h


def rope_cache(q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor, keys: Tensor, values: Tensor, slot: Tensor) -> Tensor:
    """One decode token's rotary embedding and cache write: ``q/k/v [B, H, D]``, ``cos/sin [B, D]``; the rotated
    key and the value go into ``keys/values [B, H, T, D]`` at position ``slot [1]`` (in place); returns the
    rotated query. Same arithmetic as ``apply_rotary_pos_emb`` (each product and the sum rounded to the dtype)."""
    cos, sin = cos[:, None], sin[:, None]

    def rotate(t: Tensor) -> Tensor:
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    keys.index_copy_(2, slot, rotate(k)[:, :, None])
    values.index_copy_(2, slot, v[:, :, None])
    return rotate(q)


def silu_mul(gate_up: Tensor) -> Tensor:
    """SwiGLU's ``silu(gate) * up`` from the gate and up projections stacked on the last axis ``[..., 2I]``."""
    gate, up = gate_up.chunk(2, -1)
    return F.silu(gate) * up


def decode_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float | None = None) -> Tensor:
    """One query per head over the KV cache: ``q [B, H, D]``, ``k/v [B, H, T, D]``, ``valid [B, T]`` (bool,
    key may be attended) -> ``[B, H, D]``. Softmax in float32; every row needs one valid key."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bhd,bhtd->bht", q.float(), k.float()) * scale
    scores = scores.masked_fill(~valid.bool()[:, None, :], float("-inf"))
    return torch.einsum("bht,bhtd->bhd", torch.softmax(scores, -1), v.float()).to(q.dtype)


def step_inputs(
    token: Tensor, i: Tensor, embed: Tensor, slot_embeds: Tensor, cos: Tensor, sin: Tensor, causal: Tensor, prefill_mask: Tensor,
    first_slot: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A fixed-schedule decode step's inputs from per-step tables: for step ``i`` (a long scalar) and the
    previous tokens ``token [B, 1]``, ``hidden [B, 1, H] = embed[token] + slot_embeds[i]`` (rounded to the
    dtype once, as the model's ``embed_actions``), row ``i`` of the rotary tables ``cos/sin [steps, D]`` as
    ``[B, 1, D]``, the key mask ``prefill_mask [B, T] | causal[i]`` and the cache slot ``[1]`` the step
    writes, ``first_slot + i``."""
    index = i.reshape(1)
    B = token.shape[0]
    hidden = F.embedding(token, embed) + torch.index_select(slot_embeds, 0, index)
    cos_i, sin_i = (torch.index_select(t, 0, index).expand(B, 1, -1) for t in (cos, sin))
    return hidden, cos_i, sin_i, prefill_mask | torch.index_select(causal, 0, index), index + first_slot


def greedy_advance(logits: Tensor, bins: int, token: Tensor, tokens: Tensor, i: Tensor) -> None:
    """A decode loop's bookkeeping, in place: the greedy token among the first ``bins`` of ``logits [B, V]``
    (the first index on ties) into ``token [B, 1]`` and column ``i + 1`` of ``tokens [B, L]``, then ``i += 1``."""
    token.copy_(logits[:, :bins].argmax(-1, keepdim=True))
    i.add_(1)
    tokens.index_copy_(1, i.reshape(1), token)
