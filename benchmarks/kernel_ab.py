"""A/B of the fused batch-1 GEMVs: this tree's Triton kernels against another commit's, on one GPU.

Peers: the ``triton_kernels.py`` of ``--against`` (``git show REV:embodyhub/export/kernels/triton_kernels.py``,
loaded beside this tree's and importing this tree's ``reference.py``), and bf16 torch. For each shape and
precision, both modules' default launches are first checked against the reference, then timed like
``export.py``'s GEMV tables (copies of the layer in one CUDA graph, L2 flushed): per call over n copies,
and per further call with the graph's fixed cost removed. Each is timed plainly and, on sm_90+, with
programmatic dependent launch, and the two kernels alternate ``--repeats`` times, so the run-to-run
noise shows next to the difference. ``--against`` also takes a copy of that file (a machine without the
git history). Without CUDA (``TRITON_INTERPRET=1``) only the check runs.

    python benchmarks/kernel_ab.py --against 9833f65 [--shapes 2048x8192,8192x2048] [--precisions int4,int8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

from embodyhub.export.kernels import triton_kernels

KERNELS = "embodyhub/export/kernels/triton_kernels.py"


def kernels_at(rev: str, folder: Path) -> ModuleType:
    """Commit ``rev``'s Triton kernels (or the kernels file ``rev``, where no git history is at hand) as a
    module beside this tree's; Triton reads a kernel's source from its file, so a commit's is written to
    ``folder``."""
    path = Path(rev)
    if not path.is_file():
        root = Path(triton_kernels.__file__).resolve().parents[3]
        source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{KERNELS}"], check=True, capture_output=True, text=True).stdout
        path = folder / f"triton_kernels_{rev}.py"
        path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"embodyhub.export.kernels.ab_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the commit whose kernels are the peer, or a copy of its triton_kernels.py")
    parser.add_argument("--shapes", default="2048x8192,8192x2048", help="N x K, comma-separated (default: WIDE's Linear shapes)")
    parser.add_argument("--precisions", default="int4")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from kernel_sweep import call, layer, want

    cuda = torch.cuda.is_available()
    if cuda:
        from export import bf16_linear_calls, pdl_capable, streamed_and_marginal_us, streamed_copies

        print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}; per call at n copies / per further call, us "
              f"(copies of the layer in one CUDA graph, L2 flushed), one column per repeat")
    device = "cuda" if cuda else "cpu"
    with tempfile.TemporaryDirectory() as folder:
        kernels = {"this tree": triton_kernels, args.against: kernels_at(args.against, Path(folder))}
        for shape in args.shapes.split(","):
            N, K = (int(v) for v in shape.split("x"))
            x = torch.randn(1, K, device=device, dtype=torch.bfloat16)
            if cuda:
                copies = streamed_copies(2 * N * K)
                bf16 = streamed_and_marginal_us(bf16_linear_calls(x, torch.randn(N, K, device=device, dtype=torch.bfloat16), 3 * copies))
                print(f"{N} x {K}, n = {copies}: bf16 torch {bf16[0]:.2f} / {bf16[1]:.2f}")
            for precision in args.precisions.split(","):
                m = layer(precision, N, K, device, torch.bfloat16)
                ref = want(m, x).float()
                for name, module in kernels.items():
                    error = (call(m, x, {"PDL": False}, module).float() - ref).abs().max().item()
                    print(f"  {precision} {name}: max abs error vs reference {error:.3g}")
                if not cuda:
                    continue
                layers = [copy.deepcopy(m) for _ in range(3 * copies)]
                variants = [(name, pdl) for name in kernels for pdl in ((False, True) if pdl_capable() else (False,))]
                times: dict[tuple[str, bool], list[tuple[float, float]]] = {v: [] for v in variants}
                for _ in range(args.repeats):
                    for name, pdl in variants:
                        calls = [lambda q=q, name=name, pdl=pdl: call(q, x, {"PDL": pdl}, kernels[name]) for q in layers]
                        times[name, pdl].append(streamed_and_marginal_us(calls))
                for (name, pdl), runs in times.items():
                    per_call = " ".join(f"{t[0]:.2f}" for t in runs)
                    further = " ".join(f"{t[1]:.2f}" for t in runs)
                    ratio = [bf16[i] * len(runs) / sum(t[i] for t in runs) for i in (0, 1)]
                    print(f"  {precision} {name}{' pdl' if pdl else ''}: {per_call} / {further}; bf16 torch / it: {ratio[0]:.2f}x / {ratio[1]:.2f}x")


if __name__ == "__main__":
    main()
