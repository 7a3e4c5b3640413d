"""Kernels per decode step, counted on CPU: what a GPU launches for one ``GraphedDecoder`` step.

At batch 1 a step's kernels, not its bytes, set most of its GPU time (a few microseconds each), so their
number is worth watching where no GPU is lent. Counted with a dispatch hook while one step runs on CPU:
every aten op that computes (views excluded), except inside a fused kernel, which counts once (on CUDA
each is one Triton launch; on CPU its torch reference runs). Peer: the same model unfused, its step as
the ONNX Loop body computes it (``LoopStepGraph`` without tables, the layers' own torch code). Layer
counts are the 136M-parameter configs' (BIG: 8, WIDE: 2); widths are small, since counts do not depend
on them. On an H200 the profiler counted 58-60 (WIDE) and 124-132 (BIG) kernels per step at commit
c16bd81 (before the step tables and the fused final norm), where this count gave 56 and 116; at 9833f65
it counted 22 and 76 for the int8/int4 models (``benchmarks/export.py``), as this count gives.

    python benchmarks/step_kernels.py
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.export import QuantConfig, kernels, quantize_model
from embodyhub.export.fused import fuse_decoder
from embodyhub.export.onnx import LoopStepGraph, example_inputs
from embodyhub.export.runtime import GraphedDecoder
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor

VIEWS = {"view", "_unsafe_view", "permute", "select", "slice", "expand", "t", "unsqueeze", "alias", "split", "unbind", "squeeze",
         "transpose", "reshape", "detach", "split_with_sizes", "as_strided"}
FUSED = ("rmsnorm", "add_rmsnorm", "rope_cache", "silu_mul", "decode_attention", "int8_linear", "int4_linear", "linear", "step_inputs", "greedy_advance")


class KernelCount(TorchDispatchMode):
    """Counts computing aten ops, and each fused-kernel call once (not the ops of its CPU reference)."""

    def __init__(self) -> None:
        super().__init__()
        self.count, self.inside = 0, 0
        self.saved = {name: getattr(kernels, name) for name in FUSED}

    def __enter__(self) -> KernelCount:
        for name, fn in self.saved.items():
            setattr(kernels, name, self._once(fn))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self.saved.items():
            setattr(kernels, name, fn)
        super().__exit__(*exc)

    def _once(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += self.inside == 0
            self.inside += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside -= 1

        return counted

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.inside == 0 and func.__name__.split(".")[0] not in VIEWS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def model(layers: int, precision: str) -> WamForActionPrediction:
    torch.manual_seed(0)
    wam = WamForActionPrediction(WamConfig(chunk_length=8, hidden_size=128, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=512)).eval()
    if precision != "float32":
        quantize_model(wam, QuantConfig(precision, group_size=64))
    return wam


@torch.no_grad()
def fused_step(wam: WamForActionPrediction, processor: WamProcessor, q: torch.Tensor, goal: torch.Tensor) -> int:
    decoder = GraphedDecoder(fuse_decoder(wam), processor, "panda", dequantize=False)  # as on CUDA: the fused kernels read the codes
    decoder(q, goal)
    decoder._buffers["i"].zero_()
    with KernelCount() as counter:
        decoder._advance()
    return counter.count


@torch.no_grad()
def unfused_step(wam: WamForActionPrediction, processor: WamProcessor, q: torch.Tensor, goal: torch.Tensor) -> int:
    decoder = GraphedDecoder(wam, processor, "panda", dequantize=False)  # its prefill fills the cache the step reads
    decoder.load(q, goal)
    decoder.prefill()
    b = decoder._buffers
    dims, steps = processor.schedule(processor.resolve("panda"))
    step = LoopStepGraph(wam, dims, steps, decoder.step.first_slot, in_place=True)
    step.dequantize = False
    with KernelCount() as counter:
        step(b["i"], b["first"], b["mask"], b["keys"], b["values"])
    return counter.count


def main() -> None:
    processor = WamProcessor(chunk_length=8)
    processor.add_embodiment(load_robot("panda"))
    q, goal = example_inputs(processor.resolve("panda"), 1)
    print("kernels per decode step at batch 1 (Panda), counted on CPU")
    print(f"{'config':<6} {'layers':>6} {'precision':<9} {'unfused':>7} {'fused':>5} {'unfused / fused':>15}")
    for label, layers in (("WIDE", 2), ("BIG", 8)):
        for precision in ("float32", "int4"):
            unfused = unfused_step(model(layers, precision), processor, q, goal)
            fused = fused_step(model(layers, precision), processor, q, goal)
            print(f"{label:<6} {layers:>6} {precision:<9} {unfused:>7} {fused:>5} {unfused / fused:>15.2f}")


if __name__ == "__main__":
    main()
