"""Launch-configuration sweep of the fused batch-1 GEMV kernels (int8, grouped int4) on this GPU.

Peer: bf16 torch (``F.linear``) on the same shape. For each shape it prints the GPU time per call of
bf16 torch, of the kernel as ``int8_linear``/``int4_linear`` launch it by default (``_gemv_blocks``;
int4 also without its 128-register cap), and of the fastest configurations (rows per program, columns
or groups per load, warps), all launched plainly (``PDL`` off, whatever the module default) and each
timed like ``benchmarks/export.py``'s GEMV table (copies of the layer in one CUDA graph, L2 flushed); then, on sm_90+,
the default and those fastest again under programmatic dependent launch (``PDL``: each call starts, and
loads its first weights, while the previous one finishes). Every configuration's output is first checked
against the torch reference; one that misses is reported and not timed. The default shape is the largest
Linear of the 136M-parameter BIG WAM (1024 x 4096; 56 configurations); the space includes whole rows per
load (a program then reads its rows in one pass). Pipeline stages are not swept: ``--dry 90`` shows the
same PTX for 1 and 3 stages in every configuration (no loop of these kernels is software-pipelined).

    python benchmarks/kernel_sweep.py [--shapes 1024x4096,2048x8192] [--top 5] [--all]
    TRITON_INTERPRET=1 python benchmarks/kernel_sweep.py --check   # no GPU: every configuration vs the reference, small shapes
    python benchmarks/kernel_sweep.py --dry 90                      # no GPU: each configuration compiled for sm_90: registers, instructions
"""

from __future__ import annotations

import argparse
import copy
import itertools
from collections.abc import Callable
from types import ModuleType

import torch

from embodyhub.export.kernels import reference
from embodyhub.export.quantize import DEFAULT_GROUP_SIZE, QuantizedLinear

SMALL = [(48, 512), (40, 1024)]  # --check shapes (N x K): whole groups, rows that do not fill the last block


def configs(precision: str, N: int, K: int, group: int) -> list[dict[str, int]]:
    """The launch space for one shape: loads from a quarter row up to whole rows (capped by the register
    budget of 64 KB of weights per program), 1-8 rows per program, 4 or 8 warps."""
    if precision == "int4":
        half_groups = K // 2 // group
        widths = [g for g in (1, 2, 4, 8, 16, 32) if g <= half_groups and g * group <= 4096]
        space = [{"BLOCK_G": g} for g in widths[-3:]]
        row_bytes = [c["BLOCK_G"] * group for c in space]
    else:
        widths = [k for k in (256, 512, 1024, 2048, 4096, 8192) if k <= max(256, K)]
        space = [{"BLOCK_K": k} for k in widths[-4:]]
        row_bytes = [c["BLOCK_K"] for c in space]
    out = []
    for (load, width), rows, warps in itertools.product(zip(space, row_bytes), (1, 2, 4, 8), (4, 8)):
        if rows * width <= 65536:
            out.append({**load, "BLOCK_N": rows, "num_warps": warps})
    return out


def layer(precision: str, N: int, K: int, device: str, dtype: torch.dtype) -> QuantizedLinear:
    torch.manual_seed(0)
    linear = torch.nn.Linear(K, N, bias=False, device=device)
    return QuantizedLinear.from_linear(linear, precision, DEFAULT_GROUP_SIZE).to(dtype)


def call(m: QuantizedLinear, x: torch.Tensor, gemv: dict[str, int] | None, kernels: ModuleType | None = None) -> torch.Tensor:
    """``m``'s fused Linear with the launch ``gemv``, from ``kernels`` (default: this tree's Triton kernels)."""
    if kernels is None:
        from embodyhub.export.kernels import triton_kernels as kernels
    if m.precision == "int8":
        return kernels.int8_linear(x, m.qweight, m.scale, gemv=gemv)
    return kernels.int4_linear(x, m.qweight, m.scale, m.zero, m.group_size, gemv=gemv)


def want(m: QuantizedLinear, x: torch.Tensor) -> torch.Tensor:
    if m.precision == "int8":
        return reference.int8_linear(x, m.qweight, m.scale)
    return reference.int4_linear(x, m.qweight, m.scale, m.zero, m.group_size)


def matches(m: QuantizedLinear, x: torch.Tensor, gemv: dict[str, int] | None) -> bool:
    ref = want(m, x).float()
    return bool(((call(m, x, gemv).float() - ref).abs().max() <= 2e-2 * ref.abs().max() + 1e-3).item())


def label(gemv: dict[str, int]) -> str:
    if not gemv:
        return "default"
    load = f"BG{gemv['BLOCK_G']}" if "BLOCK_G" in gemv else f"BK{gemv['BLOCK_K']}"
    return f"BN{gemv['BLOCK_N']} {load} W{gemv['num_warps']}" + (" PDL" if gemv.get("PDL") else "")


def check(args: argparse.Namespace) -> None:
    """Every configuration's output against the reference, on CPU tensors under Triton's interpreter."""
    bad = total = 0
    for precision, (N, K) in itertools.product(("int8", "int4"), SMALL):
        m, x = layer(precision, N, K, "cpu", torch.float32), torch.randn(1, K)
        for gemv in configs(precision, N, K, m.group_size):
            total += 1
            if not matches(m, x, gemv):
                bad += 1
                print(f"MISMATCH {precision} {N}x{K} {label(gemv)}")
    print(f"{total - bad}/{total} configurations match the reference")


