"""ONNX export of the predict-action path for one embodiment (and of the KV-cached decode step), checked
against PyTorch with onnxruntime.

The policy graph is the model's own code traced in three parts and composed into one ONNX model:
``LoopPrefillGraph`` (``WamProcessor``'s limit normalization, FK to the canonical state, goal features and
the embodiment's joint tokens as constants; the prefix + BOS forward; the first greedy token), an ONNX
``Loop`` whose body is ``LoopStepGraph`` (one KV-cached decode step + greedy pick on a fixed-size cache),
and ``CanonicalGraph`` (bin decoding back to canonical actions, relative offsets added back). The graph's
size does not grow with the number of action tokens. Inputs (``policy_input_names``): native joint state
``q [B, dof]`` and per-arm goal poses ``goal [B, arms, 4, 4]``; a model reading the v2 inputs also takes
``has_goal [B]`` (the goal is optional there), the raw object keypoints ``keypoints [B, max_keypoints, 3]``
with ``keypoint_mask``, and the task word ids ``task_ids [B, max_task_tokens]`` (a string's tokenization
stays on the host, ``graph_feed``); an image model takes ``pixel_values``. The keypoint features (offsets
from the end effectors, object shapes) are the processor's, traced like its FK. Outputs: the action
``tokens [B, L]`` and the canonical chunk ``canonical [B, H, D]``. The last step to native joint commands
(IK for end-effector slots, limit and velocity clamping) is iterative and data-dependent, so it runs on the
host through ``WamProcessor.decode_actions`` on the graph's tokens (``runtime.OnnxPolicy``).
``DecodeStepGraph`` is one KV-cached token with a dynamic cache length, for runtimes that loop on the host.
``share_weights`` moves the initializers of a bundle's graphs into one external-data file, each tensor
stored once.

Quantized models export with their integer weights behind standard ``DequantizeLinear`` nodes (the
weight-only pattern TensorRT fuses into its GEMMs; never folded back to float), float tensors stored at
float16 stay float16 in the file, and the processor's float64 arithmetic becomes float32 (TensorRT has
no float64).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache

from ..embodiment import Embodiment
from ..errors import InvalidActionError
from ..models.wam import WamForActionPrediction, WamProcessor
from ..models.wam.processing_wam import TASK_PAD, _get
from . import kernels
from .quantize import QuantizedLinear, dequantize_once

INPUT_NAMES = ["q", "goal"]
OUTPUT_NAMES = ["tokens", "canonical"]
OPSET = 18
ONNX_DATA_NAME = "weights.onnx.data"  # the external-data file a bundle's graphs share


INPUT_NOTES = {  # what each policy graph input holds (the bundle's manifest and README list them)
    "q": "native joint positions [B, dof] (URDF order, rad or m)",
    "goal": "per-arm target poses [B, arms, 4, 4] in each arm's base frame",
    "has_goal": "[B] bool: the samples that have a goal (the others' goal tokens are masked; give any finite goal)",
    "keypoints": "object keypoints [B, max_keypoints, 3] (m, arm 0's base frame; objects whole, unused rows zero)",
    "keypoint_mask": "[B, max_keypoints] bool: the real keypoints",
    "task_ids": "task word ids [B, max_task_tokens] from WamProcessor.encode_task (0: padding)",
    "pixel_values": "camera frame [B, channels, size, size], values in [0, 1]",
}


def policy_input_names(config: Any) -> list[str]:
    """The policy graph's inputs for a model of ``config``: ``q, goal`` (the v1 graph), then ``has_goal``,
    ``keypoints`` + ``keypoint_mask`` and ``task_ids`` for a model reading keypoints or task words, and
    ``pixel_values`` for one with image inputs."""
    names = list(INPUT_NAMES)
    if config.max_keypoints or config.task_vocab_size:
        names.append("has_goal")
    if config.max_keypoints:
        names += ["keypoints", "keypoint_mask"]
    if config.task_vocab_size:
        names.append("task_ids")
    if config.image_size:
        names.append("pixel_values")
    return names


def prefix_batch(processor: WamProcessor, embodiment: Embodiment, feed: Mapping[str, Tensor]) -> dict[str, Any]:
    """The model inputs (``processor(...)``'s output) for the policy graph's inputs ``feed``: the processor
    encodes the joint state, goal poses and keypoints (normalization, FK, goal and keypoint features, the joint
    tokens as constants: traced into the graph), then the masks the graph takes as inputs replace the ones the
    processor derives from what it was given, and the task ids come as they are."""
    observation = {"state": feed["q"], "goal": feed["goal"]}
    if "keypoints" in feed:
        observation["environment_state"] = feed["keypoints"]
    batch = dict(processor(observation, embodiment))
    if "has_goal" in feed:
        batch["goal_mask"] = batch["goal_mask"] & feed["has_goal"][:, None]
    if "keypoint_mask" in feed:
        batch["keypoint_mask"] = feed["keypoint_mask"]
    if "task_ids" in feed:
        batch["task_ids"], batch["task_mask"] = feed["task_ids"], feed["task_ids"] != TASK_PAD
    if "pixel_values" in feed:
        batch["pixel_values"] = feed["pixel_values"]
    return batch


def graph_feed(processor: WamProcessor, embodiment: Embodiment, names: list[str], observation: Mapping[str, Any]) -> dict[str, Tensor]:
    """A processor observation (``state``; ``goal``, ``environment_state``, ``task``, ``pixel_values`` as the
    model reads them) as the policy graph's inputs ``names``, on the host: float32 joint state and goal poses
    (a graph with ``has_goal`` takes an absent goal as identity poses, masked), the keypoints zero-padded with
    their mask, the task string tokenized. The observation is first validated by the processor itself, so
    what the PyTorch path refuses is refused here (``InvalidActionError``)."""
    embodiment = processor.resolve(embodiment)
    batch = processor(observation, embodiment)
    q = batch["action_decoder"].q_current
    B, arms = q.shape[0], len(embodiment.arms)
    goal = _get(observation, "goal")
    feed = {"q": q.float()}
    if goal is not None:
        goal = torch.as_tensor(goal, dtype=torch.float32)
        if goal.numel() != B * arms * 16:
            raise InvalidActionError(f"the policy graph takes goal poses [{B}, {arms}, 4, 4], got {tuple(goal.shape)}")
        feed["goal"] = goal.reshape(B, arms, 4, 4)
    elif "has_goal" in names:
        feed["goal"] = torch.eye(4).expand(B, arms, 4, 4)
    else:
        raise InvalidActionError(f"this policy graph needs goal poses [{B}, {arms}, 4, 4] (the model reads a goal)")
    feed["has_goal"] = torch.full((B,), goal is not None)
    if "keypoints" in names:
        points, feed["keypoint_mask"] = processor._points(_get(observation, "environment_state"), B, "environment_state")
        feed["keypoints"] = points.float()
    if "task_ids" in names:
        feed["task_ids"] = batch["task_ids"]
    if "pixel_values" in names:
        if "pixel_values" not in batch:
            raise InvalidActionError("this policy graph reads camera frames: give pixel_values [B, channels, size, size]")
        feed["pixel_values"] = batch["pixel_values"]
    return {name: feed[name] for name in names}


class PolicyGraph(nn.Module):
    """``(q, goal, ...) -> (tokens, canonical)`` for one embodiment and batch size in PyTorch
    (``sample_action_tokens``; inputs in ``input_names`` order): the reference the exported Loop graph is
    checked against."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.embodiment = processor.resolve(embodiment)
        self.input_names = policy_input_names(model.config)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        batch = prefix_batch(self.processor, self.embodiment, dict(zip(self.input_names, inputs)))
        batch.pop("action_decoder")
        dims, steps = batch.pop("action_dims"), batch.pop("action_steps")
        with dequantize_once(self.model):
            tokens = self.model.sample_action_tokens(dims, steps, **batch)["tokens"]
        return tokens, self.canonical(tokens, batch["state"])

    def canonical(self, tokens: Tensor, state: Tensor) -> Tensor:
        """Tokens -> canonical chunk ``[B, H, D]``: bin centres, plus the current state on relative dimensions
        (the first half of ``WamProcessor.decode_actions``, before IK)."""
        proc, emb = self.processor, self.embodiment
        dims, steps = proc.schedule(emb)
        B, H, D = tokens.shape[0], proc.chunk_length, proc.space.dim
        values = proc.bins.decode(tokens, dims.expand(B, -1))
        x = torch.zeros(B, H * D, dtype=torch.float64).scatter(1, (steps * D + dims).expand(B, -1), values).view(B, H, D)
        relative = torch.zeros(D, dtype=torch.float64)
        relative[proc._relative_dims(emb)] = 1.0
        x = x + state.to(torch.float64)[:, None, :] * relative
        return x.float()


class PrefillGraph(nn.Module):
    """``(q, goal, ...) -> (logits, keys, values, attention_mask)``: the processor and the prefix + BOS forward,
    the first logits and the KV cache stacked over layers ``[layers, B, heads, T, head_dim]``. With
    ``DecodeStepGraph`` it is the step-wise form of ``PolicyGraph`` (for runtimes that loop on the host)."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str) -> None:
        super().__init__()
        self.model, self.processor, self.embodiment = model, processor, processor.resolve(embodiment)
        self.input_names = policy_input_names(model.config)
        self.dequantize = True  # quantized weights dequantized once per call (the form ONNX stores); False: fused kernels

    def encode(self, *inputs: Tensor) -> tuple[Any, Tensor]:
        """The model output of the prefix + BOS forward (with its cache) and the canonical state. The
        processor runs where the inputs are; its outputs move to the model's device."""
        batch = prefix_batch(self.processor, self.embodiment, dict(zip(self.input_names, inputs)))
        batch = {k: v.to(self.model.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        batch.pop("action_decoder")
        dims, steps = batch.pop("action_dims"), batch.pop("action_steps")
        bos = torch.full((dims.shape[0], 1), self.model.config.bos_token_id, dtype=torch.long, device=dims.device)
        with dequantize_once(self.model, self.dequantize):
            out = self.model(bos, dims[:, :1], steps[:, :1], use_cache=True, **batch)
        return out, batch["state"]

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out, _ = self.encode(*inputs)
        return (out.logits[:, -1], *_stacked(out.cache), out.attention_mask)


class LoopPrefillGraph(PrefillGraph):
    """``(q, goal, ...) -> (first_token, prefill_keys, prefill_values, prefill_mask, state)``: the Loop policy's head.
    The KV cache is zero-padded to ``slots`` positions (prefix + BOS + every fed-back token) and
    ``prefill_mask [B, slots]`` marks the valid prefix keys; ``state`` feeds the bin decoding at the end."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, slots: int) -> None:
        super().__init__(model, processor, embodiment)
        self.slots = slots

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        out, state = self.encode(*inputs)
        mask = out.attention_mask
        pad = self.slots - mask.shape[1]
        keys, values = (F.pad(t, (0, 0, 0, pad)) for t in _stacked(out.cache))
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], 1)
        return greedy_token(out.logits[:, -1], self.model.config.action_bins), keys, values, mask, state


class LoopStepGraph(nn.Module):
    """The Loop body: ``(i, token, prefill_mask, keys, values) -> (next_token, keys, values)`` decodes token
    ``i + 1`` of the schedule from token ``i`` on the fixed-size cache (``first_slot`` + the decoded tokens).
    The (dimension, step) it predicts are gathered from the schedule by the iteration counter; the new
    key/value go into slot ``first_slot + i``; attention reads the prefix keys ``prefill_mask`` marks and the
    slots decoded so far (later slots are unmarked, so the mask is also causal). Fixed shapes keep the
    loop-carried values TensorRT-friendly (``ILoop`` recurrences cannot change shape).

    ``tables`` (for a GPU runtime): what depends on the counter alone is tabulated once, at construction,
    from the weights then (the embedding of the (dimension, step) each token predicts, the rotary cos/sin of
    its position, its row of the causal mask), and a step gathers one row of each (``kernels.step_inputs``:
    one kernel on CUDA instead of ~20). The ONNX body computes them instead: they added ~30 KB to the tiny
    int8 bundle for no measured onnxruntime gain (TensorRT fuses such elementwise chains itself)."""

    def __init__(
        self, model: WamForActionPrediction, dims: Tensor, steps: Tensor, first_slot: int, in_place: bool = False, tables: bool = False
    ) -> None:
        super().__init__()
        self.model, self.first_slot, self.in_place, self.tables = model, first_slot, in_place, tables
        self.dequantize = True  # as in PrefillGraph
        trunk, trips = model.model, dims.numel() - 1
        self.register_buffer("dims", dims[1:].clone(), persistent=False)
        self.register_buffer("steps", steps[1:].clone(), persistent=False)
        self.register_buffer("slots", torch.arange(first_slot + trips, device=dims.device), persistent=False)
        if tables:
            positions = self.slots[first_slot:]
            with torch.no_grad():
                slot_embeds = trunk.embed_action_slots(self.dims, self.steps)
                cos, sin = trunk.rotary_emb(slot_embeds, positions[None])
            self.register_buffer("slot_embeds", slot_embeds, persistent=False)  # [trips, hidden]
            self.register_buffer("cos", cos[0], persistent=False)  # [trips, head_dim]
            self.register_buffer("sin", sin[0], persistent=False)
            self.register_buffer("causal", (self.slots[None] >= first_slot) & (self.slots[None] <= positions[:, None]), persistent=False)

    def forward(self, i: Tensor, token: Tensor, prefill_mask: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``in_place``: the new key/value are written into ``keys``/``values`` themselves (returned as they
        are), for a runtime that keeps one cache buffer; otherwise new buffers are returned (ONNX ``Loop``)."""
        logits, cache = self._decode(i, token, prefill_mask, keys, values)
        if self.in_place:
            return greedy_token(logits, self.model.config.action_bins), keys, values
        return greedy_token(logits, self.model.config.action_bins), torch.stack(cache.keys), torch.stack(cache.values)

    def logits(self, i: Tensor, token: Tensor, prefill_mask: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """The step's action logits ``[B, vocab]`` (the cache written in place), for a runtime that picks and
        records the token itself (``kernels.greedy_advance``)."""
        return self._decode(i, token, prefill_mask, keys, values)[0]

    def _decode(self, i: Tensor, token: Tensor, prefill_mask: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, _SlotCache]:
        trunk, B = self.model.model, token.shape[0]
        if self.tables:
            tables = (self.slot_embeds, self.cos, self.sin, self.causal)
            hidden, cos, sin, mask, position = kernels.step_inputs(token, i, trunk.embed_tokens.weight, *tables, prefill_mask, self.first_slot)
        else:
            index = i.reshape(1)
            position = index + self.first_slot
            dim, step = (torch.index_select(t, 0, index).expand(B, 1) for t in (self.dims, self.steps))
            hidden = trunk.embed_actions(token, dim, step)
            cos, sin = trunk.rotary_emb(hidden, position.expand(B, 1))
            mask = prefill_mask | ((self.slots >= self.first_slot) & (self.slots <= position))[None]
        cache = _SlotCache(keys, values, position if self.in_place else self.slots == position)
        with dequantize_once(self.model, self.dequantize):
            for layer in trunk.layers:
                hidden = layer(hidden, (cos, sin), mask[:, None, None, :], cache)
            return self.model.action_head(trunk.norm(hidden))[:, -1], cache


class _SlotCache:
    """A fixed-size KV cache for the Loop body: ``update`` (the ``Cache`` method ``WamAttention`` calls) writes
    a layer's new key/value into one slot and returns the layer's whole buffers. ``slot``: a mask ``[T]``
    (functional ``where``, new buffers) or a position ``[1]`` (``index_copy_`` into the given buffers)."""

    def __init__(self, keys: Tensor, values: Tensor, slot: Tensor) -> None:
        self.keys, self.values = list(keys.unbind(0)), list(values.unbind(0))
        self.slot, self.in_place = (slot, True) if slot.dtype == torch.long else (slot[:, None], False)

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        if self.in_place:
            self.keys[layer_idx].index_copy_(2, self.slot, key_states)
            self.values[layer_idx].index_copy_(2, self.slot, value_states)
        else:
            self.keys[layer_idx] = torch.where(self.slot, key_states, self.keys[layer_idx])
            self.values[layer_idx] = torch.where(self.slot, value_states, self.values[layer_idx])
        return self.keys[layer_idx], self.values[layer_idx]


class CanonicalGraph(PolicyGraph):
    """``(tokens, state) -> canonical``: ``PolicyGraph.canonical``, the Loop policy's tail."""

    def forward(self, tokens: Tensor, state: Tensor) -> Tensor:  # type: ignore[override]
        return self.canonical(tokens, state)


def greedy_token(logits: Tensor, bins: int) -> Tensor:
    """The greedy token ``[B, 1]`` among the action bins (never BOS), as ``sample_action_tokens`` picks it."""
    return logits[:, :bins].argmax(-1, keepdim=True)


def _stacked(cache: Any) -> tuple[Tensor, Tensor]:
    """A cache's keys and values stacked over layers: ``[layers, B, heads, T, head_dim]`` each."""
    return tuple(torch.stack([getattr(layer, kind) for layer in cache.layers]) for kind in ("keys", "values"))  # type: ignore[return-value]


class DecodeStepGraph(nn.Module):
    """One KV-cached decode step ``(token, dim, step, attention_mask, past_keys, past_values) -> (logits,
    present_keys, present_values)``; the cache length is a dynamic axis, so one graph serves every step."""

    def __init__(self, model: WamForActionPrediction) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: Tensor, dim: Tensor, step: Tensor, attention_mask: Tensor, past_keys: Tensor, past_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cache = DynamicCache(config=self.model.config)
        for i in range(past_keys.shape[0]):
            cache.update(past_keys[i], past_values[i], i)
        with dequantize_once(self.model):
            out = self.model(token, dim, step, cache=cache, use_cache=True, attention_mask=attention_mask)
        return (out.logits[:, -1], *_stacked(cache))


STEP_INPUTS = ["token", "dim", "step", "attention_mask", "past_keys", "past_values"]
STEP_OUTPUTS = ["logits", "present_keys", "present_values"]
LOOP_HEAD_OUTPUTS = ["first_token", "prefill_keys", "prefill_values", "prefill_mask", "state"]
LOOP_BODY_INPUTS = ["loop_i", "loop_token", "prefill_mask", "loop_keys", "loop_values"]  # prefill_mask: outer scope
LOOP_BODY_OUTPUTS = ["next_token", "next_keys", "next_values"]


def _trace(module: nn.Module, args: tuple[Tensor, ...], quantized: bool, fp16_initializers: bool, prefix: str = "", **kwargs: Any) -> Any:
    """Legacy (tracing) export to an in-memory ``ModelProto``, then the rewrites: standard DequantizeLinear,
    float32 arithmetic, float16 initializers, compact graph (intermediate names start with ``prefix``)."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer warns about every shape-specialized Python branch
        torch.onnx.export(
            module, args, buffer, dynamo=False, opset_version=OPSET, custom_opsets={"embodyhub": 1} if quantized else None, **kwargs
        )
    proto = onnx.load_from_string(buffer.getvalue())
    _standard_dequantize(proto)
    _float32_graph(proto)
    if fp16_initializers:
        _fp16_initializers(proto)
    _compact_graph(proto, prefix)
    return proto


def _save(proto: Any, path: str | os.PathLike) -> Path:
    """Write ``proto`` to ``path`` (creating its folder)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def export_decode_step(
    model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, path: str | os.PathLike,
    batch_size: int = 1, fp16_initializers: bool = True,
) -> Path:
    """Export ``DecodeStepGraph`` (traced on a real cache from ``embodiment``'s prefix; valid for any robot)."""
    model = model.eval()
    emb = processor.resolve(embodiment)
    with torch.no_grad():
        logits, keys, values, mask = PrefillGraph(model, processor, emb)(*example_feed(model, processor, emb, batch_size).values())
        dims, steps = processor.schedule(emb)
    token = greedy_token(logits, model.config.action_bins)
    mask = torch.cat([mask, mask.new_ones(batch_size, 1)], 1)
    args = (token, dims[None, 1:2].expand(batch_size, 1), steps[None, 1:2].expand(batch_size, 1), mask, keys, values)
    dynamic = {"attention_mask": {1: "total"}, "past_keys": {3: "past"}, "past_values": {3: "past"}, "present_keys": {3: "total"}, "present_values": {3: "total"}}
    proto = _trace(
        DecodeStepGraph(model), args, _is_quantized(model), fp16_initializers,
        input_names=STEP_INPUTS, output_names=STEP_OUTPUTS, dynamic_axes=dynamic,
    )
    return _save(proto, path)


def check_decode_step(
    path: str | os.PathLike, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, seed: int = 1,
    batch_size: int = 1,
) -> dict[str, float]:
    """Greedy-decode a whole chunk step by step in onnxruntime (cache growing each step) next to the PyTorch
    cache, at the batch size the graph was exported for; returns the max abs logit difference over all steps
    and the largest logit magnitude (float32 rounding scales with it)."""
    session = ort_session(path)
    emb = processor.resolve(embodiment)
    dims, steps = processor.schedule(emb)
    worst = scale = 0.0
    with torch.no_grad():
        logits, keys, values, mask = PrefillGraph(model.eval(), processor, emb)(*example_feed(model, processor, emb, batch_size, seed).values())
        step_graph = DecodeStepGraph(model)
        ort_keys, ort_values = keys.numpy(), values.numpy()
        for k in range(1, dims.shape[0]):
            token = greedy_token(logits, model.config.action_bins)
            mask = torch.cat([mask, mask.new_ones(batch_size, 1)], 1)
            feed = (token, dims[None, k : k + 1].expand(batch_size, 1), steps[None, k : k + 1].expand(batch_size, 1), mask)
            logits, keys, values = step_graph(*feed, keys, values)
            got, ort_keys, ort_values = session.run(STEP_OUTPUTS, dict(zip(STEP_INPUTS, [t.numpy() for t in feed] + [ort_keys, ort_values])))
            worst = max(worst, float((torch.from_numpy(got) - logits).abs().max()))
            scale = max(scale, float(logits.abs().max()))
    return {"max_abs_logits": worst, "max_abs_logit_value": scale}


def example_inputs(embodiment: Embodiment, batch_size: int = 1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random in-limit joint states and reachable goal poses (FK of other random states), float32."""
    gen = torch.Generator().manual_seed(seed)
    q = embodiment.sample(batch_size, gen)
    other = embodiment.sample(batch_size, gen)
    goal = torch.stack([c.forward_kinematics(other[:, i]) for c, i in zip(embodiment.chains, embodiment.arm_indices)], 1)
    return q.float(), goal.float()


def example_observation(
    processor: WamProcessor, embodiment: Embodiment, batch_size: int = 1, seed: int = 0, image: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """A random processor observation: ``example_inputs``' joint state and goal poses (a processor reading
    keypoints or task words leaves the goal out on even seeds), 1 to ``max_keypoints`` objects' worth of
    keypoints (a centre and points a few centimetres from it), a sentence of vocabulary words (and an unknown
    one) per sample and, given ``image`` (one frame's shape), random pixels."""
    q, goal = example_inputs(embodiment, batch_size, seed)
    gen = torch.Generator().manual_seed(seed)
    observation: dict[str, Any] = {"state": q}
    if not (processor.max_keypoints or processor.task_vocab) or seed % 2:
        observation["goal"] = goal
    if processor.max_keypoints:
        n = processor.keypoints_per_object
        objects = int(torch.randint(1, processor.max_keypoints // n + 1, (1,), generator=gen))
        centres = torch.rand(batch_size, objects, 1, 3, generator=gen) * 0.6 - 0.3
        offsets = torch.rand(batch_size, objects, n, 3, generator=gen) * 0.1 - 0.05
        offsets[:, :, 0] = 0.0
        observation["environment_state"] = (centres + offsets).reshape(batch_size, -1)
    if processor.task_vocab:
        words = processor.task_vocab + ["unheard"]
        lengths = torch.randint(1, processor.max_task_tokens + 2, (batch_size,), generator=gen).tolist()
        observation["task"] = [" ".join(words[int(i)] for i in torch.randint(len(words), (k,), generator=gen)) for k in lengths]
    if image is not None:
        observation["pixel_values"] = torch.rand(batch_size, *image, generator=gen)
    return observation


def example_feed(model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment, batch_size: int = 1, seed: int = 0) -> dict[str, Tensor]:
    """The policy graph's inputs for ``example_observation`` (``graph_feed``), in ``policy_input_names`` order."""
    cfg = model.config
    image = (cfg.num_channels, cfg.image_size, cfg.image_size) if cfg.image_size else None
    observation = example_observation(processor, embodiment, batch_size, seed, image)
    return graph_feed(processor, embodiment, policy_input_names(cfg), observation)


def export_policy(
    model: WamForActionPrediction,
    processor: WamProcessor,
    embodiment: Embodiment | str,
    path: str | os.PathLike,
    batch_size: int = 1,
    fp16_initializers: bool = True,
) -> Path:
    """Export the predict-action path to ``path`` (static shapes: one robot, one batch size) as prefill, an
    ONNX ``Loop`` over the remaining action tokens and bin decoding (see the module docstring).

    ``fp16_initializers`` stores float initializers whose values are exactly float16 as float16 plus a Cast
    (the quantized model's float tensors are rounded to float16, so its file shrinks by half there)."""
    model = model.eval()
    emb = processor.resolve(embodiment)
    feed = example_feed(model, processor, emb, batch_size)
    dims, steps = processor.schedule(emb)
    head, first_slot = loop_head(model, processor, emb)
    with torch.no_grad():
        token, keys, values, mask, state = head(*feed.values())
    tokens = torch.zeros(batch_size, dims.numel(), dtype=torch.long)  # the bin decoding traces the same for any tokens
    quantized = _is_quantized(model)
    parts = (
        _trace(head, tuple(feed.values()), quantized, fp16_initializers, "h", input_names=list(feed), output_names=LOOP_HEAD_OUTPUTS),
        _trace(
            LoopStepGraph(model, dims, steps, first_slot), (torch.tensor(0), token, mask, keys, values), quantized, fp16_initializers,
            "s", input_names=LOOP_BODY_INPUTS, output_names=LOOP_BODY_OUTPUTS,
        ),
        _trace(CanonicalGraph(model, processor, emb), (tokens, state), False, fp16_initializers, "t", input_names=["tokens", "state"], output_names=OUTPUT_NAMES[1:]),
    )
    return _save(_loop_policy(*parts, trips=dims.numel() - 1), path)


def loop_head(model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str) -> tuple[LoopPrefillGraph, int]:
    """The Loop policy's head with a cache sized for the embodiment's whole action schedule, and the slot of
    the first decoded token (prefix + BOS, read off one prefill of example inputs)."""
    emb = processor.resolve(embodiment)
    with torch.no_grad():
        first_slot = PrefillGraph(model, processor, emb)(*example_feed(model, processor, emb).values())[3].shape[1]
    return LoopPrefillGraph(model, processor, emb, first_slot + processor.schedule(emb)[0].numel() - 1), first_slot


def _loop_policy(head: Any, body: Any, tail: Any, trips: int) -> Any:
    """Compose the three traced parts into ``(q, goal, ...) -> (tokens, canonical)``: the prefill, an ONNX ``Loop``
    of ``trips`` decode steps (token and fixed-size KV cache loop-carried, each step's token a scan output,
    the prefill's key mask read from the outer scope), the tokens concatenated, then the bin decoding.

    The body keeps its own initializers, so each ``DequantizeLinear`` sits next to its MatMul in one graph
    (the weight-only GEMM pattern; onnxruntime's fusion into ``MatMulNBits`` also fails on outer-scope
    weights). A weight the prefill uses too is then written twice in this file; ``share_weights`` stores
    the bytes once. Initializers are pooled per graph: one per distinct tensor."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers = _pool_initializers([head.graph, tail.graph])
    step = body.graph
    carried = [v for v in step.input if v.name not in LOOP_HEAD_OUTPUTS]  # loop_i, token, keys, values
    token_shape = [d.dim_value for d in step.output[0].type.tensor_type.shape.dim]
    body_graph = helper.make_graph(
        [
            *step.node,
            helper.make_node("Identity", ["loop_cond"], ["loop_cond_out"]),
            helper.make_node("Identity", [LOOP_BODY_OUTPUTS[0]], ["loop_scan_token"]),
        ],
        "decode_step",
        [carried[0], helper.make_tensor_value_info("loop_cond", TensorProto.BOOL, []), *carried[1:]],
        [
            helper.make_tensor_value_info("loop_cond_out", TensorProto.BOOL, []),
            *step.output,
            helper.make_tensor_value_info("loop_scan_token", TensorProto.INT64, token_shape),
        ],
        _pool_initializers([step]),
    )
    initializers += [
        numpy_helper.from_array(np.array(trips, np.int64), "loop_trips"),
        numpy_helper.from_array(np.array([2], np.int64), "loop_scan_axis"),
    ]
    nodes = [
        *head.graph.node,
        helper.make_node(
            "Loop", ["loop_trips", "", *LOOP_HEAD_OUTPUTS[:3]],
            ["last_token", "last_keys", "last_values", "scanned_tokens"], body=body_graph,
        ),
        helper.make_node("Squeeze", ["scanned_tokens", "loop_scan_axis"], ["scanned_tokens_2d"]),  # [trips, B]
        helper.make_node("Transpose", ["scanned_tokens_2d"], ["later_tokens"], perm=[1, 0]),
        helper.make_node("Concat", [LOOP_HEAD_OUTPUTS[0], "later_tokens"], [OUTPUT_NAMES[0]], axis=1),
        *tail.graph.node,
    ]
    outputs = [tail.graph.input[0], *tail.graph.output]  # tokens [B, L], canonical [B, H, D]
    graph = helper.make_graph(nodes, "policy", list(head.graph.input), outputs, initializers)
    opsets: dict[str, int] = {}
    for part in (head, body, tail):
        for o in part.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], producer_name="embodyhub")
    proto.ir_version = max(p.ir_version for p in (head, body, tail))
    onnx.checker.check_model(proto)
    return proto


def _pool_initializers(graphs: list[Any]) -> list[Any]:
    """The initializers of ``graphs``, one per distinct tensor (equal dtype, shape and bytes) under the first
    name it had (``_compact_graph``'s prefixes keep the parts' names apart); the graphs' nodes are rewired to
    them and the graphs' own initializer lists emptied."""
    pooled: dict[bytes, Any] = {}
    for graph in graphs:
        rename = {}
        for init in graph.initializer:
            key = _tensor_key(init)
            if key not in pooled:
                pooled[key] = type(init)()
                pooled[key].CopyFrom(init)
            rename[init.name] = pooled[key].name
        for node in graph.node:
            for i, name in enumerate(node.input):
                node.input[i] = rename.get(name, name)
        del graph.initializer[:]
    return list(pooled.values())


def _tensor_key(tensor: Any) -> bytes:
    """A tensor's content (dtype, shape, values) without its name."""
    anonymous = type(tensor)()
    anonymous.CopyFrom(tensor)
    anonymous.name = ""
    return hashlib.sha256(anonymous.SerializeToString()).digest()


def share_weights(paths: list[Path], data_name: str = ONNX_DATA_NAME, min_bytes: int = 128) -> Path:
    """Move every initializer of at least ``min_bytes`` of the ONNX files ``paths`` (one folder) into the
    external-data file ``data_name`` next to them, each distinct tensor once: every robot's policy graph and
    the decode step then read the same weights. onnxruntime and TensorRT resolve the file relative to each
    graph's folder; returns its path."""
    import onnx
    from onnx.external_data_helper import set_external_data

    data = Path(paths[0]).parent / data_name
    stored: dict[bytes, tuple[int, int]] = {}
    with open(data, "wb") as fh:
        for path in paths:
            proto = onnx.load(str(path))
            for init in (i for g in _graphs(proto.graph) for i in g.initializer):
                raw = init.raw_data
                if len(raw) < min_bytes:
                    continue
                key = hashlib.sha256(raw).digest()
                if key not in stored:
                    stored[key] = (fh.tell(), len(raw))
                    fh.write(raw)
                set_external_data(init, data_name, *stored[key])
                init.data_location = onnx.TensorProto.EXTERNAL
                init.ClearField("raw_data")
            onnx.save(proto, str(path))
    return data


def _graphs(graph: Any) -> list[Any]:
    """``graph`` and its subgraphs (Loop bodies), recursively."""
    from onnx import AttributeProto

    subgraphs = [a.g for n in graph.node for a in n.attribute if a.type == AttributeProto.GRAPH]
    return [graph, *(g for sub in subgraphs for g in _graphs(sub))]


def _is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QuantizedLinear) for m in model.modules())


def _standard_dequantize(proto: Any) -> int:
    """Rewrite each ``embodyhub::DequantizeT`` placeholder (from ``QuantizedLinear`` under ``dequantize_once``)
    into ONNX ``DequantizeLinear`` on a ``[K, N]`` integer initializer that feeds the MatMul: int8 per channel
    (axis 1), int4 blocked along K with uint4 zero points (opset 21 block quantization), fp8 e4m3 per channel.
    Raises the model's opset to 21; returns the number of rewritten weights."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, added, used = [], [], []
    for node in graph.node:
        if node.domain != "embodyhub":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        precision, group, K = attrs["precision"].decode(), int(attrs["group_size"]), int(attrs["in_features"])
        missing = [name for name in node.input if name not in inits]
        if missing:
            raise RuntimeError(f"quantized weight inputs {missing} are not initializers; cannot write DequantizeLinear")
        q, scale = numpy_helper.to_array(inits[node.input[0]]), numpy_helper.to_array(inits[node.input[1]])
        base, out = node.input[0], node.output[0]
        used += list(node.input)
        N = q.shape[0]
        if precision == "int4":
            zero = numpy_helper.to_array(inits[node.input[2]])
            codes = np.concatenate([q & 15, q >> 4], 1)[:, :K]
            weight = _uint4_tensor(base + ".t", codes.T)
            zeros = _uint4_tensor(base + ".zero_t", zero.T)
            # float32 scales (the float16 values, widened): DequantizeLinear's output type is the scale's, and a
            # float16 weight would round where the PyTorch model does not
            scales = numpy_helper.from_array(np.ascontiguousarray(scale.T).astype(np.float32), base + ".scale_t")
            added += [weight, zeros, scales]
            nodes.append(helper.make_node("DequantizeLinear", [weight.name, scales.name, zeros.name], [out], axis=0, block_size=group))
        else:
            if precision == "int8":
                weight = numpy_helper.from_array(np.ascontiguousarray(q.T), base + ".t")
            else:  # fp8: the uint8 buffer holds e4m3 bits
                weight = helper.make_tensor(base + ".t", onnx.TensorProto.FLOAT8E4M3FN, [K, N], np.ascontiguousarray(q.T).tobytes(), raw=True)
            scales = numpy_helper.from_array(scale.astype(np.float32), base + ".scale_t")
            added += [weight, scales]
            nodes.append(helper.make_node("DequantizeLinear", [weight.name, scales.name], [out], axis=1))
    if not used:
        return 0
    still_read = {name for n in nodes for name in n.input}
    kept = [i for i in graph.initializer if i.name not in used or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    del graph.node[:]
    graph.node.extend(nodes)
    opsets = [o for o in proto.opset_import if o.domain != "embodyhub"]
    for o in opsets:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 21)
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)
    proto.ir_version = max(proto.ir_version, 10)
    return len(set(used))


def _fp16_initializers(proto: Any, min_elements: int = 64) -> int:
    """Rewrite float32 initializers that are exactly representable in float16 as float16 + Cast; returns the count."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts, count = [], 0
    scales = {n.input[1] for n in graph.node if n.op_type == "DequantizeLinear"}
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in scales:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements or not np.array_equal(arr.astype(np.float16).astype(np.float32), arr):
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name + "__fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT, name=name + "__cast"))
        count += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    return count


def _uint4_tensor(name: str, values: Any) -> Any:
    """A UINT4 initializer from codes 0..15, packed as ONNX stores them (element 2i in the low nibble of byte
    i, 2i+1 in the high one) into raw bytes: half a byte per weight on disk."""
    import numpy as np
    import onnx
    from onnx import helper

    flat = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    packed = (flat[0::2] & 15) | ((flat[1::2] & 15) << 4)
    return helper.make_tensor(name, onnx.TensorProto.UINT4, list(values.shape), packed.astype(np.uint8).tobytes(), raw=True)


def _float32_graph(proto: Any) -> int:
    """Turn the float64 arithmetic the processor traces (FK, bin decoding) into float32: TensorRT has no
    float64, and float32 keeps actions well inside the check's tolerance. Returns the number of rewrites."""
    import onnx
    from onnx import numpy_helper

    double, single = onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT
    count = 0

    def convert(tensor: Any) -> None:
        nonlocal count
        if tensor.data_type == double:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float32"), tensor.name))
            count += 1

    graph = proto.graph
    for init in graph.initializer:
        convert(init)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                convert(attr.t)
            elif attr.name == "to" and attr.i == double:
                attr.i = single
                count += 1
    for value in list(graph.input) + list(graph.output):
        if value.type.tensor_type.elem_type == double:
            value.type.tensor_type.elem_type = single
    return count


def _compact_graph(proto: Any, prefix: str = "") -> None:
    """Shrink the traced graph's structure: Constant nodes become shared initializers (one per distinct
    value), Identity nodes are bypassed, initializers and intermediate values get short ids starting with
    ``prefix`` (unique across the composed parts) and nodes lose their names: scope-path names, written at
    every use, would otherwise rival a small model's weights."""
    from onnx import numpy_helper

    graph = proto.graph
    alias: dict[str, str] = {}
    for init in graph.initializer:
        alias[init.name] = f"{prefix}w{len(alias)}"
        init.name = alias[init.name]
    outputs = {v.name for v in graph.output}
    keep = {v.name for v in graph.input} | outputs | {i.name for i in graph.initializer}
    shared: dict[tuple[Any, ...], str] = {}
    nodes = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
        out = node.output[0] if node.output else ""
        if node.op_type == "Constant" and out not in outputs and [a.name for a in node.attribute] == ["value"]:
            arr = numpy_helper.to_array(node.attribute[0].t)
            key = (node.attribute[0].t.data_type, arr.shape, arr.tobytes())
            if key not in shared:
                shared[key] = f"{prefix}w{len(graph.initializer)}"
                graph.initializer.append(numpy_helper.from_array(arr, shared[key]))
            alias[out] = shared[key]
            continue
        if node.op_type == "Identity" and out not in outputs:
            alias[out] = node.input[0]
            continue
        nodes.append(node)
    renamed: dict[str, str] = {}
    keep |= set(shared.values())
    for node in nodes:
        node.ClearField("name")
        node.ClearField("doc_string")
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        for i, name in enumerate(node.output):
            if name and name not in keep:
                renamed[name] = node.output[i] = f"{prefix}v{len(renamed)}"
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]


def session_config(path: str | os.PathLike) -> dict[str, str]:
    """The onnxruntime session config entries under which the graph computes what the quantized PyTorch
    model computes (the bundle's manifest and README carry them: a plain session needs them too).

    onnxruntime fuses ``DequantizeLinear`` + ``MatMul`` into ``MatMulNBits``, by default quantizing the
    activations to int8 on the fly (canonical actions then drift by up to ~1e-1 from PyTorch); accuracy
    level 1 keeps the fused kernel in float32. That kernel is fast for int4 blocks, but at 8 bits it is ~2.5x
    slower than a float32 MatMul on the tiny base, and fp8 is not fused at all (dequantized at every decode
    step). So graphs without block quantization (int8, fp8) have their ``DequantizeLinear`` nodes
    constant-folded at load: the file keeps its integer weights, the session holds float32 copies (the same
    arithmetic)."""
    import onnx

    entries = {"session.qdq_matmulnbits_accuracy_level": "1"}
    graphs = _graphs(onnx.load(str(path), load_external_data=False).graph)
    blocked = any(a.name == "block_size" and a.i > 0 for g in graphs for n in g.node if n.op_type == "DequantizeLinear" for a in n.attribute)
    if not blocked:
        entries["session.disable_quant_qdq"] = "1"
    return entries


def ort_session(path: str | os.PathLike, threads: int = 1, config: dict[str, str] | None = None) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads) with ``config`` entries (default:
    ``session_config(path)``); ``config={}`` is a session with onnxruntime's default options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key, value in (session_config(path) if config is None else config).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_against_torch(
    path: str | os.PathLike,
    model: WamForActionPrediction,
    processor: WamProcessor,
    embodiment: Embodiment | str,
    batch_size: int = 1,
    trials: int = 5,
    config: dict[str, str] | None = None,
) -> dict[str, float]:
    """Run the ONNX graph (in ``ort_session(path, config=config)``) and the PyTorch path on ``trials`` fresh
    random observations (``example_feed``: with the v2 inputs, keypoints and a task, with and without a goal).

    Returns the max abs canonical difference (in the action's own units and in bins), the token
    agreement and the max abs difference of the native chunks decoded from each side's tokens."""
    session = ort_session(path, config=config)
    graph = PolicyGraph(model.eval(), processor, embodiment).eval()
    emb = graph.embodiment
    width = processor.bins.resolution().float()
    worst = worst_bins = worst_native = 0.0
    agree = []
    for seed in range(1, trials + 1):
        feed = example_feed(graph.model, processor, emb, batch_size, seed)
        q = feed["q"]
        with torch.no_grad():
            tokens, canonical = graph(*feed.values())
        got_tokens, got_canonical = (torch.from_numpy(a) for a in session.run(OUTPUT_NAMES, {k: v.numpy() for k, v in feed.items()}))
        diff = (got_canonical - canonical).abs()
        worst = max(worst, float(diff.max()))
        worst_bins = max(worst_bins, float((diff / width).max()))
        agree.append(float((got_tokens == tokens).float().mean()))
        native = processor.decode_actions(tokens, emb, q.double())
        got_native = processor.decode_actions(got_tokens, emb, q.double())
        worst_native = max(worst_native, float((got_native - native).abs().max()))
    return {
        "max_abs_canonical": worst,
        "max_abs_bins": worst_bins,
        "token_agreement": min(agree),
        "max_abs_native": worst_native,
        "trials": trials,
    }
