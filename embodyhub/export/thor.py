"""The Jetson Thor bundle: quantized weights, one ONNX policy graph per robot, embodiment cards, manifest.

``build_bundle`` loads a saved WAM (optionally merging a LoRA adapter), quantizes it, writes
``model.quantized.safetensors`` + processor (with the embodiment cards and URDFs), exports
``policy_<robot>.onnx`` (and ``decode_step.onnx``) with their weights in one shared external-data file
``weights.onnx.data``, checks each graph against PyTorch with onnxruntime, measures the latency per chunk
and writes ``manifest.json``: sha256 and size of every file, precision, input/output spec, the check
results, the measured latency next to the control budget ``chunk_length / control_hz`` (with a warning
when the budget is missed) and the ``trtexec`` command that builds the TensorRT engine on the Thor.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..embodiment import Embodiment
from ..errors import EmbodyHubError
from ..recipes import Recipe
from ..models.wam import WamForActionPrediction, WamProcessor
from .onnx import (
    INPUT_NOTES,
    ONNX_DATA_NAME,
    OUTPUT_NAMES,
    check_against_torch,
    check_decode_step,
    example_feed,
    export_decode_step,
    export_policy,
    ort_session,
    policy_input_names,
    prefix_batch,
    session_config,
    share_weights,
)
from .quantize import DEFAULT_GROUP_SIZE, DEFAULT_INT8, DEFAULT_SKIP, FLOAT_PRECISIONS, QuantConfig, quantize_model, save_quantized

MANIFEST_NAME = "manifest.json"
DECODE_STEP_NAME = "decode_step.onnx"
BUNDLE_FORMAT = 2  # 2: the ONNX graphs share one external-data file
ONNX_TOLERANCE = 1e-4  # max abs canonical-action difference accepted between onnxruntime and PyTorch


@dataclass
class ExportRecipe(Recipe):
    """What ``embodyhub export`` reads from ``recipes/export_thor.yaml``."""

    precision: str = "int8"
    group_size: int = DEFAULT_GROUP_SIZE
    skip: list[str] = field(default_factory=lambda: list(DEFAULT_SKIP))
    keep_float: str = "float16"
    int8_layers: list[str] = field(default_factory=lambda: list(DEFAULT_INT8))
    batch_size: int = 1
    check_trials: int = 5
    latency_repeats: int = 10

    def quant_config(self) -> QuantConfig:
        return QuantConfig(
            precision=self.precision, group_size=self.group_size, skip=list(self.skip), keep_float=self.keep_float,
            int8_layers=list(self.int8_layers),
        )


def trtexec_command(onnx_name: str, precision: str) -> str:
    """The ``trtexec`` line the bundle is meant for (run on the Thor, TensorRT 10+, JetPack 7; the graph's
    external data is read from its folder).

    The quantized weights are stored as integer initializers with explicit dequantize arithmetic, so
    ``--stronglyTyped`` keeps TensorRT from re-choosing precisions; fp16 activations via ``--fp16`` where
    the graph is not strongly typed."""
    engine = Path(onnx_name).with_suffix(".engine").name
    flags = "--fp16" if precision in FLOAT_PRECISIONS else "--stronglyTyped"
    return f"trtexec --onnx={onnx_name} --saveEngine={engine} {flags} --skipInference --builderOptimizationLevel=5"


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def time_ms(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn()`` in milliseconds (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def median_ms(fn: Callable[[], Any], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds (after ``warmup`` calls)."""
    return statistics.median(time_ms(fn, repeats, warmup))


def stable_ms(fn: Callable[[], Any], repeats: int = 20, max_seconds: float = 10.0, tolerance: float = 0.05) -> dict[str, Any]:
    """Time ``fn()`` in rounds of ``repeats`` calls until the median of all runs moves by less than ``tolerance``
    (relative) from one round to the next, or ``max_seconds`` have passed; at least two rounds.

    Returns ``median``, the quartiles ``q1``/``q3`` (the middle half of the runs), ``runs`` and ``stable``
    (False when the time ran out first: the spread is then the honest part of the answer)."""
    samples = time_ms(fn, repeats)
    start, previous = time.perf_counter(), statistics.median(samples)
    while True:
        samples += time_ms(fn, repeats, warmup=0)
        median = statistics.median(samples)
        stable = abs(median - previous) <= tolerance * previous
        if stable or time.perf_counter() - start >= max_seconds:
            break
        previous = median
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return {"median": median, "q1": q1, "q3": q3, "runs": len(samples), "stable": stable}


