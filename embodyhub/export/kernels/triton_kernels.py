"""Triton kernels: fused dequantize + GEMV/GEMM (int8, int4), add + RMSNorm, decode attention.

At batch 1 a decode step is memory-bound, so each kernel reads the quantized weight once and never
materializes a float copy. Every kernel has a reference in ``reference.py`` with identical arithmetic;
the tests run these under Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is
imported) on CPU tensors, and ``benchmarks/export.py`` times them on a GPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import reference

try:  # programmatic dependent launch (Hopper and later GPUs, in the Triton builds that have it)
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    _HAS_GDC = True
except ImportError:  # an older Triton: ``_pdl`` stays off, so these stand-ins are never compiled in
    _HAS_GDC = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass


GEMV_MAX_ROWS = 8  # up to this many rows of x a per-row GEMV beats the tiled tensor-core GEMM
# The GPU that launches on CPU tensors plan for: a stand-in under the interpreter; compile_check sets its target's.
HOST_GPU = {"multiprocessors": 8, "capability": 0}
# Programmatic dependent launch of the decode kernels on sm_90+: each starts while the kernel before it finishes
# (a GEMV loads its first weights meanwhile) and waits for that kernel's writes only before reading its inputs.
# On by default: on an H200 it took 0.2-1.9 us off each batch-1 GEMV and 23% off BIG's int4 decode step, same tokens
# (benchmarks/export.py, README). False launches every kernel plainly.
PDL = True


@triton.jit
def _dot(a, b):
    """``tl.dot``, in full float32 for float32 inputs (as torch's matmul; TF32 would miss the reference)."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


# 2 ** 23, whose float32 mantissa counts in ones: OR'ing an integer m < 2 ** 23 into its bits (``EXACT_BITS``) gives
# 2 ** 23 + m exactly. The int4 GEMV dequantizes so, not by int-to-float conversions, which issue at a quarter of the
# float32 rate (16 per cycle per multiprocessor up to sm_90): one per weight had as many cycles as all its other
# instructions together (SASS of the dry compile, ``benchmarks/kernel_sweep.py --dry``).
EXACT = tl.constexpr(8388608.0)
EXACT_BITS = 0x4B000000
# The grouped int4 GEMV wants each thread to hold every row of its columns, so that each x value it converts to
# float32 serves all the rows (with one row per thread, one conversion per weight: about 1 in 7 of the
# instructions of its dry compile for sm_90). Triton lays a load out by its address contiguity and hands out
# threads in that order; it breaks the tie between the rows and groups dimensions, neither contiguous, by their
# index: before 3.7 the lower index gets threads first, from 3.7 on the higher one. So the GEMV loads its codes
# rows-last before 3.7 and rows-first after, and either way the rows get none (``tests/test_export.py`` checks
# the layout under the installed Triton).
INT4_ROWS_LAST = tl.constexpr(tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 7))


@triton.jit
def _gemv_store(acc, b_ptr, r_ptr, y_ptr, row, n, n_ok, stride_rm, stride_ym, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """A GEMV row's epilogue: bias, then the decoder layer's residual add, in float32 before the one rounding."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        acc += tl.load(r_ptr + row * stride_rm + n, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_ym + n, acc.to(y_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _pdl_wait(PDL: tl.constexpr):
    """Under programmatic dependent launch: wait until the previous kernel's writes are visible (nothing it
    wrote may be read before this; a GEMV loads its first weights before it, so they stream in while that
    kernel finishes), then let the next kernel launch."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def _int8_tile(q_ptr, n, n_ok, k0, K, BLOCK_K: tl.constexpr):
    """The int8 codes of a GEMV's rows ``n`` at columns ``k0 .. k0 + BLOCK_K``."""
    k = k0 + tl.arange(0, BLOCK_K)
    return tl.load(q_ptr + n[:, None] * K + k[None, :], mask=n_ok[:, None] & (k < K)[None, :], other=0)


@triton.jit
def _int8_tile_dot(w, x_ptr, k0, K, BLOCK_K: tl.constexpr):
    k = k0 + tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
    return tl.sum(w.to(tl.float32) * x[None, :], 1)