def dry(args: argparse.Namespace) -> None:
    """Every configuration compiled for sm_``args.dry`` on CPU tensors (``compile_check``): registers, spills,
    how many programs the register file lets a multiprocessor hold, the SASS instructions a thread executes
    per weight and how many of them are int-to-float conversions (a quarter-rate pipe up to sm_90), and
    whether 1 and 3 pipeline stages compile to the same PTX; no timing."""
    from embodyhub.export.kernels import triton_kernels as tk
    from embodyhub.export.kernels.compile_check import compiled_variants, dry_target, executed_opcodes

    def compiled(m: QuantizedLinear, x: torch.Tensor, gemv: dict[str, int]) -> tuple[object, dict[str, object]]:
        kernel = tk._int8_gemv_kernel if m.precision == "int8" else tk._int4_gemv_grouped_kernel
        with dry_target(args.dry) as launches:
            call(m, x, gemv or None)
            (variant,) = compiled_variants(kernel)
            asm = variant.asm
        (launch,) = launches
        return launch, asm

    same = total = 0
    for shape in args.shapes.split(","):
        N, K = (int(v) for v in shape.split("x"))
        x = torch.randn(1, K, dtype=torch.bfloat16)
        for precision in ("int8", "int4"):
            m = layer(precision, N, K, "cpu", torch.bfloat16)
            print(f"{precision} {N} x {K}, sm_{args.dry}:")
            for gemv in [{}] + configs(precision, N, K, m.group_size):
                launch, asm = compiled(m, x, gemv)
                if gemv:
                    total += 1
                    same += all(compiled(m, x, {**gemv, "num_stages": n})[1]["ptx"] == asm["ptx"] for n in (1, 3))
                blocks = dict(item.split("=") for item in launch.constants.split())
                tile = int(blocks["BLOCK_G"]) * m.group_size if precision == "int4" else int(blocks["BLOCK_K"])
                opcodes = executed_opcodes(asm["cubin"], -(-m.qweight.shape[1] // tile))
                weights = N * K / (launch.grid[0] * launch.num_warps * 32)  # per thread
                convert = sum(n for op, n in opcodes.items() if op.startswith("I2F"))
                print(f"  {label(gemv):<18} programs {launch.grid[0]:>5}  registers {launch.registers:>3}  stack {launch.stack:>3} B  "
                      f"programs/SM (registers) {launch.programs_per_sm:>2}  instructions/weight {sum(opcodes.values()) / weights:5.2f}  "
                      f"int-to-float/weight {convert / weights:4.2f}  {launch.constants}")
    print(f"1, 3 and the default pipeline stages compile to the same PTX in {same} of {total} configurations")


def sweep(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from export import bf16_linear_calls, pdl_capable, streamed_copies, streamed_us

    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}; GPU us per call (copies of the layer in one CUDA graph, L2 flushed)")
    for shape in args.shapes.split(","):
        N, K = (int(v) for v in shape.split("x"))
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        w16 = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        copies = streamed_copies(w16.nbytes)
        bf16 = streamed_us(bf16_linear_calls(x, w16, copies))
        for precision in ("int8", "int4"):
            m = layer(precision, N, K, "cuda", torch.bfloat16)
            layers = [copy.deepcopy(m) for _ in range(copies)]

            def timed(gemv: dict[str, int] | None, layers: list[QuantizedLinear] = layers) -> float:
                calls: list[Callable[[], object]] = [lambda q=q: call(q, x, gemv) for q in layers]
                return streamed_us(calls)

            default = timed({"PDL": False})
            rows, failed = [], []
            for gemv in ({**c, "PDL": False} for c in configs(precision, N, K, m.group_size)):
                try:
                    if not matches(m, x, gemv):
                        failed.append(f"{label(gemv)} (wrong output)")
                        continue
                    rows.append((timed(gemv), gemv))
                except Exception as error:  # noqa: BLE001  (a configuration the compiler rejects is reported, not fatal)
                    failed.append(f"{label(gemv)} ({type(error).__name__})")
            rows.sort(key=lambda row: row[0])
            best = "; ".join(f"{us:.2f} us {label(gemv)} ({bf16 / us:.2f}x)" for us, gemv in rows[: args.top])
            print(f"{precision} {N} x {K}: bf16 torch {bf16:.2f} us, default {default:.2f} us ({bf16 / default:.2f}x); best: {best}", flush=True)
            if precision == "int4":  # the default caps registers at 128 (int4_linear): the same launch without the cap
                print(f"  default without the register cap: {timed({'PDL': False, 'maxnreg': None}):.2f} us", flush=True)
            if args.all:
                print("  all: " + "; ".join(f"{label(gemv)} {us:.2f}" for us, gemv in rows))
            if pdl_capable():
                pdl = []
                for gemv in [{}] + [gemv for _, gemv in rows[: args.top]]:
                    try:
                        pdl.append(f"{timed({**gemv, 'PDL': True}):.2f} us {label(gemv)}")
                    except Exception as error:  # noqa: BLE001
                        pdl.append(f"{label(gemv)} failed ({type(error).__name__}: {str(error)[:80]})")
                print(f"  with PDL: {'; '.join(pdl)}", flush=True)
            if failed:
                print(f"  not timed: {', '.join(failed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1024x4096", help="comma-separated N x K (out x in features)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--all", action="store_true", help="also list every configuration's time, fastest first")
    parser.add_argument("--check", action="store_true", help="check every configuration against the reference (CPU, interpreter)")
    parser.add_argument("--dry", type=int, metavar="ARCH", help="compile every configuration for this CUDA compute capability (no GPU): registers, instructions per weight")
    args = parser.parse_args()
    if args.dry:
        dry(args)
    elif args.check or not torch.cuda.is_available():
        check(args)
    else:
        sweep(args)


if __name__ == "__main__":
    main()
