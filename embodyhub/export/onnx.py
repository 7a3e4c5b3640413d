"""ONNX export of the predict-action path for one embodiment (and of the KV-cached decode step), checked
against PyTorch with onnxruntime.

The policy graph is the model's own code traced end to end: ``WamProcessor`` (limit normalization,
FK to the canonical state, goal features, the embodiment's joint tokens as constants), KV-cached
greedy decoding of the whole action-token schedule (``sample_action_tokens``, unrolled), and the
bin decoding back to canonical actions (relative offsets added back). Inputs: native joint state
``q [B, dof]`` and per-arm goal poses ``goal [B, arms, 4, 4]``; outputs: the action ``tokens [B, L]``
and the canonical chunk ``canonical [B, H, D]``. The last step to native joint commands (IK for
end-effector slots, limit and velocity clamping) is iterative and data-dependent, so it runs on the
host through ``WamProcessor.decode_actions`` on the graph's tokens (``runtime.OnnxPolicy``).
``DecodeStepGraph`` is one KV-cached token with a dynamic cache length, for runtimes that loop on the host.

Quantized models export with their integer weights behind standard ``DequantizeLinear`` nodes (the
weight-only pattern TensorRT fuses into its GEMMs; never folded back to float), float tensors stored at
float16 stay float16 in the file, and the processor's float64 arithmetic becomes float32 (TensorRT has
no float64).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache

from ..embodiment import Embodiment
from ..models.wam import WamForActionPrediction, WamProcessor
from .quantize import QuantizedLinear, dequantize_once

INPUT_NAMES = ["q", "goal"]
OUTPUT_NAMES = ["tokens", "canonical"]
OPSET = 18


class PolicyGraph(nn.Module):
    """``(q, goal) -> (tokens, canonical)`` for one embodiment and batch size: what gets traced."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.embodiment = processor.resolve(embodiment)

    def forward(self, q: Tensor, goal: Tensor) -> tuple[Tensor, Tensor]:
        batch = dict(self.processor({"state": q, "goal": goal}, self.embodiment))
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
    """``(q, goal) -> (logits, keys, values, attention_mask)``: the processor and the prefix + BOS forward, the
    first logits and the KV cache stacked over layers ``[layers, B, heads, T, head_dim]``. With
    ``DecodeStepGraph`` it is the step-wise form of ``PolicyGraph`` (for runtimes that loop on the host)."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str) -> None:
        super().__init__()
        self.model, self.processor, self.embodiment = model, processor, processor.resolve(embodiment)

    def forward(self, q: Tensor, goal: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        batch = dict(self.processor({"state": q, "goal": goal}, self.embodiment))
        batch.pop("action_decoder")
        dims, steps = batch.pop("action_dims"), batch.pop("action_steps")
        bos = torch.full((q.shape[0], 1), self.model.config.bos_token_id, dtype=torch.long)
        with dequantize_once(self.model):
            out = self.model(bos, dims[:, :1], steps[:, :1], use_cache=True, **batch)
        keys, values = (torch.stack([getattr(layer, kind) for layer in out.cache.layers]) for kind in ("keys", "values"))
        return out.logits[:, -1], keys, values, out.attention_mask


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
        keys, values = (torch.stack([getattr(layer, kind) for layer in cache.layers]) for kind in ("keys", "values"))
        return out.logits[:, -1], keys, values


STEP_INPUTS = ["token", "dim", "step", "attention_mask", "past_keys", "past_values"]
STEP_OUTPUTS = ["logits", "present_keys", "present_values"]


def _trace_to_onnx(module: nn.Module, args: tuple[Tensor, ...], path: Path, quantized: bool, fp16_initializers: bool, **kwargs: Any) -> Path:
    """Legacy (tracing) export, then the rewrites: standard DequantizeLinear, float32 arithmetic, float16
    initializers, compact graph."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer warns about every shape-specialized Python branch
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=OPSET, custom_opsets={"embodyhub": 1} if quantized else None, **kwargs
        )
    proto = onnx.load(str(path))
    _standard_dequantize(proto)
    _float32_graph(proto)
    if fp16_initializers:
        _fp16_initializers(proto)
    _compact_graph(proto)
    onnx.save(proto, str(path))
    return path