@triton.jit
def _int8_gemv_kernel(
    x_ptr, q_ptr, s_ptr, b_ptr, r_ptr, y_ptr, N, K, stride_xm, stride_rm, stride_ym,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):
    row = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    x_row = x_ptr + row * stride_xm
    scale = tl.load(s_ptr + n, mask=n_ok, other=0.0)
    w = _int8_tile(q_ptr, n, n_ok, 0, K, BLOCK_K)  # the first tile is peeled: its loads precede the wait
    _pdl_wait(PDL)
    acc = _int8_tile_dot(w, x_row, 0, K, BLOCK_K)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        acc += _int8_tile_dot(_int8_tile(q_ptr, n, n_ok, k0, K, BLOCK_K), x_row, k0, K, BLOCK_K)
    _gemv_store(acc * scale, b_ptr, r_ptr, y_ptr, row, n, n_ok, stride_rm, stride_ym, HAS_BIAS, HAS_RESIDUAL)


@triton.jit
def _gemm_store(acc, b_ptr, y_ptr, m, n, m_ok, n_ok, stride_ym, HAS_BIAS: tl.constexpr):
    """A GEMM tile's epilogue: bias in float32, then the one rounding to the output dtype."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + m[:, None] * stride_ym + n[None, :], acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _int8_gemm_kernel(
    x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_ym,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):
    _pdl_wait(PDL)
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = m < M, n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        a = tl.load(x_ptr + m[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(q_ptr + n[None, :] * K + k[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0)
        acc += _dot(a, w.to(a.dtype))  # |code| <= 127 is exact in bf16/fp16
    _gemm_store(acc * tl.load(s_ptr + n, mask=n_ok, other=0.0)[None, :], b_ptr, y_ptr, m, n, m_ok, n_ok, stride_ym, HAS_BIAS)


@triton.jit
def _int4_gemv_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, r_ptr, y_ptr, N, K, KH, GROUPS, GROUP, stride_xm, stride_rm, stride_ym,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):
    _pdl_wait(PDL)
    row = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j0 in range(0, KH, BLOCK_K):
        j = j0 + tl.arange(0, BLOCK_K)
        k_hi = j + KH
        lo_ok, hi_ok = j < K, k_hi < K  # j < KH <= K, so lo_ok also bounds the packed columns
        packed = tl.load(q_ptr + n[:, None] * KH + j[None, :], mask=n_ok[:, None] & (j < KH)[None, :], other=0).to(tl.int32)
        x_lo = tl.load(x_ptr + row * stride_xm + j, mask=lo_ok & (j < KH), other=0.0).to(tl.float32)
        x_hi = tl.load(x_ptr + row * stride_xm + k_hi, mask=hi_ok, other=0.0).to(tl.float32)
        g_lo = n[:, None] * GROUPS + (j // GROUP)[None, :]
        g_hi = n[:, None] * GROUPS + (k_hi // GROUP)[None, :]
        ok_lo = n_ok[:, None] & (lo_ok & (j < KH))[None, :]
        ok_hi = n_ok[:, None] & hi_ok[None, :]
        z_lo = tl.load(z_ptr + g_lo, mask=ok_lo, other=0).to(tl.float32)
        z_hi = tl.load(z_ptr + g_hi, mask=ok_hi, other=0).to(tl.float32)
        w_lo = ((packed & 15).to(tl.float32) - z_lo) * tl.load(s_ptr + g_lo, mask=ok_lo, other=0.0).to(tl.float32)
        w_hi = ((packed >> 4).to(tl.float32) - z_hi) * tl.load(s_ptr + g_hi, mask=ok_hi, other=0.0).to(tl.float32)
        acc += tl.sum(w_lo * x_lo[None, :] + w_hi * x_hi[None, :], 1)
    _gemv_store(acc, b_ptr, r_ptr, y_ptr, row, n, n_ok, stride_rm, stride_ym, HAS_BIAS, HAS_RESIDUAL)


@triton.jit
def _int4_group_columns(g0, HALF, GROUP: tl.constexpr, BLOCK_G: tl.constexpr):
    """Groups ``g0 .. g0 + BLOCK_G`` of each half of K: their indices, which exist, and their packed columns
    ``[BLOCK_G, GROUP]``."""
    g = g0 + tl.arange(0, BLOCK_G)
    return g, g < HALF, g[:, None] * GROUP + tl.arange(0, GROUP)[None, :]


@triton.jit
def _int4_groups(q_ptr, s_ptr, z_ptr, n, n_ok, g0, KH, GROUPS, HALF, GROUP: tl.constexpr, BLOCK_G: tl.constexpr):
    """The weights of a grouped int4 GEMV's rows ``n`` at groups ``g0 .. g0 + BLOCK_G`` of each half of K:
    packed codes ``[BLOCK_N, BLOCK_G, GROUP]``, then the low and high halves' scales and zero points."""
    g, g_ok, j = _int4_group_columns(g0, HALF, GROUP, BLOCK_G)
    if INT4_ROWS_LAST:  # the same tensor, laid out by a load whose rows come last (see INT4_ROWS_LAST)
        packed = tl.permute(tl.load(q_ptr + j[:, :, None] + n[None, None, :] * KH, mask=g_ok[:, None, None] & n_ok[None, None, :], other=0), (2, 0, 1))
    else:
        packed = tl.load(q_ptr + n[:, None, None] * KH + j[None, :, :], mask=n_ok[:, None, None] & g_ok[None, :, None], other=0)
    ok = n_ok[:, None] & g_ok[None, :]
    at = n[:, None] * GROUPS + g[None, :]
    s_lo = tl.load(s_ptr + at, mask=ok, other=0.0)
    s_hi = tl.load(s_ptr + at + HALF, mask=ok, other=0.0)
    z_lo = tl.load(z_ptr + at, mask=ok, other=0)
    z_hi = tl.load(z_ptr + at + HALF, mask=ok, other=0)
    return packed, s_lo, s_hi, z_lo, z_hi


