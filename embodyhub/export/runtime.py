"""Running a bundle: the ONNX policy graph on onnxruntime plus the host-side native decode, and the
quantized model's greedy decoding on a GPU with CUDA graphs.

``OnnxPolicy(bundle, robot)(q, goal)`` returns native joint commands ``[B, H, dof]`` like
``model.predict_action``: the graph yields the action tokens, and the bundled processor turns them
into joint commands (IK for end-effector slots, URDF position and velocity clamping).
``GraphedDecoder(model, processor, robot)(q, goal)`` returns the action tokens the graph would, from
PyTorch (fused Triton kernels on CUDA).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..embodiment import Embodiment
from ..errors import EmbodyHubError
from ..models.wam import WamForActionPrediction, WamProcessor
from .onnx import OUTPUT_NAMES, LoopStepGraph, example_inputs, loop_head, ort_session
from .thor import MANIFEST_NAME


class OnnxPolicy:
    """One robot's policy from a bundle folder; also an ``envs`` policy via ``as_env_policy``."""

    def __init__(self, bundle: str | os.PathLike, robot: str | None = None, threads: int = 1) -> None:
        folder = Path(bundle)
        self.manifest: dict[str, Any] = json.loads((folder / MANIFEST_NAME).read_text())
        entries = {e["robot"]: e for e in self.manifest["embodiments"]}
        robot = robot or next(iter(entries))
        if robot not in entries:
            raise EmbodyHubError(f"bundle {folder} has no policy for '{robot}' (it has {sorted(entries)})")
        self.entry = entries[robot]
        self.processor = WamProcessor.from_pretrained(folder)
        self.embodiment = self.processor.resolve(robot)
        self.session = ort_session(folder / self.entry["onnx"], threads)
        self.batch_size = int(self.entry["io"]["inputs"][0]["shape"][0])

    def run_graph(self, q: Tensor, goal: Tensor) -> tuple[Tensor, Tensor]:
        """``(tokens [B, L], canonical [B, H, D])`` from onnxruntime."""
        q = torch.as_tensor(q, dtype=torch.float32)
        goal = torch.as_tensor(goal, dtype=torch.float32)
        if q.dim() == 1:
            q = q[None]
        goal = goal.reshape(q.shape[0], len(self.embodiment.arms), 4, 4)
        if q.shape[0] != self.batch_size:
            raise EmbodyHubError(f"this graph was exported for batch {self.batch_size}, got {q.shape[0]}")
        tokens, canonical = self.session.run(OUTPUT_NAMES, {"q": q.numpy(), "goal": goal.numpy()})
        return torch.from_numpy(tokens), torch.from_numpy(canonical)

    def __call__(self, q: Tensor, goal: Tensor) -> Tensor:
        """Native joint commands ``[B, H, dof]`` (float64) for joint state ``q`` and goal poses."""
        q = torch.as_tensor(q, dtype=torch.float64)
        tokens, _ = self.run_graph(q, goal)
        return self.processor.decode_actions(tokens, self.embodiment, q if q.dim() > 1 else q[None])

    def as_env_policy(self, execute: int | None = None) -> Any:
        """``policy(obs) -> chunk`` for ``ReachEnv.evaluate``; batches larger than the graph's run in slices."""

        def policy(obs: dict[str, Tensor]) -> Tensor:
            q, goal = obs["q"], obs["goal"]
            step = self.batch_size
            chunk = torch.cat([self(q[i : i + step], goal[i : i + step]) for i in range(0, q.shape[0], step)])
            return chunk[:, :execute] if execute else chunk

        return policy


