"""Running a bundle: the ONNX policy graph on onnxruntime plus the host-side native decode.

``OnnxPolicy(bundle, robot)(q, goal)`` returns native joint commands ``[B, H, dof]`` like
``model.predict_action``: the graph yields the action tokens, and the bundled processor turns them
into joint commands (IK for end-effector slots, URDF position and velocity clamping).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import EmbodyHubError
from ..models.wam import WamProcessor
from .onnx import OUTPUT_NAMES, ort_session
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


def bench_bundle(bundle: str | os.PathLike, repeats: int = 20) -> list[dict[str, Any]]:
    """Latency per chunk of every robot in a bundle: onnxruntime on CPU (graph alone, and with the host's
    native decode), plus on a CUDA device the quantized model in PyTorch with the fused Triton kernels
    (which read the quantized weights directly: no float copy). ``total_ms`` adds the host's native decode."""
    from .fused import fuse_decoder
    from .quantize import load_quantized

    rows: list[dict[str, Any]] = []
    gpu_model = fuse_decoder(load_quantized(bundle)).cuda() if torch.cuda.is_available() else None
    for entry in json.loads((Path(bundle) / MANIFEST_NAME).read_text())["embodiments"]:
        rows += _bench_robot(OnnxPolicy(bundle, entry["robot"]), entry["budget_ms"], repeats, gpu_model)
    return rows


def _bench_robot(policy: OnnxPolicy, budget_ms: float, repeats: int, gpu_model: Any) -> list[dict[str, Any]]:
    from .onnx import example_inputs
    from .thor import median_ms

    q, goal = example_inputs(policy.embodiment, policy.batch_size)
    graph_ms = median_ms(lambda: policy.run_graph(q, goal), repeats)
    total_ms = median_ms(lambda: policy(q, goal), max(3, repeats // 4))
    common = {"robot": policy.embodiment.name, "budget_ms": budget_ms}
    rows = [{**common, "backend": "onnxruntime-cpu-1-thread", "graph_ms": graph_ms, "total_ms": total_ms}]
    if gpu_model is not None:
        batch = policy.processor({"state": q, "goal": goal}, policy.embodiment)
        inputs = {k: v.cuda() for k, v in batch.items() if isinstance(v, Tensor)}
        dims, steps = inputs.pop("action_dims"), inputs.pop("action_steps")

        @torch.no_grad()
        def gpu_chunk() -> None:
            gpu_model.sample_action_tokens(dims, steps, **inputs)
            torch.cuda.synchronize()

        gpu_ms = median_ms(gpu_chunk, repeats)
        backend = f"torch+triton {torch.cuda.get_device_name()}"
        rows.append({**common, "backend": backend, "graph_ms": gpu_ms, "total_ms": gpu_ms + total_ms - graph_ms})
    return rows
