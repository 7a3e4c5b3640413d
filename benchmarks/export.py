"""Thor export benchmark: size, action error, closed-loop success and latency per precision.

Peer: the same WAM in float32 (eager PyTorch, and its own float32 bundle for sizes). On CPU it prints,
for float32 / float16 / int8 / int4 / fp8 bundles of the tiny base: bundle and weight-file size vs float32
and vs float16, the
ONNX bytes (the policy graph's structure and the external-data file the bundle's graphs share), the
action error vs float32 in normalized units (fraction of each canonical dimension's range) and token
agreement, closed-loop reach success of the quantized model (``evaluate_reach``), and latency per
chunk (token decoding) of eager float32, the quantized torch-reference path and onnxruntime.

With CUDA it adds: batch-1 GEMV on the Linear shapes of the tiny WAM and of two 100M+-parameter WAM
configs (BIG: 8 layers of 1024; WIDE: 2 layers of 2048), bf16 torch vs the fused Triton int8/int4
kernels (GPU time per call inside a CUDA graph, L2 flushed), next to the bandwidth floor (weight bytes /
measured device copy bandwidth); and each config's chunk decode at bf16 / int8 / int4 through
``GraphedDecoder`` (fused layers; CUDA graph replays: the prefill, then one per token) vs its floor, with
eager decoding for comparison and the profiler's count of kernels per step. The plain rows and columns
launch every kernel without programmatic dependent launch; on sm_90+ each precision is decoded again with
it, as the Triton kernels launch by default (``int4 pdl``: each kernel starts while the one before it
finishes, a GEMV loading its first weights meanwhile), and those chunks' tokens are checked against the
plain ones; the GEMV table adds the int4 GEMV so launched. A second GEMV table gives bf16's and int4's
time per further call, the graph's fixed cost removed (n and 3n copies timed).

    python benchmarks/export.py [--model DIR] [--robot panda] [--episodes 50] [--sizes] [--out /tmp/eh_export_bench]

``--sizes`` adds the weight-file and decode-step-graph sizes of a wider (17M-parameter) WAM per precision,
and onnxruntime's latency per chunk on its policy graph.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.export import QuantConfig, quantize_model
from embodyhub.export.fused import fuse_decoder
from embodyhub.export.onnx import (
    ONNX_DATA_NAME,
    PolicyGraph,
    example_inputs,
    ort_session,
)
from embodyhub.export.thor import ExportRecipe, build_bundle, load_model, median_ms
from embodyhub.training import evaluate_reach

PRECISIONS = ["float32", "float16", "int8", "int4", "fp8"]
BIG = dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=16, intermediate_size=4096)  # ~134M params (GPU tables)
WIDE = dict(hidden_size=2048, num_hidden_layers=2, num_attention_heads=16, intermediate_size=8192)  # ~134M params, 4x fewer layers
MID = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048)  # ~17M params (file sizes)


def action_error(model, reference, processor, emb, samples: int = 32) -> tuple[float, float, float]:
    """Mean and max |canonical(quantized) - canonical(float32)| as a fraction of each dimension's range
    (over the dimensions the robot predicts), and token agreement, on random observations."""
    width = (processor.bins.high - processor.bins.low).float()
    dims = processor.schedule(emb)[0].unique()
    errs, agree = [], []
    for seed in range(samples):
        q, goal = example_inputs(emb, 1, 1000 + seed)
        with torch.no_grad():
            t_ref, c_ref = PolicyGraph(reference, processor, emb)(q, goal)
            t_q, c_q = PolicyGraph(model, processor, emb)(q, goal)
        errs.append(((c_q - c_ref).abs() / width)[..., dims].flatten())
        agree.append(float((t_q == t_ref).float().mean()))
    e = torch.cat(errs)
    return float(e.mean()), float(e.max()), sum(agree) / len(agree)


def chunk_runners(model, processor, emb, onnx_path: Path, q: torch.Tensor, goal: torch.Tensor) -> dict[str, Callable[[], None]]:
    """One chunk's token decoding at batch 1: eager torch (reference kernels), eager with the weights
    dequantized once per chunk, and onnxruntime on the bundle's graph."""
    graph = PolicyGraph(model, processor, emb)
    session = ort_session(onnx_path)
    feed = {"q": q.numpy(), "goal": goal.numpy()}

    @torch.no_grad()
    def eager() -> None:  # the graph's work (processor, token decoding, bin decoding), reference kernels per token
        batch = dict(processor({"state": q, "goal": goal}, emb))
        batch.pop("action_decoder")
        dims, steps = batch.pop("action_dims"), batch.pop("action_steps")
        graph.canonical(model.sample_action_tokens(dims, steps, **batch)["tokens"], batch["state"])

    @torch.no_grad()
    def once() -> None:  # PolicyGraph dequantizes once per chunk
        graph(q, goal)

    return {"torch": eager, "once": once, "ort": lambda: session.run(None, feed)}


