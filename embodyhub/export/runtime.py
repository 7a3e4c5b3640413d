"""Running a bundle: the ONNX policy graph on onnxruntime plus the host-side native decode, and the
quantized model's greedy decoding on a GPU with CUDA graphs.

``OnnxPolicy(bundle, robot)(q, goal)`` returns native joint commands ``[B, H, dof]`` like
``model.predict_action``: the graph yields the action tokens, and the bundled processor turns them
into joint commands (IK for end-effector slots, URDF position and velocity clamping). A model reading
the v2 inputs takes them as the processor does: ``policy(q, environment_state=points, task="lift the
cube")`` (the goal optional).
``GraphedDecoder(model, processor, robot)(q, goal)`` returns the action tokens the graph would, from
PyTorch (fused Triton kernels and CUDA graphs on a GPU); its ``actions(q, goal)`` the native joint commands
(models with joint state and goal inputs only, so far).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..embodiment import Embodiment
from ..errors import EmbodimentMismatchError, EmbodyHubError
from ..models.wam import WamForActionPrediction, WamProcessor
from . import kernels
from .onnx import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    LoopStepGraph,
    example_observation,
    graph_feed,
    greedy_token,
    loop_head,
    ort_session,
    policy_input_names,
)
from .quantize import dequantize_once
from .thor import MANIFEST_NAME, verify_bundle


class OnnxPolicy:
    """One robot's policy from a bundle folder; also an ``envs`` policy via ``as_env_policy``.

    Opening a bundle verifies it against its manifest first (``verify_bundle``: every file's hash, no file
    outside the manifest, no path outside the folder) and checks the robot's URDF against the manifest's
    hash; ``verify=False`` skips that and is for development only. Inputs are validated as the PyTorch
    path validates them (``WamProcessor``): shapes, NaN/inf, values beyond float32's range.

    The observation is the processor's (``graph_feed``): ``q`` and ``goal`` positionally, the v2 inputs
    (``environment_state``, ``task``) and ``pixel_values`` by keyword, whichever the graph reads."""

    def __init__(self, bundle: str | os.PathLike, robot: str | None = None, threads: int = 1, verify: bool = True) -> None:
        folder = Path(bundle)
        self.manifest: dict[str, Any] = verify_bundle(folder) if verify else json.loads((folder / MANIFEST_NAME).read_text())
        entries = {e["robot"]: e for e in self.manifest["embodiments"]}
        robot = robot or next(iter(entries))
        if robot not in entries:
            raise EmbodyHubError(f"bundle {folder} has no policy for '{robot}' (it has {sorted(entries)})")
        self.entry = entries[robot]
        self.processor = WamProcessor.from_pretrained(folder)
        self.embodiment = self.processor.resolve(robot)
        if verify and self.embodiment.urdf_sha256 != self.entry["urdf_sha256"]:
            raise EmbodimentMismatchError(f"bundle {folder}: the URDF of '{robot}' does not match the manifest's urdf_sha256")
        # the options the manifest lists (bundles written before they were listed: the ones ort_session derives)
        self.session = ort_session(folder / self.entry["onnx"], threads, self.entry.get("onnxruntime_session", {}).get("config_entries"))
        inputs = {i["name"]: i["shape"] for i in self.entry["io"]["inputs"]}
        self.input_names = list(inputs)
        self.batch_size = int(inputs["q"][0])
        self.image: tuple[int, ...] | None = tuple(inputs["pixel_values"][1:]) if "pixel_values" in inputs else None  # a frame's shape

    def run_graph(self, q: Tensor, goal: Tensor | None = None, **observation: Any) -> tuple[Tensor, Tensor]:
        """``(tokens [B, L], canonical [B, H, D])`` from onnxruntime."""
        feed = graph_feed(self.processor, self.embodiment, self.input_names, {"state": q, "goal": goal, **observation})
        if feed["q"].shape[0] != self.batch_size:
            raise EmbodyHubError(f"this graph was exported for batch {self.batch_size}, got {feed['q'].shape[0]}")
        tokens, canonical = self.session.run(OUTPUT_NAMES, {k: v.numpy() for k, v in feed.items()})
        return torch.from_numpy(tokens), torch.from_numpy(canonical)

    def __call__(self, q: Tensor, goal: Tensor | None = None, **observation: Any) -> Tensor:
        """Native joint commands ``[B, H, dof]`` (float64) for joint state ``q``, goal poses and (keywords) the
        other observation parts the graph reads."""
        q = torch.as_tensor(q, dtype=torch.float64)
        tokens, _ = self.run_graph(q, goal, **observation)
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
    """Greedy chunk decoding for a GPU runtime, the bundle graph's algorithm in PyTorch: the prefix + BOS
    forward writes the first slots of one fixed-size KV cache, then every further token is a
    ``LoopStepGraph`` step writing the next slot in place. On CUDA the prefill and the step are each
    captured once per batch shape as a CUDA graph, and a chunk is one prefill replay plus one step replay
    per token: at batch 1 a step is 22-76 small kernels (2-8 fused layers; ``benchmarks/step_kernels.py``),
    the prefill a few hundred, whose launch cost from Python would otherwise be several times their GPU
    time; quantized layers run the fused kernels (no dequantized copy). Elsewhere (or ``graph=False``) the
    same code runs eagerly. The step's per-token tables come from the weights at construction: build a new
    decoder after changing them.

    ``decoder(q, goal)`` is ``load`` (the processor on the host, its outputs copied into static device
    buffers), ``prefill`` and ``decode``; the parts are public so a benchmark can time them apart."""

    def __init__(
        self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, graph: bool | None = None,
        dequantize: bool | None = None,
    ) -> None:
        """``dequantize``: quantized layers compute with weights dequantized once per call (default off CUDA)
        or, when False, through the fused kernels reading the codes (default on CUDA; also the way to run
        the CUDA path on CPU, under the interpreter or ``kernels.compile_check``)."""
        if policy_input_names(model.config) != INPUT_NAMES:
            raise EmbodyHubError(
                "GraphedDecoder decodes models that read joint state and goal poses only; this one also reads "
                f"{', '.join(policy_input_names(model.config)[len(INPUT_NAMES):])}: run its bundle with OnnxPolicy, or the "
                "model with predict_action"
            )
        self.model, self.processor, self.embodiment = model.eval(), processor, processor.resolve(embodiment)
        dims, steps = processor.schedule(self.embodiment)
        self.length = dims.numel()
        cuda = model.device.type == "cuda"
        if graph and not cuda:
            raise EmbodyHubError(f"CUDA graphs need the model on a CUDA device (it is on {model.device}); use graph=False or None")
        self.use_graph = cuda if graph is None else graph
        head, first_slot = loop_head(model, processor, self.embodiment)
        self.slots = head.slots
        self.step = LoopStepGraph(model, dims.to(model.device), steps.to(model.device), first_slot, in_place=True, tables=True)
        self.dequantize = self.step.dequantize = not cuda if dequantize is None else dequantize
        self._buffers: dict[str, Any] = {}
        self._shapes: tuple[tuple[str, torch.Size], ...] = ()
        self._graphs: dict[str, Any] = {}
        self._action_decoder: Any = None

    @torch.no_grad()
    def __call__(self, q: Tensor, goal: Tensor) -> Tensor:
        """Action tokens ``[B, L]`` for joint state ``q [B, dof]`` and goals ``[B, arms, 4, 4]`` (host tensors)."""
        self.load(q, goal)
        self.prefill()
        return self.decode()

    @torch.no_grad()
    def actions(self, q: Tensor, goal: Tensor) -> Tensor:
        """Native joint commands ``[B, H, dof]`` like ``model.predict_action``: the chunk's tokens, then the
        processor's action decoder on the host (IK for end-effector slots, URDF limit clamping)."""
        tokens = self(q, goal)
        return self._action_decoder(tokens.cpu())

    def load(self, q: Tensor, goal: Tensor) -> None:
        """The processor's prefix inputs for ``(q, goal)`` into the static buffers (allocated, and the graphs
        captured, for each new batch shape)."""
        batch = self.processor({"state": q, "goal": goal}, self.embodiment)
        self._action_decoder = batch["action_decoder"]
        inputs = {k: v for k, v in batch.items() if isinstance(v, Tensor)}
        inputs["action_dims"], inputs["action_steps"] = inputs["action_dims"][:, :1], inputs["action_steps"][:, :1]
        shapes = tuple((k, v.shape) for k, v in inputs.items())
        if shapes != self._shapes:
            self._allocate(inputs)
            self._shapes = shapes
        for name, value in inputs.items():
            self._buffers["inputs"][name].copy_(value)

    @torch.no_grad()
    def prefill(self) -> None:
        """The prefix + BOS forward on the loaded inputs: the cache's first slots, its key mask, the first token."""
        if not self._buffers:
            raise EmbodyHubError("GraphedDecoder.prefill needs inputs: call load(q, goal) first")
        self._graphs["prefill"].replay() if "prefill" in self._graphs else self._prefill()

    @torch.no_grad()
    def decode(self) -> Tensor:
        """The chunk's tokens after ``prefill``: ``length - 1`` steps from the first token (repeatable: each
        call starts again from the prefill's outputs)."""
        b = self._buffers
        b["i"].zero_()
        b["token"].copy_(b["first"])
        for _ in range(self.length - 1):
            self._graphs["step"].replay() if "step" in self._graphs else self._advance()
        return b["tokens"].clone()

    def _prefill(self) -> None:
        b = self._buffers
        with dequantize_once(self.model, self.dequantize):
            out = self.model(b["bos"], cache=_PrefixCache(b["keys"], b["values"]), use_cache=True, **b["inputs"])
        b["mask"][:, : out.attention_mask.shape[1]].copy_(out.attention_mask)
        b["first"].copy_(greedy_token(out.logits[:, -1], self.model.config.action_bins))
        b["tokens"][:, :1].copy_(b["first"])

    def _advance(self) -> None:
        b = self._buffers
        logits = self.step.logits(b["i"], b["token"], b["mask"], b["keys"], b["values"])
        kernels.greedy_advance(logits, self.model.config.action_bins, b["token"], b["tokens"], b["i"])

    def _allocate(self, inputs: dict[str, Tensor]) -> None:
        """Static buffers for this batch shape (a CUDA graph replays on fixed addresses), then the graphs."""
        cfg, device = self.model.config, self.model.device
        B = inputs["state"].shape[0]
        cache = (cfg.num_hidden_layers, B, cfg.num_attention_heads, self.slots, cfg.hidden_size // cfg.num_attention_heads)
        dtype = self.model.model.embed_tokens.weight.dtype
        tokens = {name: torch.zeros(B, 1, dtype=torch.long, device=device) for name in ("first", "token")}
        self._buffers = {
            "inputs": {k: v.to(device, copy=True) for k, v in inputs.items()},
            "bos": torch.full((B, 1), cfg.bos_token_id, dtype=torch.long, device=device),
            "keys": torch.zeros(cache, dtype=dtype, device=device), "values": torch.zeros(cache, dtype=dtype, device=device),
            "mask": torch.zeros(B, self.slots, dtype=torch.bool, device=device), **tokens,
            "i": torch.zeros((), dtype=torch.long, device=device), "tokens": torch.zeros(B, self.length, dtype=torch.long, device=device),
        }
        self._graphs = {}
        if not self.use_graph:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():  # warm-up outside the capture: compiles the Triton kernels
            for _ in range(2):
                self._prefill()
                self._buffers["i"].zero_()
                self._advance()
        torch.cuda.current_stream().wait_stream(side)
        parts = {"prefill": self._prefill, **({"step": self._advance} if self.length > 1 else {})}
        for name, part in parts.items():
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                part()
            self._graphs[name] = graph


class _PrefixCache:
    """``GraphedDecoder``'s prefill cache: ``update`` (the ``Cache`` method ``WamAttention`` calls) writes a
    layer's prefix keys/values into the first slots of the decoder's fixed-size buffers ``[layers, B, heads,
    slots, head_dim]`` and returns them for attention over the prefix. No allocation that a CUDA graph could
    not replay (``DynamicCache`` creates its tensors on first use)."""

    def __init__(self, keys: Tensor, values: Tensor) -> None:
        self.keys, self.values = keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        n = key_states.shape[2]
        self.keys[layer_idx, :, :, :n].copy_(key_states)
        self.values[layer_idx, :, :, :n].copy_(value_states)
        return key_states, value_states


def runtime_model(bundle: str | os.PathLike, verify: bool = True) -> WamForActionPrediction:
    """A bundle's quantized model as the GPU runtime runs it: decoder layers fused, on the host (move it to
    the device with ``.cuda()``). The bundle is first verified against its manifest, as ``OnnxPolicy`` does
    (``verify=False``: development only)."""
    from .fused import fuse_decoder
    from .quantize import load_quantized

    if verify:
        verify_bundle(bundle)
    return fuse_decoder(load_quantized(bundle))


def compile_bundle(bundle: str | os.PathLike, arch: int, multiprocessors: int | None = None) -> list[dict[str, Any]]:
    """Every robot's chunk decode of a bundle compiled for CUDA compute capability ``arch`` on this machine
    (no GPU needed; ``kernels.compile_check``): per robot the kernel launches of the prefill and of one step."""
    from .kernels.compile_check import compile_decoder

    model, processor = runtime_model(bundle), WamProcessor.from_pretrained(bundle)
    return [
        {"robot": e["robot"], **compile_decoder(model, processor, e["robot"], arch, int(e["io"]["inputs"][0]["shape"][0]), multiprocessors)}
        for e in json.loads((Path(bundle) / MANIFEST_NAME).read_text())["embodiments"]
    ]


def bench_bundle(bundle: str | os.PathLike, repeats: int = 20, max_seconds: float = 10.0) -> list[dict[str, Any]]:
    """Latency per chunk of every robot in a bundle: onnxruntime on CPU (graph alone, and with the host's
    native decode), plus on a CUDA device the quantized model in PyTorch with the fused Triton kernels
    (which read the quantized weights directly: no float copy). ``total_ms`` includes the host's native decode.

    Each timing repeats in rounds of ``repeats`` runs until its median settles (``thor.stable_ms``, at most
    ``max_seconds`` each): ``*_ms`` is the median, ``*_iqr_ms`` the quartiles, ``*_runs`` the run count."""
    rows: list[dict[str, Any]] = []
    gpu_model = runtime_model(bundle).cuda() if torch.cuda.is_available() else None
    if gpu_model is not None and policy_input_names(gpu_model.config) != INPUT_NAMES:
        warnings.warn("the GPU runtime (GraphedDecoder) decodes joint-state + goal models only: timing onnxruntime alone", stacklevel=2)
        gpu_model = None
    for entry in json.loads((Path(bundle) / MANIFEST_NAME).read_text())["embodiments"]:
        rows += _bench_robot(OnnxPolicy(bundle, entry["robot"]), entry["budget_ms"], repeats, max_seconds, gpu_model)
    return rows


def _timing_columns(prefix: str, timing: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_ms": timing["median"], f"{prefix}_iqr_ms": [timing["q1"], timing["q3"]],
            f"{prefix}_runs": timing["runs"], f"{prefix}_stable": timing["stable"]}


def _bench_robot(policy: OnnxPolicy, budget_ms: float, repeats: int, max_seconds: float, gpu_model: Any) -> list[dict[str, Any]]:
    from .thor import stable_ms

    observation = example_observation(policy.processor, policy.embodiment, policy.batch_size, image=policy.image)
    q, goal = observation.pop("state"), observation.pop("goal", None)
    common = {"robot": policy.embodiment.name, "budget_ms": budget_ms}
    rows = [{
        **common, "backend": "onnxruntime-cpu-1-thread",
        **_timing_columns("graph", stable_ms(lambda: policy.run_graph(q, goal, **observation), repeats, max_seconds)),
        **_timing_columns("total", stable_ms(lambda: policy(q, goal, **observation), max(3, repeats // 4), max_seconds)),
    }]
    if gpu_model is not None:
        decoder = GraphedDecoder(gpu_model, policy.processor, policy.embodiment)

        def gpu_chunk() -> None:
            decoder(q, goal)
            torch.cuda.synchronize()

        rows.append({
            **common, "backend": f"torch+triton+cuda-graph {torch.cuda.get_device_name()}",
            **_timing_columns("graph", stable_ms(gpu_chunk, repeats, max_seconds)),
            **_timing_columns("total", stable_ms(lambda: decoder.actions(q, goal), max(3, repeats // 4), max_seconds)),
        })
    return rows