@triton.jit
def _int4_groups_dot(packed, s_lo, s_hi, z_lo, z_hi, x_ptr, g0, KH, HALF, exact_bits, GROUP: tl.constexpr, BLOCK_G: tl.constexpr):
    """Per group ``scale * ((codes - zero) . x)``, summed over the groups: ``[BLOCK_N]``. ``exact_bits`` is
    ``EXACT_BITS``, a run-time value rather than a literal so that ptxas keeps it in a register and does each
    nibble's mask and OR in one LOP3 (with both as literals, two instructions)."""
    _, g_ok, j = _int4_group_columns(g0, HALF, GROUP, BLOCK_G)
    x_lo = tl.load(x_ptr + j, mask=g_ok[:, None], other=0.0).to(tl.float32)
    x_hi = tl.load(x_ptr + KH + j, mask=g_ok[:, None], other=0.0).to(tl.float32)
    codes = packed.to(tl.int32)
    # code - zero, exact: the low nibble as is, the high one where it lies (16 x code), undone by its scale's 1/16
    c_lo = z_lo.to(tl.float32) + EXACT
    c_hi = z_hi.to(tl.float32) * 16.0 + EXACT
    lo = ((codes & 15) | exact_bits).to(tl.float32, bitcast=True) - c_lo[:, :, None]
    hi = ((codes & 240) | exact_bits).to(tl.float32, bitcast=True) - c_hi[:, :, None]
    dot_lo = tl.sum(lo * x_lo[None, :, :], 2)
    dot_hi = tl.sum(hi * x_hi[None, :, :], 2)
    return tl.sum(s_lo.to(tl.float32) * dot_lo + (s_hi.to(tl.float32) * 0.0625) * dot_hi, 1)


@triton.jit
def _int4_gemv_grouped_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, r_ptr, y_ptr, N, KH, GROUPS, stride_xm, stride_rm, stride_ym, exact_bits,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
    PDL: tl.constexpr,
):
    """The int4 GEMV when both halves of K are whole groups (``K == 2 * KH``, ``KH % GROUP == 0``): scales and
    zero points are loaded once per group, not per code."""
    row = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    half = KH // GROUP
    x_row = x_ptr + row * stride_xm
    packed, s_lo, s_hi, z_lo, z_hi = _int4_groups(q_ptr, s_ptr, z_ptr, n, n_ok, 0, KH, GROUPS, half, GROUP, BLOCK_G)  # peeled: loads before the wait
    _pdl_wait(PDL)
    acc = _int4_groups_dot(packed, s_lo, s_hi, z_lo, z_hi, x_row, 0, KH, half, exact_bits, GROUP, BLOCK_G)
    for g0 in range(BLOCK_G, half, BLOCK_G):
        p, sl, sh, zl, zh = _int4_groups(q_ptr, s_ptr, z_ptr, n, n_ok, g0, KH, GROUPS, half, GROUP, BLOCK_G)
        acc += _int4_groups_dot(p, sl, sh, zl, zh, x_row, g0, KH, half, exact_bits, GROUP, BLOCK_G)
    _gemv_store(acc, b_ptr, r_ptr, y_ptr, row, n, n_ok, stride_rm, stride_ym, HAS_BIAS, HAS_RESIDUAL)