def success(model, processor, robots, episodes: int) -> float:
    results = evaluate_reach(model, processor, robots, episodes=episodes, goal_distance=0.3)
    return sum(r["success_rate"] for r in results.values()) / len(results)


def cpu_table(args: argparse.Namespace) -> None:
    model_dir = args.model
    if model_dir is None:
        from embodyhub.pretrained import tiny_base

        model_dir = tiny_base()
    reference, processor, _ = load_model(model_dir)
    emb = processor.resolve(args.robot)
    robots = [processor.resolve(n) for n in processor.embodiment_names]
    q, goal = example_inputs(emb, 1)
    rows, runners = [], {}
    for precision in PRECISIONS:
        model, _, _ = load_model(model_dir)
        config = QuantConfig(precision, group_size=args.group_size)
        out = Path(args.out) / precision
        manifest = build_bundle(model, processor, out, config, [args.robot], latency_repeats=args.repeats)
        files = manifest["files"]
        mean_err, max_err, agree = action_error(model, reference, processor, emb)
        runners[precision] = chunk_runners(model, processor, emb, out / f"policy_{args.robot}.onnx", q, goal)
        rows.append({
            "precision": precision,
            "bundle_bytes": manifest["bytes_total"],
            "weights_bytes": files["model.quantized.safetensors"]["bytes"],
            "graph_bytes": files[f"policy_{args.robot}.onnx"]["bytes"],
            "onnx_data_bytes": files[ONNX_DATA_NAME]["bytes"],
            "err_mean": mean_err, "err_max": max_err, "token_agreement": agree,
            "onnx_max_abs": manifest["embodiments"][0]["onnx_check"]["max_abs_canonical"],
            "success": success(model, processor, robots, args.episodes),
            "budget_ms": manifest["embodiments"][0]["budget_ms"],
        })
        print(f"built {precision}: {out}", flush=True)
    # Latency round-robin over precisions and paths, so a busy neighbour on a shared CPU slows all alike.
    samples: dict[tuple[str, str], list[float]] = {(p, k): [] for p in runners for k in ("torch", "once", "ort")}
    for _ in range(args.repeats + 2):
        for precision, fns in runners.items():
            for kind, fn in fns.items():
                start = time.perf_counter()
                fn()
                samples[(precision, kind)].append((time.perf_counter() - start) * 1e3)
    for r in rows:
        for kind in ("torch", "once", "ort"):
            r[f"{kind}_ms"] = statistics.median(samples[(r["precision"], kind)][2:])
    f32, f16 = rows[0], rows[1]
    print(f"\ntiny base {model_dir}, robot {args.robot}, CPU {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"{'precision':<9} {'bundle MB':>9} {'x f32':>6} {'x f16':>6} {'weights MB':>10} {'x f32':>6} {'x f16':>6} {'graph KB':>8} {'data MB':>7} {'err mean':>9} {'err max':>8} "
          f"{'tokens':>7} {'onnx diff':>9} {'success':>8} {'torch ms':>9} {'once ms':>8} {'ort ms':>7}")
    for r in rows:
        print(f"{r['precision']:<9} {r['bundle_bytes'] / 1e6:>9.2f} {r['bundle_bytes'] / f32['bundle_bytes']:>6.3f} "
              f"{r['bundle_bytes'] / f16['bundle_bytes']:>6.3f} {r['weights_bytes'] / 1e6:>10.2f} {r['weights_bytes'] / f32['weights_bytes']:>6.3f} "
              f"{r['weights_bytes'] / f16['weights_bytes']:>6.3f} {r['graph_bytes'] / 1e3:>8.1f} "
              f"{r['onnx_data_bytes'] / 1e6:>7.2f} "
              f"{r['err_mean']:>9.4f} {r['err_max']:>8.4f} {r['token_agreement']:>7.1%} {r['onnx_max_abs']:>9.1e} "
              f"{r['success']:>8.1%} {r['torch_ms']:>9.1f} {r['once_ms']:>8.1f} {r['ort_ms']:>7.1f}")
    print(f"graph: policy_{args.robot}.onnx (prefill + Loop over the action tokens + bin decoding, weights external); "
          f"data: {ONNX_DATA_NAME}, the weights all the bundle's graphs share")
    print(f"success: mean closed-loop reach success over {len(robots)} robots x {args.episodes} episodes (quantized torch path)")
    print(f"latency: median ms per chunk at batch 1, round-robin over {args.repeats} rounds (budget {f32['budget_ms']:.0f} ms for "
          f"{args.robot}, which also pays the host's IK decode); all three run the bundle graph's work (processor, token "
          "decoding, bin decoding): torch = eager with the reference kernels, once = weights dequantized once per chunk "
          "(PolicyGraph's own path; the float32 row is plain eager), ort = onnxruntime 1 thread")
    (Path(args.out) / "export_bench.json").write_text(json.dumps(rows, indent=2))