def load_model(model_dir: str | os.PathLike, adapter_dir: str | os.PathLike | None = None) -> tuple[WamForActionPrediction, WamProcessor, Embodiment | None]:
    """A saved WAM and its processor; with an adapter, the LoRA weights merged in and the adapter's robot
    (which the processor learns, so the bundle carries its card)."""
    from transformers import AutoModel, AutoProcessor

    import embodyhub  # noqa: F401  (registers the Auto classes)

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    robot = None
    if adapter_dir is not None:
        from ..training.lora import load_adapter

        peft_model, robot = load_adapter(model, adapter_dir)
        model = peft_model.merge_and_unload().eval()
        if robot.name not in processor.embodiments:
            processor.add_embodiment(robot)
    return model, processor, robot


def _spec(path: Path) -> dict[str, list[dict[str, Any]]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": v.name,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {"inputs": describe(proto.graph.input), "outputs": describe(proto.graph.output)}


def build_bundle(
    model: WamForActionPrediction,
    processor: WamProcessor,
    out: str | os.PathLike,
    config: QuantConfig,
    robots: list[str] | None = None,
    batch_size: int = 1,
    check_trials: int = 5,
    latency_repeats: int = 10,
    source: dict[str, Any] | None = None,
    export_step: bool = True,
) -> dict[str, Any]:
    """Quantize ``model`` in place and write the bundle folder ``out``; returns the manifest. ``export_step``
    adds ``decode_step.onnx`` (one KV-cached token, dynamic cache length) for runtimes that loop on the host.
    The graphs are checked and timed as shipped: after their weights moved to the shared data file."""
    if batch_size < 1:
        raise EmbodyHubError(f"batch_size must be at least 1, got {batch_size}")
    robots = robots or list(processor.embodiment_names)
    if not robots:
        raise EmbodyHubError("the processor has no embodiment cards; pass robots the bundle is for")
    unknown = [r for r in robots if r not in processor.embodiments]
    if unknown:
        raise EmbodyHubError(f"robots {unknown} have no embodiment card in the processor (it has {processor.embodiment_names})")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    report = quantize_model(model, config)
    model.eval()
    save_quantized(model, folder, processor)
    policies = {name: export_policy(model, processor, name, folder / f"policy_{name}.onnx", batch_size) for name in robots}
    step_path = export_decode_step(model, processor, robots[0], folder / DECODE_STEP_NAME, batch_size) if export_step else None
    share_weights([*policies.values(), *([step_path] if step_path else [])])
    entries = []
    for name, onnx_path in policies.items():
        emb = processor.embodiments[name]
        options = session_config(onnx_path)
        check = check_against_torch(onnx_path, model, processor, emb, batch_size, check_trials, options)
        default = check_against_torch(onnx_path, model, processor, emb, batch_size, check_trials, config={})
        session = ort_session(onnx_path, config=options)
        inputs = example_feed(model, processor, emb, batch_size)
        feed = {k: v.numpy() for k, v in inputs.items()}
        graph_ms = median_ms(lambda: session.run(OUTPUT_NAMES, feed), latency_repeats)

        def chunk() -> None:  # what a control loop pays per chunk: the graph, then IK and clamping on the host
            tokens = torch.from_numpy(session.run(OUTPUT_NAMES[:1], feed)[0])
            processor.decode_actions(tokens, emb, inputs["q"].double())

        ort_ms = median_ms(chunk, max(3, latency_repeats // 3))
        with torch.no_grad():
            torch_ms = median_ms(lambda: model.predict_action(**prefix_batch(processor, emb, inputs)), max(3, latency_repeats // 3))
        budget_ms = 1e3 * processor.chunk_length / emb.control_hz
        entry = {
            "robot": name,
            "onnx": onnx_path.name,
            "urdf_sha256": emb.urdf_sha256,
            "dof": emb.dof,
            "control_hz": emb.control_hz,
            "chunk_length": processor.chunk_length,
            "action_tokens": int(processor.schedule(emb)[0].numel()),
            "io": _spec(onnx_path),
            "onnxruntime_session": {"config_entries": options},
            "onnx_check": {**check, "tolerance": ONNX_TOLERANCE, "passed": check["max_abs_canonical"] <= ONNX_TOLERANCE},
            "default_session_check": {**default, "note": "onnxruntime's default options, for comparison: not the bundle's"},
            "latency_ms": {
                "onnxruntime_graph": graph_ms,
                "onnxruntime_graph_and_native_decode": ort_ms,
                "torch_eager_predict_action": torch_ms,
                "device": "CPU, 1 onnxruntime thread",
            },
            "budget_ms": budget_ms,
            "within_budget": ort_ms <= budget_ms,
            "trtexec": trtexec_command(onnx_path.name, config.precision),
        }
        if ort_ms > budget_ms:
            entry["warning"] = (
                f"{name}: a chunk (graph + native decode) took {ort_ms:.1f} ms on this machine's CPU, over the {budget_ms:.1f} ms budget "
                f"({processor.chunk_length} steps at {emb.control_hz:g} Hz); measure on the Thor with the TensorRT engine"
            )
            warnings.warn(entry["warning"], stacklevel=2)
        if not entry["onnx_check"]["passed"]:
            raise EmbodyHubError(f"{name}: ONNX differs from PyTorch by {check['max_abs_canonical']:.2e} (> {ONNX_TOLERANCE})")
        entries.append(entry)
    decode_step = None
    if step_path is not None:
        step_check = check_decode_step(step_path, model, processor, robots[0], batch_size=batch_size)
        tolerance = ONNX_TOLERANCE * max(1.0, step_check["max_abs_logit_value"])  # float32 rounding is relative
        if step_check["max_abs_logits"] > tolerance:
            raise EmbodyHubError(f"decode-step ONNX logits differ from PyTorch by {step_check['max_abs_logits']:.2e} (> {tolerance:.1e})")
        decode_step = {
            "onnx": DECODE_STEP_NAME, "io": _spec(step_path), **step_check, "tolerance": tolerance,
            "onnxruntime_session": {"config_entries": session_config(step_path)},
            "trtexec": trtexec_command(DECODE_STEP_NAME, config.precision),
            "note": "one KV-cached token; cache axis 3 is dynamic (give trtexec --minShapes/--optShapes/--maxShapes for it)",
        }
    names = policy_input_names(model.config)
    readme = folder / "README.md"
    readme.write_text(_readme(config, entries, names))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest = {
        "format": BUNDLE_FORMAT,
        "target": "jetson-thor",
        "precision": config.precision,
        "quantization": {
            **config.to_dict(), "quantized_layers": report["quantized"], "int8_layers": report["int8"], "float_layers": report["skipped"],
        },
        "model_type": model.config.model_type,
        "source": source or {},
        "inputs_note": "; ".join(f"{name}: {INPUT_NOTES[name]}" for name in names),
        "outputs_note": "tokens: action tokens (decode to native joints with WamProcessor.decode_actions); canonical: [B, H, D] canonical actions",
        "embodiments": entries,
        "decode_step": decode_step,
        "onnx_data": ONNX_DATA_NAME,
        "files": {str(p.relative_to(folder)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files},
        "bytes_total": sum(p.stat().st_size for p in files),
        "measured_on": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(), "torch": torch.__version__},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _readme(config: QuantConfig, entries: list[dict[str, Any]], inputs: list[str]) -> str:
    lines = [
        f"# embodyhub Thor bundle ({config.precision})",
        "",
        "Build the TensorRT engine on the Jetson Thor (TensorRT 10 or newer):",
        "",
    ]
    for e in entries:
        lines += ["```", e["trtexec"], "```", ""]
    lines += [
        "Open a graph in onnxruntime with the session options its `manifest.json` entry lists under",
        "`onnxruntime_session` (with onnxruntime's defaults it fuses the int4/int8 matmuls at an accuracy level",
        "that quantizes activations, and the actions drift from PyTorch's: `default_session_check` records by how much):",
        "",
        "```python",
        "import onnxruntime as ort",
        "",
        "options = ort.SessionOptions()",
    ]
    for key, value in entries[0]["onnxruntime_session"]["config_entries"].items():
        lines.append(f'options.add_session_config_entry("{key}", "{value}")')
    lines += [
        f'session = ort.InferenceSession("{entries[0]["onnx"]}", options, providers=["CPUExecutionProvider"])',
        "```",
        "",
        f"With these options the graph's canonical actions are within {ONNX_TOLERANCE:g} of PyTorch (`onnx_check` in the manifest).",
        "",
        "Inputs:",
        "",
        *(f"- `{name}`: {INPUT_NOTES[name]}" for name in inputs),
        "",
        f"Outputs: `{OUTPUT_NAMES[0]}` action tokens, `{OUTPUT_NAMES[1]}` canonical actions `[B, H, D]`.",
        "Native joint commands: `embodyhub.export.runtime.OnnxPolicy(bundle_dir, robot)(q, goal)`"
        + (" (the goal may be None; the other observation parts by the processor's names: `environment_state=`, `task=`, `pixel_values=`)"
           if len(inputs) > 2 else ""),
        "(IK and limit clamping through the bundled processor). `manifest.json` lists hashes, specs and latency.",
        f"The graphs read their weights from `{ONNX_DATA_NAME}` (ONNX external data): keep it next to them.",
        "Save the engine outside this folder: the runtime refuses a bundle holding files `manifest.json` does not list.",
        "",
    ]
    return "\n".join(lines)


def verify_bundle(folder: str | os.PathLike) -> dict[str, Any]:
    """Check a bundle against its manifest before anything runs it; returns the manifest. Raises
    ``EmbodyHubError`` when a listed path is absolute or leaves the folder (``..``, a symlink out), a listed
    file is missing or differs from its sha256, a file in the folder is not listed (a dropped entry must not
    hide a tampered file), or a graph the manifest names, or external data a listed graph reads, is not a
    listed file."""
    import onnx

    from .onnx import _graphs

    folder = Path(folder)
    root = folder.resolve()
    if not (folder / MANIFEST_NAME).is_file():
        raise EmbodyHubError(f"{folder} is not an export bundle (no {MANIFEST_NAME} in it): give a folder `embodyhub export` wrote")
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        listed = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbodyHubError(f"{folder} has no readable {MANIFEST_NAME} with a 'files' table ({type(exc).__name__})") from None
    for rel, info in listed.items():
        path = _bundle_path(root, rel)
        if not path.is_file():
            raise EmbodyHubError(f"bundle file {rel} is missing")
        if sha256(path) != info["sha256"]:
            raise EmbodyHubError(f"bundle file {rel} does not match its manifest hash")
    present = set()
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        links = [d for d in dirnames if (base / d).is_symlink()]  # os.walk does not descend into them: report them
        present.update((base / name).relative_to(root).as_posix() for name in filenames + links)
    unlisted = sorted(present - set(listed) - {MANIFEST_NAME})
    if unlisted:
        raise EmbodyHubError(f"bundle {folder} holds files its manifest does not list: {', '.join(unlisted[:5])} (move them out of the bundle)")
    named = [e.get("onnx") for e in manifest.get("embodiments", [])] + [(manifest.get("decode_step") or {}).get("onnx"), manifest.get("onnx_data")]
    outside = [name for name in named if name is not None and name not in listed]
    if outside:
        raise EmbodyHubError(f"the manifest names {outside[0]!r}, which is not one of the bundle's listed files")
    for rel in (r for r in listed if r.endswith(".onnx")):
        for graph in _graphs(onnx.load(str(root / rel), load_external_data=False).graph):
            for init in graph.initializer:
                location = next((e.value for e in init.external_data if e.key == "location"), None)
                if location is not None and (Path(rel).parent / location).as_posix() not in listed:
                    raise EmbodyHubError(f"graph {rel} reads external data {location!r}, which is not a listed file of the bundle")
    return manifest


def _bundle_path(root: Path, rel: str) -> Path:
    """``root / rel`` for a manifest path that stays inside the bundle, else ``EmbodyHubError``."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or "\\" in rel or ".." in parts:
        raise EmbodyHubError(f"the manifest lists {rel!r}: bundle paths must be relative and stay inside the bundle")
    path = root / rel
    if not path.resolve().is_relative_to(root):
        raise EmbodyHubError(f"bundle file {rel} leads outside the bundle (a symlink)")
    return path