def export_decode_step(
    model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, path: str | os.PathLike,
    batch_size: int = 1, fp16_initializers: bool = True,
) -> Path:
    """Export ``DecodeStepGraph`` (traced on a real cache from ``embodiment``'s prefix; valid for any robot)."""
    model = model.eval()
    q, goal = example_inputs(processor.resolve(embodiment), batch_size)
    with torch.no_grad():
        logits, keys, values, mask = PrefillGraph(model, processor, embodiment)(q, goal)
        dims, steps = processor.schedule(processor.resolve(embodiment))
    token = logits[:, : model.config.action_bins].argmax(-1, keepdim=True)
    mask = torch.cat([mask, mask.new_ones(batch_size, 1)], 1)
    args = (token, dims[None, 1:2].expand(batch_size, 1), steps[None, 1:2].expand(batch_size, 1), mask, keys, values)
    dynamic = {"attention_mask": {1: "total"}, "past_keys": {3: "past"}, "past_values": {3: "past"}, "present_keys": {3: "total"}, "present_values": {3: "total"}}
    quantized = any(isinstance(m, QuantizedLinear) for m in model.modules())
    return _trace_to_onnx(
        DecodeStepGraph(model), args, Path(path), quantized, fp16_initializers,
        input_names=STEP_INPUTS, output_names=STEP_OUTPUTS, dynamic_axes=dynamic,
    )


def check_decode_step(
    path: str | os.PathLike, model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment | str, seed: int = 1
) -> dict[str, float]:
    """Greedy-decode a whole chunk step by step in onnxruntime (cache growing each step) next to the PyTorch
    cache; returns the max abs logit difference over all steps and the largest logit magnitude (float32
    rounding scales with it)."""
    session = ort_session(path)
    emb = processor.resolve(embodiment)
    q, goal = example_inputs(emb, 1, seed)
    dims, steps = processor.schedule(emb)
    worst = scale = 0.0
    with torch.no_grad():
        logits, keys, values, mask = PrefillGraph(model.eval(), processor, emb)(q, goal)
        step_graph = DecodeStepGraph(model)
        ort_keys, ort_values = keys.numpy(), values.numpy()
        for k in range(1, dims.shape[0]):
            token = logits[:, : model.config.action_bins].argmax(-1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones(1, 1)], 1)
            feed = (token, dims[None, k : k + 1], steps[None, k : k + 1], mask)
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


def export_policy(
    model: WamForActionPrediction,
    processor: WamProcessor,
    embodiment: Embodiment | str,
    path: str | os.PathLike,
    batch_size: int = 1,
    fp16_initializers: bool = True,
) -> Path:
    """Trace the predict-action path to ``path`` (static shapes: one robot, one batch size).

    ``fp16_initializers`` stores float initializers whose values are exactly float16 as float16 plus a Cast
    (the quantized model's float tensors are rounded to float16, so its file shrinks by half there)."""
    graph = PolicyGraph(model.eval(), processor, embodiment).eval()
    q, goal = example_inputs(graph.embodiment, batch_size)
    quantized = any(isinstance(m, QuantizedLinear) for m in model.modules())
    return _trace_to_onnx(graph, (q, goal), Path(path), quantized, fp16_initializers, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES)


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


def _compact_graph(proto: Any) -> None:
    """Shrink the unrolled graph's structure: Constant nodes become shared initializers (one per distinct
    value), Identity nodes are bypassed, intermediate values get short ids and nodes lose their names.
    Tens of thousands of nodes with scope-path names would otherwise outweigh a small model's weights."""
    from onnx import numpy_helper

    graph = proto.graph
    outputs = {v.name for v in graph.output}
    keep = {v.name for v in graph.input} | outputs | {i.name for i in graph.initializer}
    alias: dict[str, str] = {}
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
                shared[key] = f"c{len(shared)}"
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
        node.name = ""
        node.doc_string = ""
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        for i, name in enumerate(node.output):
            if name and name not in keep:
                renamed[name] = node.output[i] = f"v{len(renamed)}"
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]


def ort_session(path: str | os.PathLike, threads: int = 1) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads).

    onnxruntime fuses ``DequantizeLinear`` + ``MatMul`` into ``MatMulNBits``, by default quantizing the
    activations to int8 on the fly (logits then drift by ~1e-3 from PyTorch); accuracy level 1 keeps the
    fused kernel but computes in float32, i.e. what the quantized PyTorch model computes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_against_torch(
    path: str | os.PathLike,
    model: WamForActionPrediction,
    processor: WamProcessor,
    embodiment: Embodiment | str,
    batch_size: int = 1,
    trials: int = 5,
) -> dict[str, float]:
    """Run the ONNX graph and the PyTorch path on ``trials`` fresh random observations.

    Returns the max abs canonical difference (in the action's own units and in bins), the token
    agreement and the max abs difference of the native chunks decoded from each side's tokens."""
    session = ort_session(path)
    graph = PolicyGraph(model.eval(), processor, embodiment).eval()
    emb = graph.embodiment
    width = processor.bins.resolution().float()
    worst = worst_bins = worst_native = 0.0
    agree = []
    for seed in range(1, trials + 1):
        q, goal = example_inputs(emb, batch_size, seed)
        with torch.no_grad():
            tokens, canonical = graph(q, goal)
        got_tokens, got_canonical = (torch.from_numpy(a) for a in session.run(OUTPUT_NAMES, {"q": q.numpy(), "goal": goal.numpy()}))
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
