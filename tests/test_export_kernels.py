"""Fused Triton kernels vs their pure-torch references on random, odd shapes.

On a machine without CUDA the kernels run under Triton's interpreter on CPU tensors. The interpreter
must be chosen before triton is first imported (``triton.jit`` decides when decorating, including
triton's own ``tl.sum``/``tl.max``); in a full suite torch._dynamo has usually imported triton already,
so then this module reruns itself in a fresh process with ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from embodyhub.export import kernels
from embodyhub.export.kernels import reference
from embodyhub.export.quantize import quantize_int4, quantize_int8

tk = kernels.triton_module()
if tk is None:
    pytest.skip("triton is not importable here (the reference path is covered by test_export.py)", allow_module_level=True)


def _interpreted() -> bool:
    import triton.language as tl

    return type(tl.sum).__name__ == "InterpretedFunction" and type(tk._int8_gemv_kernel).__name__ == "InterpretedFunction"


READY = torch.cuda.is_available() or _interpreted()
in_process = pytest.mark.skipif(not READY, reason="triton was imported before TRITON_INTERPRET was set: run in a fresh process")


@pytest.mark.skipif(READY, reason="the kernel tests run in this process")
def test_kernels_in_a_fresh_interpreter_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not fresh_interpreter and not dependent_launch", __file__], check=False, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (rows of x, in_features K, out_features N): GEMV (<= 8 rows) and GEMM paths, odd K and N, K below one block
SHAPES = [(1, 37, 29), (3, 130, 67), (1, 5, 3), (2, 257, 95), (11, 45, 70), (33, 64, 17)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@in_process
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_matches_reference(m, k, n, bias):
    g = _gen(m * 1000 + k + n)
    w = torch.randn(n, k, generator=g)
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    q, s = quantize_int8(w)
    args = [t.to(DEVICE) if t is not None else None for t in (x, q, s, b)]
    got = tk.int8_linear(*args).cpu()
    want = reference.int8_linear(x, q, s, b)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    r = torch.randn(m, n, generator=g)  # the residual add in the epilogue (GEMV) or after it (GEMM)
    torch.testing.assert_close(tk.int8_linear(*args, residual=r.to(DEVICE)).cpu(), want + r, rtol=1e-4, atol=1e-4)
    # and the reference really is the dequantized matmul, close to the float layer
    assert (want - torch.nn.functional.linear(x, w, b)).abs().max() < 0.05 * k**0.5


@in_process
@pytest.mark.parametrize("m,k,n", SHAPES + [(1, 256, 40), (2, 512, 9)])  # the last two: K in whole groups per half
@pytest.mark.parametrize("group_size", [8, 32, 13, 64])
def test_int4_linear_matches_reference(m, k, n, group_size):
    g = _gen(m * 7 + k * 3 + n + group_size)
    w = torch.randn(n, k, generator=g)
    x = torch.randn(m, k, generator=g)
    b = torch.randn(n, generator=g)
    q, s, z = quantize_int4(w, group_size)
    got = tk.int4_linear(x.to(DEVICE), q.to(DEVICE), s.to(DEVICE), z.to(DEVICE), group_size, b.to(DEVICE)).cpu()
    want = reference.int4_linear(x, q, s, z, group_size, b)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    r = torch.randn(m, n, generator=g)
    got = tk.int4_linear(x.to(DEVICE), q.to(DEVICE), s.to(DEVICE), z.to(DEVICE), group_size, b.to(DEVICE), r.to(DEVICE)).cpu()
    torch.testing.assert_close(got, reference.int4_linear(x, q, s, z, group_size, b, r), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(reference.int4_linear(x, q, s, z, group_size, b, r), want + r, rtol=0, atol=0)


@pytest.mark.skipif(not _interpreted(), reason="a GPU compiles the one load layout its Triton wants; the interpreter runs both")
@pytest.mark.parametrize("rows_last", [False, True])
@pytest.mark.parametrize("m,k,n,group_size", [(1, 256, 40, 32), (2, 192, 13, 32), (1, 512, 9, 64)])
def test_grouped_int4_gemv_loads_either_layout(monkeypatch, rows_last, m, k, n, group_size):
    """``INT4_ROWS_LAST`` (chosen by the Triton version) loads the codes rows-last and permutes them back: the
    same tensor, so the same result as the reference either way."""
    import triton.language as tl

    monkeypatch.setattr(tk, "INT4_ROWS_LAST", tl.constexpr(rows_last))
    g = _gen(m + k + n + group_size)
    w, x, r = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g), torch.randn(m, n, generator=g)
    q, s, z = quantize_int4(w, group_size)
    got = tk.int4_linear(x, q, s, z, group_size, residual=r, gemv={"BLOCK_N": 4, "BLOCK_G": 2})
    torch.testing.assert_close(got, reference.int4_linear(x, q, s, z, group_size, None, r), rtol=1e-4, atol=1e-4)


@in_process
@pytest.mark.parametrize("m,k,n", [(1, 37, 29), (3, 64, 16)])
def test_float_linear_with_residual_matches_reference(m, k, n):
    g = _gen(m + k + n)
    x, w, r = torch.randn(m, 1, k, generator=g), torch.randn(n, k, generator=g), torch.randn(m, 1, n, generator=g)
    got = tk.linear(x.to(DEVICE), w.to(DEVICE), None, r.to(DEVICE)).cpu()
    torch.testing.assert_close(got, reference.linear(x, w, None, r), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reference.linear(x, w, None, r), r + torch.nn.functional.linear(x, w), rtol=0, atol=0)


@in_process
@pytest.mark.parametrize("rows,d", [(1, 33), (5, 128), (3, 7), (2, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_rmsnorm_matches_reference(rows, d, dtype):
    g = _gen(rows * 31 + d)
    x, r = torch.randn(2, rows, d, generator=g).to(dtype)
    w = torch.rand(d, generator=g).to(dtype) + 0.5
    out, h = tk.add_rmsnorm(x.to(DEVICE), r.to(DEVICE), w.to(DEVICE), 1e-6)
    want_out, want_h = reference.add_rmsnorm(x, r, w, 1e-6)
    # bfloat16: one rounding step apart at most (the interpreter truncates where a GPU rounds to nearest)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(h.cpu(), want_h, rtol=tol if dtype == torch.bfloat16 else 0, atol=0)
    torch.testing.assert_close(out.cpu(), want_out, rtol=tol, atol=tol)


@in_process
@pytest.mark.parametrize("rows,d", [(1, 33), (4, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_and_silu_mul_match_reference(rows, d, dtype):
    g = _gen(rows * 17 + d)
    x = torch.randn(rows, d, generator=g).to(dtype)
    w = torch.rand(d, generator=g).to(dtype) + 0.5
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bfloat16: one rounding step
    torch.testing.assert_close(tk.rmsnorm(x.to(DEVICE), w.to(DEVICE), 1e-6).cpu(), reference.rmsnorm(x, w, 1e-6), rtol=tol, atol=tol)
    gate_up = torch.randn(rows, 3, 2 * d, generator=g).to(dtype) * 3
    torch.testing.assert_close(tk.silu_mul(gate_up.to(DEVICE)).cpu(), reference.silu_mul(gate_up), rtol=tol, atol=tol)
    # the reference is the model's own arithmetic
    from embodyhub.models.wam.modeling_wam import WamRMSNorm

    norm = WamRMSNorm(d, 1e-6).to(dtype)
    norm.weight.data.copy_(w)
    torch.testing.assert_close(reference.rmsnorm(x, w, 1e-6), norm(x), rtol=0, atol=0)


@in_process
@pytest.mark.parametrize("b,h,t,d", [(1, 2, 5, 16), (2, 3, 9, 24), (1, 4, 3, 10)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_cache_matches_reference(b, h, t, d, dtype):
    from embodyhub.models.wam.modeling_wam import apply_rotary_pos_emb

    g = _gen(b * 10 + h + t + d)
    qkv = torch.randn(b, 1, 3 * h * d, generator=g).to(dtype)
    q, k, v = (x.view(b, h, d) for x in qkv.split(h * d, -1))  # strided views, as the stacked projection gives
    angle = torch.rand(b, d // 2, generator=g) * 6
    cos, sin = (f(torch.cat([angle, angle], -1)).to(dtype) for f in (torch.cos, torch.sin))
    slot = torch.tensor([t - 2])
    cache = torch.randn(2, b, h, t, d, generator=g).to(dtype)
    caches = [cache.clone(), cache.clone()]
    want_q = reference.rope_cache(q, k, v, cos, sin, caches[0][0], caches[0][1], slot)
    got_keys, got_values = caches[1].to(DEVICE).unbind(0)
    got_q = tk.rope_cache(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), cos.to(DEVICE), sin.to(DEVICE), got_keys, got_values, slot.to(DEVICE))
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got_q.cpu(), want_q, rtol=tol, atol=tol)
    torch.testing.assert_close(got_keys.cpu(), caches[0][0], rtol=tol, atol=tol)
    assert torch.equal(got_values.cpu(), caches[0][1])
    # the reference is the model's rotary embedding, and only the slot was written
    mq, mk = apply_rotary_pos_emb(q[:, :, None], k[:, :, None], cos[:, None], sin[:, None])
    assert torch.equal(want_q, mq[:, :, 0]) and torch.equal(caches[0][0][:, :, t - 2], mk[:, :, 0])
    assert torch.equal(caches[0][1][:, :, t - 2], v)


@in_process
@pytest.mark.parametrize("b,h,t,d", [(1, 2, 1, 16), (2, 3, 37, 24), (1, 4, 70, 64), (3, 1, 129, 9)])
def test_decode_attention_matches_reference(b, h, t, d):
    g = _gen(b * 100 + t + d)
    q = torch.randn(b, h, d, generator=g)
    k, v = torch.randn(2, b, h, t, d, generator=g)
    valid = torch.rand(b, t, generator=g) > 0.3
    valid[:, -1] = True  # the query's own key is always valid
    # a non-contiguous cache view, as a cache that was allocated longer and sliced
    k_big = torch.randn(b, h, t + 5, d, generator=g)
    k_big[:, :, :t] = k
    got = tk.decode_attention(q.to(DEVICE), k_big[:, :, :t].to(DEVICE), v.to(DEVICE), valid.to(DEVICE)).cpu()
    want = reference.decode_attention(q, k, v, valid)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the reference agrees with SDPA under the same boolean mask
    sdpa = torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=valid[:, None, None, :])[:, :, 0]
    torch.testing.assert_close(want, sdpa, rtol=1e-5, atol=1e-5)


@in_process
@pytest.mark.parametrize("b,h,d,t", [(1, 37, 10, 5), (3, 1100, 16, 1030), (2, 64, 128, 97)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_inputs_match_reference(b, h, d, t, dtype):
    g = _gen(b * 13 + h + d + t)
    steps, vocab = 6, 50
    embed, slot_embeds = torch.randn(vocab, h, generator=g).to(dtype), torch.randn(steps, h, generator=g).to(dtype)
    cos, sin = torch.randn(2, steps, d, generator=g).to(dtype)
    causal, prefill = torch.rand(steps, t, generator=g) > 0.5, torch.rand(b, t, generator=g) > 0.5
    token, i = torch.randint(0, vocab, (b, 1), generator=g), torch.tensor(steps - 2)
    want = reference.step_inputs(token, i, embed, slot_embeds, cos, sin, causal, prefill, 7)
    got = tk.step_inputs(*(x.to(DEVICE) for x in (token, i, embed, slot_embeds, cos, sin, causal, prefill)), 7)
    assert want[4].tolist() == [7 + steps - 2]
    tol = 0 if dtype == torch.float32 else 1e-2  # bfloat16: the interpreter truncates where a GPU rounds to nearest
    torch.testing.assert_close(got[0].cpu(), want[0], rtol=tol, atol=tol)
    for got_t, want_t in zip(got[1:], want[1:]):
        assert got_t.shape == want_t.shape and torch.equal(got_t.cpu(), want_t)
    # the reference is the model's own step input (embed_actions = token + slot embedding)
    assert torch.equal(want[0][:, 0], embed[token[:, 0]] + slot_embeds[steps - 2])


@in_process
@pytest.mark.parametrize("b,vocab,bins", [(1, 40, 33), (3, 300, 256), (2, 9, 9)])
def test_greedy_advance_matches_reference(b, vocab, bins):
    g = _gen(b + vocab + bins)
    logits = torch.randn(b, vocab, generator=g)
    logits[0, 3] = logits[0, 5] = logits[0, :bins].max() + 1  # a tie: the first index wins
    logits[:, bins:] = 100.0  # beyond the action bins: never picked
    length, i = 7, torch.tensor(2)
    token, tokens = torch.zeros(b, 1, dtype=torch.long), torch.randint(0, bins, (b, length), generator=g)
    want = [token.clone(), tokens.clone(), i.clone()]
    reference.greedy_advance(logits, bins, *want)
    got = [t.clone().to(DEVICE) for t in (token, tokens, i)]
    tk.greedy_advance(logits.to(DEVICE), bins, *got)
    for got_t, want_t in zip(got, want):
        assert torch.equal(got_t.cpu(), want_t)
    assert want[0][0, 0] == 3 and want[2] == 3 and torch.equal(want[1][:, 3:4], want[0]) and torch.equal(want[1][:, :3], tokens[:, :3])


@in_process
def test_dispatch_picks_reference_on_cpu_and_when_forced(monkeypatch):
    x = torch.randn(2, 8)
    monkeypatch.delenv("EMBODYHUB_KERNELS", raising=False)
    assert kernels.backend(x) == "torch"
    monkeypatch.setenv("EMBODYHUB_KERNELS", "triton")
    assert kernels.backend(x) == "triton"
    if _interpreted():  # forced Triton on CPU tensors runs only under the interpreter
        q, s = quantize_int8(torch.randn(5, 8))
        torch.testing.assert_close(kernels.int8_linear(x, q, s), reference.int8_linear(x, q, s), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("EMBODYHUB_KERNELS", "torch")
    assert kernels.backend(x.to(DEVICE)) == "torch"


@in_process
@torch.no_grad()
def test_quantized_fused_wam_decodes_the_same_tokens_through_the_triton_kernels(monkeypatch):
    """End to end: an int8 WAM with fused decoder layers decodes its action chunk through the Triton
    kernels (GEMM for the prefill, GEMV, decode attention, add + RMSNorm per token) exactly as through
    the torch references."""
    from embodyhub.embodiment import load_robot
    from embodyhub.export import QuantConfig, quantize_model
    from embodyhub.export.fused import fuse_decoder
    from embodyhub.export.onnx import example_inputs
    from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor

    torch.manual_seed(0)
    processor = WamProcessor(chunk_length=1)
    emb = load_robot("panda")
    model = WamForActionPrediction(WamConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, chunk_length=1))
    quantize_model(model.eval(), QuantConfig("int8"))
    fuse_decoder(model)
    q, goal = example_inputs(emb, 2)
    inputs = dict(processor({"state": q, "goal": goal}, emb))
    inputs.pop("action_decoder")
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    model.to(DEVICE)
    dims, steps = inputs.pop("action_dims"), inputs.pop("action_steps")
    monkeypatch.setenv("EMBODYHUB_KERNELS", "torch")
    want = model.sample_action_tokens(dims, steps, imagine=True, **inputs)
    monkeypatch.setenv("EMBODYHUB_KERNELS", "triton")
    got = model.sample_action_tokens(dims, steps, imagine=True, **inputs)
    assert torch.equal(got["tokens"], want["tokens"])
    torch.testing.assert_close(got["world"], want["world"], rtol=1e-4, atol=1e-5)


@in_process
@torch.no_grad()
def test_graphed_decoder_decodes_the_same_tokens_through_the_triton_kernels(monkeypatch):
    """The GPU runtime's step end to end through the Triton kernels (step inputs from the tables, fused
    layers, greedy pick and bookkeeping), as on CUDA but eager: the tokens of the torch references."""
    from embodyhub.embodiment import load_robot
    from embodyhub.export import GraphedDecoder, QuantConfig, quantize_model
    from embodyhub.export.fused import fuse_decoder
    from embodyhub.export.onnx import example_inputs
    from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor

    torch.manual_seed(1)
    processor = WamProcessor(chunk_length=1)
    emb = load_robot("panda")
    model = WamForActionPrediction(WamConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, chunk_length=1))
    quantize_model(model.eval(), QuantConfig("int4", group_size=16))
    decoder = GraphedDecoder(fuse_decoder(model.to(DEVICE)), processor, emb, dequantize=False)  # as on CUDA
    q, goal = example_inputs(emb, 2)
    monkeypatch.setenv("EMBODYHUB_KERNELS", "torch")
    want = decoder(q, goal)
    monkeypatch.setenv("EMBODYHUB_KERNELS", "triton")
    assert torch.equal(decoder(q, goal), want)


@pytest.mark.skipif(
    not torch.cuda.is_available() or not tk.pdl_available(torch.empty(0, device="cuda")),
    reason="programmatic dependent launch needs an sm_90+ GPU and a Triton that has it",
)
@torch.no_grad()
def test_dependent_gemvs_under_programmatic_dependent_launch_match_the_reference(monkeypatch):
    """With ``PDL`` each GEMV starts while the one before it runs and reads its input only after the wait:
    a chain where every GEMV consumes the previous output (int4 and int8, with residuals), eager and
    replayed as a CUDA graph, gives the references' numbers."""
    from embodyhub.export.quantize import QuantizedLinear

    torch.manual_seed(0)
    layers = [QuantizedLinear.from_linear(torch.nn.Linear(512, 512), p, 64).cuda() for p in ("int4", "int8") * 4]
    x = torch.randn(1, 512, device="cuda")

    def chain() -> torch.Tensor:
        h = x
        for layer in layers:
            h = layer(h, residual=h)  # back to back: every GEMV reads the previous one's output
        return h

    monkeypatch.setattr(tk, "PDL", False)
    want = chain()
    monkeypatch.setattr(tk, "PDL", True)
    torch.testing.assert_close(chain(), want, rtol=1e-4, atol=1e-5)
    chain()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(3):
        graph.replay()
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