@triton.jit
def _int4_gemm_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, y_ptr, M, N, K, KH, GROUPS, GROUP, stride_xm, stride_ym,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr,
):
    _pdl_wait(PDL)
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = m < M, n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for j0 in range(0, KH, BLOCK_K):
        j = j0 + tl.arange(0, BLOCK_K)
        k_hi = j + KH
        j_ok, hi_ok = j < KH, k_hi < K
        packed = tl.load(q_ptr + n[None, :] * KH + j[:, None], mask=j_ok[:, None] & n_ok[None, :], other=0).to(tl.int32)
        g_lo = n[None, :] * GROUPS + (j // GROUP)[:, None]
        g_hi = n[None, :] * GROUPS + (k_hi // GROUP)[:, None]
        ok_lo = j_ok[:, None] & n_ok[None, :]
        ok_hi = hi_ok[:, None] & n_ok[None, :]
        a_lo = tl.load(x_ptr + m[:, None] * stride_xm + j[None, :], mask=m_ok[:, None] & j_ok[None, :], other=0.0)
        a_hi = tl.load(x_ptr + m[:, None] * stride_xm + k_hi[None, :], mask=m_ok[:, None] & hi_ok[None, :], other=0.0)
        z_lo = tl.load(z_ptr + g_lo, mask=ok_lo, other=0).to(tl.float32)
        z_hi = tl.load(z_ptr + g_hi, mask=ok_hi, other=0).to(tl.float32)
        w_lo = ((packed & 15).to(tl.float32) - z_lo) * tl.load(s_ptr + g_lo, mask=ok_lo, other=0.0).to(tl.float32)
        w_hi = ((packed >> 4).to(tl.float32) - z_hi) * tl.load(s_ptr + g_hi, mask=ok_hi, other=0.0).to(tl.float32)
        acc += _dot(a_lo, w_lo.to(a_lo.dtype)) + _dot(a_hi, w_hi.to(a_hi.dtype))
    _gemm_store(acc, b_ptr, y_ptr, m, n, m_ok, n_ok, stride_ym, HAS_BIAS)


@triton.jit
def _add_rmsnorm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, h_ptr, D, eps, HAS_RESIDUAL: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):
    _pdl_wait(PDL)
    row = tl.program_id(0)
    d = tl.arange(0, BLOCK_D)
    ok = d < D
    x = tl.load(x_ptr + row * D + d, mask=ok, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + row * D + d, mask=ok, other=0.0)
        # Each step rounds to the activation dtype where the decoder layer's torch ops do (one rounding per op).
        h = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(h_ptr + row * D + d, h, mask=ok)
    else:
        h = x
    hf = h.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(hf * hf, 0) / D + eps)
    w = tl.load(w_ptr + d, mask=ok, other=0.0).to(tl.float32)
    y = w * (hf * inv).to(x.dtype).to(tl.float32)
    tl.store(out_ptr + row * D + d, y.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rotate(ptr, d, rd, sign, ok, c, s):
    """One row's rotary embedding (``t * cos + rotate_half(t) * sin``), each product and the sum rounded."""
    x = tl.load(ptr + d, mask=ok, other=0.0)
    xr = tl.load(ptr + rd, mask=ok, other=0.0).to(tl.float32) * sign
    return ((x.to(tl.float32) * c).to(x.dtype).to(tl.float32) + (xr * s).to(x.dtype).to(tl.float32)).to(x.dtype)


@triton.jit
def _rope_cache_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, keys_ptr, values_ptr, slot_ptr, out_ptr, H, D, sqb, skb, svb,
    ckb, ckh, ckt, cvb, cvh, cvt, BLOCK_D: tl.constexpr, PDL: tl.constexpr,
):
    _pdl_wait(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    ok = d < D
    half = D // 2
    rd = tl.where(d < half, d + half, d - half)  # rotate_half: (-x2, x1)
    sign = tl.where(d < half, -1.0, 1.0)
    c = tl.load(cos_ptr + b * D + d, mask=ok, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + b * D + d, mask=ok, other=0.0).to(tl.float32)
    slot = tl.load(slot_ptr)
    tl.store(out_ptr + (b * H + h) * D + d, _rotate(q_ptr + b * sqb + h * D, d, rd, sign, ok, c, s), mask=ok)
    tl.store(keys_ptr + b * ckb + h * ckh + slot * ckt + d, _rotate(k_ptr + b * skb + h * D, d, rd, sign, ok, c, s), mask=ok)
    v = tl.load(v_ptr + b * svb + h * D + d, mask=ok, other=0.0)
    tl.store(values_ptr + b * cvb + h * cvh + slot * cvt + d, v, mask=ok)


@triton.jit
def _silu_mul_kernel(x_ptr, y_ptr, INNER, BLOCK: tl.constexpr, PDL: tl.constexpr):
    _pdl_wait(PDL)
    row = tl.program_id(0)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = i < INNER
    g = tl.load(x_ptr + row * 2 * INNER + i, mask=ok, other=0.0)
    u = tl.load(x_ptr + row * 2 * INNER + INNER + i, mask=ok, other=0.0).to(tl.float32)
    gf = g.to(tl.float32)
    act = (gf / (1.0 + tl.exp(-gf))).to(g.dtype).to(tl.float32)
    tl.store(y_ptr + row * INNER + i, (act * u).to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _decode_attention_kernel(
    q_ptr, k_ptr, v_ptr, m_ptr, o_ptr, T, D, H, scale,
    sqb, sqh, skb, skh, skt, svb, svh, svt, sob, soh,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr,
):
    _pdl_wait(PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(q_ptr + b * sqb + h * sqh + d, mask=d_ok, other=0.0).to(tl.float32)
    # Online softmax (one pass over K and V): running max, running sum, running weighted V.
    run_max = tl.max(tl.full([BLOCK_T], -1.0e30, tl.float32), 0)
    run_sum = tl.sum(tl.zeros([BLOCK_T], dtype=tl.float32), 0)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        valid = (tl.load(m_ptr + b * T + t, mask=t < T, other=0) != 0) & (t < T)
        kv_ok = valid[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + b * skb + h * skh + t[:, None] * skt + d[None, :], mask=kv_ok, other=0.0).to(tl.float32)
        s = tl.where(valid, tl.sum(k * q[None, :], 1) * scale, -1.0e30)
        new_max = tl.maximum(run_max, tl.max(s, 0))
        p = tl.where(valid, tl.exp(s - new_max), 0.0)
        alpha = tl.exp(run_max - new_max)
        v = tl.load(v_ptr + b * svb + h * svh + t[:, None] * svt + d[None, :], mask=kv_ok, other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        run_sum = run_sum * alpha + tl.sum(p, 0)
        run_max = new_max
    out = acc / run_sum
    tl.store(o_ptr + b * sob + h * soh + d, out.to(o_ptr.dtype.element_ty), mask=d_ok)


@triton.jit
def _step_inputs_kernel(
    tok_ptr, i_ptr, e_ptr, s_ptr, cos_ptr, sin_ptr, c_ptr, p_ptr, h_ptr, co_ptr, so_ptr, m_ptr, pos_ptr, H, D, T, first_slot,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, PDL: tl.constexpr,
):
    _pdl_wait(PDL)
    b = tl.program_id(0)
    i = tl.load(i_ptr)
    if b == 0:
        tl.store(pos_ptr, i + first_slot)
    tok = tl.load(tok_ptr + b)
    for h0 in range(0, H, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        ok = h < H
        e = tl.load(e_ptr + tok * H + h, mask=ok, other=0.0)
        s = tl.load(s_ptr + i * H + h, mask=ok, other=0.0)
        tl.store(h_ptr + b * H + h, (e.to(tl.float32) + s.to(tl.float32)).to(h_ptr.dtype.element_ty), mask=ok)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    tl.store(co_ptr + b * D + d, tl.load(cos_ptr + i * D + d, mask=d_ok, other=0.0), mask=d_ok)
    tl.store(so_ptr + b * D + d, tl.load(sin_ptr + i * D + d, mask=d_ok, other=0.0), mask=d_ok)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        ok = t < T
        valid = (tl.load(p_ptr + b * T + t, mask=ok, other=0) != 0) | (tl.load(c_ptr + i * T + t, mask=ok, other=0) != 0)
        tl.store(m_ptr + b * T + t, valid.to(tl.int8), mask=ok)


@triton.jit
def _greedy_advance_kernel(l_ptr, tok_ptr, toks_ptr, i_ptr, B, bins, stride_l, L, BLOCK_V: tl.constexpr, PDL: tl.constexpr):
    """One program for the whole batch, so the counter is read by every row before it is advanced."""
    _pdl_wait(PDL)
    i = tl.load(i_ptr)
    v = tl.arange(0, BLOCK_V)
    ok = v < bins
    for b in range(0, B):
        x = tl.load(l_ptr + b * stride_l + v, mask=ok, other=float("-inf")).to(tl.float32)
        best = tl.argmax(x, 0, tie_break_left=True).to(tl.int64)
        tl.store(tok_ptr + b, best)
        tl.store(toks_ptr + b * L + i + 1, best)
    tl.store(i_ptr, i + 1)


def _pow2(n: int, lo: int = 16, hi: int = 1024) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _gemv_blocks(x: Tensor, N: int, K: int, widest_k: int, max_tile: int = 8192) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_K)`` for a GEMV over ``N`` output rows of ``K`` stored columns (bytes). At batch 1 the
    kernel is latency-bound: its loops are not software-pipelined, so each pass over a row waits a whole
    round trip to device memory. Hence whole rows per load up to ``widest_k`` (one pass: every weight byte
    requested at once), and rows per program for about four programs per multiprocessor, with at most
    ``max_tile`` stored bytes per load, which keeps registers below a spill (``--dry`` of
    ``benchmarks/kernel_sweep.py``). On an H200 (``kernel_sweep.py``) whole rows beat quarter rows by
    1.3-1.9 us on 1024 x 4096, and 8 rows per program beat 4 on 4096 x 1024 (2.8 vs 3.6 us, int8)."""
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else HOST_GPU["multiprocessors"]
    block_k = _pow2(K, 16, widest_k)
    return min(_pow2(triton.cdiv(N, 4 * sms), 1, 64), max(1, max_tile // block_k)), block_k


def pdl_available(x: Tensor) -> bool:
    """Whether kernels on ``x``'s GPU can use programmatic dependent launch: sm_90+ and a Triton that has it."""
    return _HAS_GDC and (torch.cuda.get_device_capability(x.device)[0] if x.is_cuda else HOST_GPU["capability"]) >= 9


def _pdl(x: Tensor) -> bool:
    """Programmatic dependent launch for kernels on ``x``: the module switch ``PDL``, where available."""
    return PDL and pdl_available(x)


def _pdl_args(pdl: bool) -> dict[str, bool]:
    """The kernel's ``PDL`` flag and, when on, the launch option (left out when off, for Triton builds without it)."""
    return {"PDL": True, "launch_pdl": True} if pdl else {"PDL": False}


def _gemv_launch(x: Tensor, block_n: int, block_k: dict[str, int], gemv: dict[str, Any] | None, **options: int) -> dict[str, Any]:
    """A GEMV's launch arguments: the blocks, ``PDL`` (``_pdl``), then the overrides."""
    launch = {"BLOCK_N": block_n, **block_k, **options, "PDL": _pdl(x), **(gemv or {})}
    return {**launch, **_pdl_args(launch["PDL"])}


def _rows(x: Tensor) -> Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def int8_linear(
    x: Tensor, qweight: Tensor, scale: Tensor, bias: Tensor | None = None, residual: Tensor | None = None, gemv: dict[str, Any] | None = None
) -> Tensor:
    """Fused int8 dequant + matmul (+ ``residual`` in the GEMV's epilogue); matches ``reference.int8_linear``.
    ``gemv`` overrides the GEMV launch (``BLOCK_N``, ``BLOCK_K``, ``num_warps``, ``num_stages``, ``PDL``), for
    block-size sweeps."""
    x2 = _rows(x)
    M, K = x2.shape
    N = qweight.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    b = bias if bias is not None else scale
    if M <= GEMV_MAX_ROWS:
        r = _rows(residual.reshape(M, N)) if residual is not None else y
        block_n, block_k = _gemv_blocks(x2, N, K, 4096)
        launch = _gemv_launch(x2, block_n, {"BLOCK_K": block_k}, gemv, num_warps=8)
        _int8_gemv_kernel[(triton.cdiv(N, launch["BLOCK_N"]), M)](
            x2, qweight, scale, b, r, y, N, K, x2.stride(0), r.stride(0), y.stride(0), bias is not None, residual is not None, **launch,
        )
        return y.reshape(*x.shape[:-1], N)
    grid = (triton.cdiv(M, 32), triton.cdiv(N, 64))
    _int8_gemm_kernel[grid](
        x2, qweight, scale, b, y, M, N, K, x2.stride(0), y.stride(0), bias is not None, BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, **_pdl_args(_pdl(x2)),
    )
    return reference.plus_residual(y.reshape(*x.shape[:-1], N), residual)


def int4_linear(
    x: Tensor, qweight: Tensor, scale: Tensor, zero: Tensor, group_size: int, bias: Tensor | None = None, residual: Tensor | None = None,
    gemv: dict[str, Any] | None = None,
) -> Tensor:
    """Fused int4 (group-wise, half-split packing) dequant + matmul (+ ``residual`` in the GEMV's epilogue);
    matches ``reference.int4_linear``. ``gemv`` overrides the grouped GEMV launch (``BLOCK_N``, ``BLOCK_G``
    groups per load, ``num_warps``, ``num_stages``, ``maxnreg``, ``PDL``), for block-size sweeps."""
    x2 = _rows(x)
    M, K = x2.shape
    N, KH = qweight.shape
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    b = bias if bias is not None else scale
    groups = scale.shape[1]
    if M > GEMV_MAX_ROWS:
        grid = (triton.cdiv(M, 32), triton.cdiv(N, 64))
        # float32 dots take the FMA path: at BLOCK_K 32 they spill registers for sm_90/sm_110 (compile_check), at 16 with 8 warps not
        block_k, warps = (16, 8) if x2.dtype == torch.float32 else (32, 4)
        _int4_gemm_kernel[grid](
            x2, qweight, scale, zero, b, y, M, N, K, KH, groups, group_size, x2.stride(0), y.stride(0),
            bias is not None, BLOCK_M=32, BLOCK_N=64, BLOCK_K=block_k, num_warps=warps, **_pdl_args(_pdl(x2)),
        )
        return reference.plus_residual(y.reshape(*x.shape[:-1], N), residual)
    r = _rows(residual.reshape(M, N)) if residual is not None else y
    if K == 2 * KH and KH % group_size == 0 and group_size == triton.next_power_of_2(group_size):
        block_n, block_k = _gemv_blocks(x2, N, KH, 2048)
        # At most 128 registers: 16 warps per multiprocessor (four programs of 4), as _gemv_blocks plans. Without
        # the cap Triton 3.6 gives WIDE's GEMVs 168 (three programs); with it they do not spill, and under
        # Triton 3.9 a few launches keep 8-16 bytes on the stack (dry compile; README).
        launch = _gemv_launch(x2, block_n, {"BLOCK_G": max(1, block_k // group_size)}, gemv, maxnreg=128)
        _int4_gemv_grouped_kernel[(triton.cdiv(N, launch["BLOCK_N"]), M)](
            x2, qweight, scale, zero, b, r, y, N, KH, groups, x2.stride(0), r.stride(0), y.stride(0), EXACT_BITS, bias is not None, residual is not None,
            GROUP=group_size, **launch,
        )
    else:
        block_n, block_k = _gemv_blocks(x2, N, KH, 256)
        _int4_gemv_kernel[(triton.cdiv(N, block_n), M)](
            x2, qweight, scale, zero, b, r, y, N, K, KH, groups, group_size, x2.stride(0), r.stride(0), y.stride(0),
            bias is not None, residual is not None, BLOCK_N=block_n, BLOCK_K=block_k, **_pdl_args(_pdl(x2)),
        )
    return y.reshape(*x.shape[:-1], N)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """A float Linear with the residual add in the GEMM's epilogue (``addmm``: one cuBLAS call instead of a
    GEMM and an add); matches ``reference.linear``."""
    if residual is None or bias is not None:
        return reference.linear(x, weight, bias, residual)
    out = torch.addmm(residual.reshape(-1, weight.shape[0]), x.reshape(-1, x.shape[-1]), weight.t())
    return out.reshape(*x.shape[:-1], weight.shape[0])


def rmsnorm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Fused RMSNorm; matches ``reference.rmsnorm``."""
    return _rmsnorm(x, None, weight, eps)[0]


def add_rmsnorm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Fused residual add + RMSNorm; returns ``(normed, h)`` like ``reference.add_rmsnorm``."""
    return _rmsnorm(x, residual, weight, eps)


def _rmsnorm(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """One launch of the norm kernel: ``(normed, h)`` with ``h = x + residual``, or ``h`` unused (``normed``)
    without a residual."""
    D = x.shape[-1]
    x2 = x.reshape(-1, D).contiguous()
    r2 = x2 if residual is None else residual.reshape(-1, D).contiguous()
    out = torch.empty_like(x2)
    h = out if residual is None else torch.empty_like(x2)
    _add_rmsnorm_kernel[(x2.shape[0],)](
        x2, r2, weight.contiguous(), out, h, D, eps, residual is not None, BLOCK_D=_pow2(D, 16, 65536), **_pdl_args(_pdl(x)),
    )
    return out.reshape(x.shape), h.reshape(x.shape)


def _heads(t: Tensor) -> Tensor:
    """``[B, H, D]`` with heads and features packed (a split of a stacked projection qualifies), else a copy."""
    return t if t.stride(2) == 1 and t.stride(1) == t.shape[2] else t.contiguous()


def rope_cache(q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor, keys: Tensor, values: Tensor, slot: Tensor) -> Tensor:
    """Fused rotary embedding + KV-cache write for one decode token; matches ``reference.rope_cache``."""
    q, k, v = _heads(q), _heads(k), _heads(v)
    B, H, D = q.shape
    if keys.stride(3) != 1 or values.stride(3) != 1:
        raise ValueError("rope_cache writes into caches whose last axis is contiguous")
    out = torch.empty(B, H, D, dtype=q.dtype, device=q.device)
    cos, sin = cos.reshape(B, D).contiguous(), sin.reshape(B, D).contiguous()
    _rope_cache_kernel[(B, H)](
        q, k, v, cos, sin, keys, values, slot, out, H, D, q.stride(0), k.stride(0), v.stride(0),
        keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2), BLOCK_D=_pow2(D, 16, 1024),
        **_pdl_args(_pdl(q)),
    )
    return out


def silu_mul(gate_up: Tensor) -> Tensor:
    """Fused ``silu(gate) * up``; matches ``reference.silu_mul``."""
    inner = gate_up.shape[-1] // 2
    x2 = gate_up.reshape(-1, 2 * inner).contiguous()
    y = torch.empty(x2.shape[0], inner, dtype=gate_up.dtype, device=gate_up.device)
    block = _pow2(inner, 16, 1024)
    _silu_mul_kernel[(x2.shape[0], triton.cdiv(inner, block))](x2, y, inner, BLOCK=block, **_pdl_args(_pdl(x2)))
    return y.reshape(*gate_up.shape[:-1], inner)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, scale: float | None = None) -> Tensor:
    """Single-query attention over the KV cache; matches ``reference.decode_attention``."""
    B, H, D = q.shape
    T = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if k.stride(-1) != 1:
        k = k.contiguous()
    if v.stride(-1) != 1:
        v = v.contiguous()
    q = q.contiguous()
    out = torch.empty_like(q)
    mask = _bytes(valid)
    _decode_attention_kernel[(B, H)](
        q, k, v, mask, out, T, D, H, scale,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), BLOCK_T=_pow2(T, 16, 128), BLOCK_D=_pow2(D, 16, 256), num_warps=8, **_pdl_args(_pdl(q)),
    )
    return out


def _bytes(mask: Tensor) -> Tensor:
    """A boolean mask as int8 bytes for a kernel: a view (no copy kernel) when it is contiguous bool."""
    return mask.contiguous().view(torch.int8) if mask.dtype == torch.bool else mask.to(torch.int8).contiguous()


def step_inputs(
    token: Tensor, i: Tensor, embed: Tensor, slot_embeds: Tensor, cos: Tensor, sin: Tensor, causal: Tensor, prefill_mask: Tensor,
    first_slot: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A decode step's inputs from its tables in one kernel; matches ``reference.step_inputs``."""
    B, H, T, D = token.shape[0], slot_embeds.shape[1], causal.shape[1], cos.shape[1]
    hidden = torch.empty(B, 1, H, dtype=embed.dtype, device=embed.device)
    cos_i, sin_i = (torch.empty(B, 1, D, dtype=t.dtype, device=t.device) for t in (cos, sin))
    mask = torch.empty(B, T, dtype=torch.bool, device=causal.device)
    position = torch.empty(1, dtype=torch.long, device=i.device)
    _step_inputs_kernel[(B,)](
        token.contiguous(), i, embed.contiguous(), slot_embeds.contiguous(), cos.contiguous(), sin.contiguous(), _bytes(causal),
        _bytes(prefill_mask), hidden, cos_i, sin_i, mask.view(torch.int8), position, H, D, T, first_slot,
        BLOCK_H=_pow2(H, 16, 1024), BLOCK_D=_pow2(D, 16, 1024), BLOCK_T=_pow2(T, 16, 1024), **_pdl_args(_pdl(embed)),
    )
    return hidden, cos_i, sin_i, mask, position


def greedy_advance(logits: Tensor, bins: int, token: Tensor, tokens: Tensor, i: Tensor) -> None:
    """Greedy pick, token write-back and counter advance in one kernel; matches ``reference.greedy_advance``."""
    if bins > 16384:
        raise ValueError(f"greedy_advance picks among at most 16384 logits in one block, got {bins}")
    if logits.stride(1) != 1 or not (token.is_contiguous() and tokens.is_contiguous()):
        raise ValueError("greedy_advance needs logits with contiguous rows and contiguous token buffers")
    _greedy_advance_kernel[(1,)](
        logits, token, tokens, i, token.shape[0], bins, logits.stride(0), tokens.shape[1], BLOCK_V=_pow2(bins, 16, 16384), **_pdl_args(_pdl(logits)),
    )