def mid_sizes(args: argparse.Namespace) -> None:
    """Weight file and decode-step graph sizes per precision for a wider WAM (random weights: sizes depend on
    shapes only), where the weights rather than the graph structure dominate, and onnxruntime's latency per
    chunk on its policy graph (1 thread; ``ort_session``). The decode step holds each weight once (a
    standalone policy graph holds the prefill's and the Loop body's copies; a bundle stores them once in its
    shared data file)."""
    from embodyhub.export.onnx import OUTPUT_NAMES, export_decode_step, export_policy
    from embodyhub.export.quantize import save_quantized
    from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor

    processor = WamProcessor(chunk_length=4)
    processor.add_embodiment(load_robot(args.robot))
    feed = dict(zip(("q", "goal"), (t.numpy() for t in example_inputs(processor.resolve(args.robot), 1))))
    rows = []
    for precision in PRECISIONS:
        torch.manual_seed(0)
        model = WamForActionPrediction(WamConfig(chunk_length=4, **MID)).eval()
        params = sum(p.numel() for p in model.parameters())
        quantize_model(model, QuantConfig(precision, group_size=args.group_size))
        out = Path(args.out) / f"mid_{precision}"
        weights = save_quantized(model, out).stat().st_size
        onnx_bytes = export_decode_step(model, processor, args.robot, out / "decode_step.onnx").stat().st_size
        session = ort_session(export_policy(model, processor, args.robot, out / "policy.onnx"))
        ort_ms = median_ms(lambda: session.run(OUTPUT_NAMES, feed), args.repeats)
        rows.append((precision, params, weights, onnx_bytes, ort_ms))
    length = processor.schedule(processor.resolve(args.robot))[0].numel()
    print(f"\nwider WAM {MID}: files per precision, onnxruntime ms per chunk ({args.robot}, {length} action tokens, 1 thread)")
    print(f"{'precision':<9} {'params M':>8} {'weights MB':>10} {'x f32':>6} {'x f16':>6} {'step onnx MB':>12} {'x f32':>6} {'x f16':>6} {'ort ms':>7}")
    f32, f16 = rows[0], rows[1]
    for precision, params, weights, onnx_bytes, ort_ms in rows:
        print(f"{precision:<9} {params / 1e6:>8.1f} {weights / 1e6:>10.1f} {weights / f32[2]:>6.3f} {weights / f16[2]:>6.3f} "
              f"{onnx_bytes / 1e6:>12.1f} {onnx_bytes / f32[3]:>6.3f} {onnx_bytes / f16[3]:>6.3f} {ort_ms:>7.1f}")


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write of a 1 GiB buffer, CUDA events)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = gpu_ms(lambda: dst.copy_(src))
    return 2 * (1 << 30) / (ms / 1e3)


def gpu_ms(fn: Callable[[], object]) -> float:
    """Median GPU time of ``fn`` in ms (CUDA events; the L2 cache is flushed before each call, so weights
    stream from device memory as in a decode step rather than from a warm 50+ MB cache)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def decoder_bytes(model) -> int:
    """Bytes a decode step reads: the decoder layers, the final norm and the action head (stored form; each
    storage once, as the fused layers' stacked projections and their row slices share one)."""
    parts = [model.model.layers, model.model.norm, model.action_head]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for part in parts for t in part.state_dict().values()}
    return sum(storages.values())