class GraphedDecoder:
    """Greedy chunk decoding for a GPU runtime, the bundle graph's algorithm in PyTorch: ``LoopPrefillGraph``
    once, then every further token by ``LoopStepGraph`` on one fixed-size KV cache written in place. On CUDA
    the step is captured once per batch shape as a CUDA graph and replayed per token: at batch 1 a step is
    ~60-130 small kernels (2-8 fused layers) whose launch cost from Python would otherwise be several times
    their GPU time, and quantized layers run the fused kernels (no dequantized copy). Elsewhere (or
    ``graph=False``) the same step runs eagerly. The step's per-token tables come from the weights at
    construction: build a new decoder after changing them."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, graph: bool | None = None) -> None:
        emb = processor.resolve(embodiment)
        dims, steps = processor.schedule(emb)
        self.length = dims.numel()
        cuda = model.device.type == "cuda"
        self.use_graph = cuda if graph is None else graph
        self.head, first_slot = loop_head(model.eval(), processor, emb)
        self.step = LoopStepGraph(model, dims.to(model.device), steps.to(model.device), first_slot, in_place=True)
        self.head.dequantize = self.step.dequantize = not cuda
        self._buffers: dict[str, Tensor] = {}
        self._shapes: tuple[torch.Size, ...] = ()
        self._graph: Any = None

    @torch.no_grad()
    def __call__(self, q: Tensor, goal: Tensor) -> Tensor:
        """Action tokens ``[B, L]`` for joint state ``q [B, dof]`` and goals ``[B, arms, 4, 4]`` (host tensors)."""
        token, keys, values, mask, _ = self.head(q, goal)
        return self.decode(token, keys, values, mask)

    @torch.no_grad()
    def decode(self, token: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """The tokens after the prefill (``LoopPrefillGraph``'s outputs): ``length - 1`` steps."""
        if self._shapes != (token.shape, keys.shape, mask.shape):
            self._allocate(token, keys, values, mask)
        b = self._buffers
        b["i"].zero_()
        for name, value in (("token", token), ("keys", keys), ("values", values), ("mask", mask)):
            b[name].copy_(value)
        b["tokens"][:, :1] = token
        for _ in range(self.length - 1):
            self._graph.replay() if self._graph is not None else self._advance()
        return b["tokens"].clone()

    def _advance(self) -> None:
        b = self._buffers
        token, _, _ = self.step(b["i"], b["token"], b["mask"], b["keys"], b["values"])
        b["token"].copy_(token)
        b["i"].add_(1)
        b["tokens"].index_copy_(1, b["i"].reshape(1), token)

    def _allocate(self, token: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> None:
        """Static buffers for these shapes (a CUDA graph replays on fixed addresses), and the step's graph."""
        self._buffers = {
            "i": torch.zeros((), dtype=torch.long, device=token.device), "token": token.clone(), "keys": keys.clone(),
            "values": values.clone(), "mask": mask.clone(), "tokens": token.new_zeros(token.shape[0], self.length),
        }
        self._shapes, self._graph = (token.shape, keys.shape, mask.shape), None
        if not self.use_graph or self.length < 2:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture: compiles the Triton kernels
            for _ in range(2):
                self._buffers["i"].zero_()
                self._advance()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._advance()


def bench_bundle(bundle: str | os.PathLike, repeats: int = 20) -> list[dict[str, Any]]:
    """Latency per chunk of every robot in a bundle: onnxruntime on CPU (graph alone, and with the host's
    native decode), plus on a CUDA device the quantized model in PyTorch with the fused Triton kernels
    (which read the quantized weights directly: no float copy). ``total_ms`` adds the host's native decode."""
    from .fused import fuse_decoder
    from .quantize import load_quantized

    rows: list[dict[str, Any]] = []
    gpu_model = fuse_decoder(load_quantized(bundle).cuda()) if torch.cuda.is_available() else None
    for entry in json.loads((Path(bundle) / MANIFEST_NAME).read_text())["embodiments"]:
        rows += _bench_robot(OnnxPolicy(bundle, entry["robot"]), entry["budget_ms"], repeats, gpu_model)
    return rows


def _bench_robot(policy: OnnxPolicy, budget_ms: float, repeats: int, gpu_model: Any) -> list[dict[str, Any]]:
    from .thor import median_ms

    q, goal = example_inputs(policy.embodiment, policy.batch_size)
    graph_ms = median_ms(lambda: policy.run_graph(q, goal), repeats)
    total_ms = median_ms(lambda: policy(q, goal), max(3, repeats // 4))
    common = {"robot": policy.embodiment.name, "budget_ms": budget_ms}
    rows = [{**common, "backend": "onnxruntime-cpu-1-thread", "graph_ms": graph_ms, "total_ms": total_ms}]
    if gpu_model is not None:
        decoder = GraphedDecoder(gpu_model, policy.processor, policy.embodiment)

        def gpu_chunk() -> None:
            decoder(q, goal)
            torch.cuda.synchronize()

        gpu_ms = median_ms(gpu_chunk, repeats)
        backend = f"torch+triton+cuda-graph {torch.cuda.get_device_name()}"
        rows.append({**common, "backend": backend, "graph_ms": gpu_ms, "total_ms": gpu_ms + total_ms - graph_ms})
    return rows