def wam(config: dict, precision: str, device: str = "cuda") -> tuple[torch.nn.Module, int]:
    """A random-weight WAM (chunk_length 8) at ``precision`` and its parameter count: bf16 weights, or
    int8/int4 (group 128) with bf16 activations and float tensors, every decoder layer fused; on ``device``."""
    from embodyhub.models.wam import WamConfig, WamForActionPrediction

    torch.manual_seed(0)
    with torch.device(device):
        model = WamForActionPrediction(WamConfig(chunk_length=8, **config)).eval()
    params = sum(p.numel() for p in model.parameters())
    if precision != "bf16":
        quantize_model(model, QuantConfig(precision, group_size=128, keep_float="bfloat16"))
    return fuse_decoder(model.to(torch.bfloat16)), params  # codes stay integer; scales, norms and activations bf16


def streamed_copies(nbytes: int) -> int:
    """How many copies of a layer of ``nbytes`` to time together: enough to be well past the L2 cache."""
    return min(512, max(8, (256 << 20) // nbytes))


def streamed_us(calls: list[Callable[[], object]]) -> float:
    """GPU time per call, in us, of ``calls`` (each reading its own copy of the weights) captured in one CUDA
    graph and replayed with the L2 cache flushed: like the projections of a decode step, no launch overhead
    and every weight streamed from device memory."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile and warm up outside the capture
        for call in calls[:2]:
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    return 1e3 * gpu_ms(graph.replay) / len(calls)


def bf16_linear_calls(x: torch.Tensor, w16: torch.Tensor, copies: int) -> list[Callable[[], object]]:
    """bf16 torch's Linear on ``x``, the peer of the GEMV tables: one call per copy of ``w16``."""
    return [lambda w=w16.clone(): torch.nn.functional.linear(x, w) for _ in range(copies)]


def streamed_and_marginal_us(calls: list[Callable[[], object]]) -> tuple[float, float]:
    """``streamed_us`` of the first third of ``calls`` (3n of them), and the GPU time per further call: the
    graph's fixed cost (its launch, the first kernel's ramp-up) cancels in (T(3n) - T(n)) / 2n. At n = 8
    that cost, spread over the calls, moved a 6-8 us GEMV by 0.7-0.9 us (H200)."""
    first = streamed_us(calls[: len(calls) // 3])
    return first, (3 * streamed_us(calls) - first) / 2


def pdl_capable() -> bool:
    """Whether this GPU and Triton build can launch the kernels with programmatic dependent launch."""
    from embodyhub.export.kernels import triton_kernels

    return triton_kernels.pdl_available(torch.empty(0, device="cuda"))


@contextlib.contextmanager
def pdl(on: bool) -> Iterator[None]:
    """The Triton kernels launched with programmatic dependent launch inside the block (``triton_kernels.PDL``)."""
    from embodyhub.export.kernels import triton_kernels

    saved, triton_kernels.PDL = triton_kernels.PDL, on
    try:
        yield
    finally:
        triton_kernels.PDL = saved


def gemv_table(bandwidth: float) -> None:
    from embodyhub.export.quantize import QuantizedLinear
    from embodyhub.pretrained import tiny_base

    tiny = json.loads((Path(tiny_base()) / "config.json").read_text())
    shapes = {"tiny base": tiny, "134M (BIG)": BIG, "134M (WIDE)": WIDE}
    print(f"\nbatch-1 GEMV, GPU time per call (copies of the layer in one CUDA graph, L2 flushed), floor = bytes read / {bandwidth / 1e9:.0f} GB/s")
    print(f"{'config':<12} {'N x K':<12} {'bf16 us':>8} {'int8 us':>8} {'int4 us':>8} {'int4 pdl':>8} {'bf16 floor':>10} {'int4 floor':>10} {'bf16/int8':>9} "
          f"{'bf16/int4':>9} {'/int4 pdl':>9} {'int8 err':>8} {'int4 err':>8}")
    rows = []
    for label, cfg in shapes.items():
        for N, K in sorted({(cfg["intermediate_size"], cfg["hidden_size"]), (cfg["hidden_size"], cfg["intermediate_size"])}):
            linear = torch.nn.Linear(K, N, bias=False, device="cuda")
            x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
            w16 = linear.weight.detach().to(torch.bfloat16)
            copies = streamed_copies(w16.nbytes)
            us, marginal = {}, {}
            us["bf16"], marginal["bf16"] = streamed_and_marginal_us(bf16_linear_calls(x, w16, 3 * copies))
            floor, error = {"bf16": w16.nbytes}, {}
            want = torch.nn.functional.linear(x, w16).float()
            for precision in ("int8", "int4"):
                layer = QuantizedLinear.from_linear(linear, precision, 128).to(torch.bfloat16)
                error[precision] = float((layer(x).float() - want).abs().max() / want.abs().max())
                calls = [lambda m=m: m(x) for m in (copy.deepcopy(layer) for _ in range(3 * copies))]
                with pdl(False):
                    if precision == "int4":
                        us[precision], marginal[precision] = streamed_and_marginal_us(calls)
                    else:
                        us[precision] = streamed_us(calls[:copies])
                floor[precision] = sum(t.nbytes for t in layer.state_dict().values())
                if precision == "int4" and pdl_capable():
                    with pdl(True):
                        us["int4 pdl"], marginal["int4 pdl"] = streamed_and_marginal_us(calls)
            with_pdl = us.get("int4 pdl", float("nan"))
            print(f"{label:<12} {f'{N} x {K}':<12} {us['bf16']:>8.2f} {us['int8']:>8.2f} {us['int4']:>8.2f} {with_pdl:>8.2f} {1e6 * floor['bf16'] / bandwidth:>10.2f} "
                  f"{1e6 * floor['int4'] / bandwidth:>10.2f} {us['bf16'] / us['int8']:>9.2f} {us['bf16'] / us['int4']:>9.2f} {us['bf16'] / with_pdl:>9.2f} "
                  f"{error['int8']:>8.4f} {error['int4']:>8.4f}")
            per_call = [marginal.get(k, float("nan")) for k in ("bf16", "int4", "int4 pdl")]
            rows.append(f"{label:<12} {f'{N} x {K}':<12} {copies:>6} " + " ".join(f"{v:>9.2f}" for v in per_call + [per_call[0] / v for v in per_call[1:]]))
    print("err: max |quantized - bf16| / max |bf16| over the output (weight quantization error, not a kernel error)")
    print("\nthe same GEMVs, GPU time per further call: the graph's fixed cost removed, (T(3n) - T(n)) / 2n over n and 3n copies")
    print(f"{'config':<12} {'N x K':<12} {'n':>6} {'bf16 us':>9} {'int4 us':>9} {'int4 pdl':>9} {'bf16/int4':>9} {'/int4 pdl':>9}")
    print("\n".join(rows))


def chunk_table(bandwidth: float, robot: str) -> None:
    from embodyhub.models.wam import WamProcessor

    processor = WamProcessor(chunk_length=8)
    processor.add_embodiment(load_robot(robot))
    emb = processor.resolve(robot)
    q, goal = example_inputs(emb, 1)
    length = processor.schedule(emb)[0].numel()
    print(f"\nchunk decode, {robot} (chunk_length 8: {length} action tokens), batch 1, random weights; floor = {length} x bytes a step reads / bandwidth")
    print(f"{'config':<6} {'precision':<9} {'params M':>8} {'step MB':>7} {'eager ms':>8} {'chunk ms':>8} {'decode ms':>9} {'step us':>7} {'floor us':>8} "
          f"{'step/floor':>10} {'decode/floor':>12} {'kernels':>8} {'graph=eager':>11} {'vs bf16':>7}")
    precisions = ["bf16", "int8", "int4"] + (["int4 pdl", "int8 pdl", "bf16 pdl"] if pdl_capable() else [])
    for label, cfg in (("BIG", BIG), ("WIDE", WIDE)):
        chunks: dict[str, torch.Tensor] = {}
        for precision in precisions:
            base = precision.split()[0]
            try:
                with pdl(precision.endswith("pdl")):
                    tokens, row = chunk_row(cfg, base, processor, emb, q, goal, bandwidth)
            except Exception as error:  # noqa: BLE001  (one failing row must not hide the others)
                print(f"{label:<6} {precision:<9} failed: {error!r}")
                continue
            chunks[precision] = tokens
            vs_bf16 = f"{float((tokens == chunks.get('bf16', tokens)).float().mean()):>7.0%}"
            same = "" if precision == base else f"  {'same' if base in chunks and torch.equal(tokens, chunks[base]) else 'DIFFERENT'} tokens as {base} without PDL"
            print(f"{label:<6} {precision:<9} {row} {vs_bf16}{same}")
    print("eager: GraphedDecoder without the CUDA graph (kernels launched one by one); chunk: GraphedDecoder end to end, wall "
          "clock (host processor, then CUDA graph replays: the prefill, one per further token); decode: GPU time of the replayed "
          "prefill + steps (the floor counts every token reading every weight once); step: GPU time per replayed step; "
          "kernels: CUDA kernels per step (profiler, eager steps); "
          "graph=eager: same tokens both ways; vs bf16: token agreement with the bf16 model")


@torch.no_grad()
def chunk_row(cfg: dict, precision: str, processor, emb, q: torch.Tensor, goal: torch.Tensor, bandwidth: float) -> tuple[torch.Tensor, str]:
    """One row of the chunk table: the graphed tokens and the formatted measurements."""
    from embodyhub.export.runtime import GraphedDecoder

    model, params = wam(cfg, precision)
    step_bytes = decoder_bytes(model)
    decoder, eager = GraphedDecoder(model, processor, emb), GraphedDecoder(model, processor, emb, graph=False)
    tokens = decoder(q, goal)
    agree = "same" if torch.equal(tokens, eager(q, goal)) else "DIFFER"
    length = tokens.shape[1]

    def chunk(run) -> None:
        run(q, goal)
        torch.cuda.synchronize()

    chunk_ms, eager_ms = median_ms(lambda: chunk(decoder), 10), median_ms(lambda: chunk(eager), 1, warmup=1)
    decoder.load(q, goal)
    prefill_ms = gpu_ms(decoder.prefill)
    steps_ms = gpu_ms(decoder.decode)
    step_us, floor_us = 1e3 * steps_ms / (length - 1), 1e6 * step_bytes / bandwidth
    decode_ms = prefill_ms + steps_ms
    return tokens, (f"{params / 1e6:>8.1f} {step_bytes / 1e6:>7.1f} {eager_ms:>8.1f} {chunk_ms:>8.2f} {decode_ms:>9.2f} {step_us:>7.1f} {floor_us:>8.1f} "
                    f"{step_us / floor_us:>10.2f} {decode_ms * 1e3 / (length * floor_us):>12.2f} {step_kernels(eager, q, goal):>8.1f} {agree:>11}")


def step_kernels(eager, q: torch.Tensor, goal: torch.Tensor) -> float:
    """CUDA kernels per decode step, from the profiler over one eager chunk's steps (the two resets that start
    ``decode`` left out): what ``benchmarks/step_kernels.py`` estimates on CPU."""
    from torch.profiler import ProfilerActivity, profile

    eager.load(q, goal)
    eager.prefill()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        eager.decode()
        torch.cuda.synchronize()
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return (kernels - 2) / (eager.length - 1)


def gpu_tables(args: argparse.Namespace) -> None:
    bandwidth = copy_bandwidth()
    print(f"\nGPU {torch.cuda.get_device_name()}, torch {torch.__version__}: copy bandwidth {bandwidth / 1e9:.0f} GB/s (read + write)")
    gemv_table(bandwidth)
    chunk_table(bandwidth, args.robot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="saved model folder (default: the shipped tiny base)")
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--group-size", type=int, default=ExportRecipe.group_size, help="int4 group size (default: the export recipe's)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="/tmp/eh_export_bench")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU tables")
    parser.add_argument("--sizes", action="store_true", help="also the file sizes and onnxruntime latency of a wider (17M) WAM per precision")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.skip_cpu:
        cpu_table(args)
    if args.sizes:
        mid_sizes(args)
    if torch.cuda.is_available():
        gpu_tables(args)
    else:
        print("\nno CUDA device: the GPU tables (fused int4/int8 GEMV vs bf16, 100M-config decode vs bandwidth floor) were not run")


if __name__ == "__main__":
    main()
