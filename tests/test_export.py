"""Thor export: weight-only quantization, ONNX policy graph vs PyTorch (onnxruntime), bundle, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch
from torch import nn

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.errors import EmbodyHubError
from embodyhub.export import (
    QuantConfig,
    QuantizedLinear,
    load_quantized,
    quantize_model,
    save_quantized,
)
from embodyhub.export.kernels import reference
from embodyhub.export.onnx import (
    check_against_torch,
    check_decode_step,
    example_inputs,
    export_decode_step,
    export_policy,
)
from embodyhub.export.quantize import (
    dequantize_once,
    fp8_supported,
    quantize_fp8,
    quantize_int4,
    quantize_int8,
)
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_length=2)


def tiny(seed: int = 0) -> tuple[WamForActionPrediction, WamProcessor]:
    torch.manual_seed(seed)
    processor = WamProcessor(chunk_length=2)
    panda = load_robot("panda")
    processor.add_embodiment(panda)
    model = WamForActionPrediction(WamConfig(embodiments={panda.name: panda.urdf_sha256}, **TINY)).eval()
    return model, processor


def prefix(processor, emb, batch=2, seed=0):
    q, goal = example_inputs(emb, batch, seed)
    actions = q.double()[:, None].expand(batch, processor.chunk_length, emb.dof)  # teacher-forced input ids
    inputs = dict(processor({"state": q.double(), "goal": goal.double()}, emb, actions=actions))
    inputs.pop("action_decoder")
    return inputs


def decode_inputs(processor, emb, batch):
    """``(action_dims, action_steps, prefix inputs)`` for ``sample_action_tokens``."""
    inputs = prefix(processor, emb, batch)
    for key in ("input_ids", "labels", "world_targets", "world_mask"):
        inputs.pop(key)
    return inputs.pop("action_dims"), inputs.pop("action_steps"), inputs


@pytest.mark.parametrize("k,n", [(37, 29), (64, 16), (5, 3)])
def test_weight_codes_reconstruct_within_half_a_step(k, n):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(k))
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and ((reference.dequantize_int8(q, s) - w).abs() <= s[:, None] / 2 + 1e-7).all()
    for group in (8, 13, k):
        q4, s4, z4 = quantize_int4(w, group)
        assert q4.shape == (n, -(-k // 2)) and q4.dtype == torch.uint8 and int(z4.max()) <= 15
        step = s4.float().repeat_interleave(group, 1)[:, :k]
        err = (reference.dequantize_int4(q4, s4, z4, group, k) - w).abs()
        # rounding is half a step; the integer zero point can shift the grid by another half at a range end
        assert (err <= step + 1e-6).all() and float((err / step).mean()) < 0.3
        assert err.max() < 0.2 * w.abs().max()  # the codes span each group's range
    q8, s8 = quantize_fp8(w)
    rel = (reference.dequantize_fp8(q8, s8) - w).abs() / w.abs().clamp_min(1e-3 * float(w.abs().max()))
    assert q8.dtype == torch.uint8 and float(rel.max()) <= 2**-4 + 1e-6  # e4m3: 3 mantissa bits


def test_e4m3_decoder_matches_torch_dtype():
    bits = torch.arange(256).to(torch.uint8)
    want = bits.view(torch.float8_e4m3fn).float()
    ok = ~want.isnan()
    torch.testing.assert_close(reference.e4m3_to_float(bits)[ok], want[ok], rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["int8", "int4", "fp8"])
@torch.no_grad()
def test_quantize_model_skip_list_round_trip_and_outputs(precision, tmp_path):
    model, processor = tiny()
    inputs = prefix(processor, processor.resolve("panda"))
    want = model(**inputs).logits
    report = quantize_model(model, QuantConfig(precision, group_size=16))
    assert isinstance(model.model.joint_proj, nn.Linear) and "model.joint_proj" in report["skipped"]
    assert model.action_head.precision == "int8" and ("action_head" in report["int8"]) == (precision != "int8")
    assert "model.layers.0.self_attn.q_proj" in report["quantized"]
    assert isinstance(model.model.layers[1].mlp.down_proj, QuantizedLinear)
    got = model(**inputs).logits
    rel = float((got - want).norm() / want.norm())
    assert rel < {"int8": 0.02, "int4": 0.15, "fp8": 0.08}[precision]
    with dequantize_once(model):  # the once-per-chunk weights compute the same thing
        torch.testing.assert_close(model(**inputs).logits, got, rtol=1e-5, atol=1e-5)
    path = save_quantized(model, tmp_path / "q", processor)
    loaded = load_quantized(tmp_path / "q")
    torch.testing.assert_close(loaded(**inputs).logits, got, rtol=0, atol=0)
    float_dir = tmp_path / "f"
    WamForActionPrediction(model.config).save_pretrained(float_dir)
    ratio = path.stat().st_size / (float_dir / "model.safetensors").stat().st_size
    assert ratio < {"int8": 0.45, "int4": 0.4, "fp8": 0.45}[precision]


def test_skip_patterns_and_bad_configs():
    model, _ = tiny()
    report = quantize_model(model, QuantConfig("int8", skip=["model.layers.*.mlp.*", "world_head"]))
    assert all(".mlp." not in name and not name.startswith("world_head") for name in report["quantized"])
    assert isinstance(model.action_head, QuantizedLinear)
    model, _ = tiny()
    report = quantize_model(model, QuantConfig("int4", skip=["world_head.2"], int8_layers=["world_head", "model.layers.0.*"]))
    assert model.world_head[0].precision == "int8" and isinstance(model.world_head[2], nn.Linear)  # skip wins
    assert model.model.layers[0].mlp.up_proj.precision == "int8" and model.model.layers[1].mlp.up_proj.precision == "int4"
    assert "action_head" in report["quantized"] and "world_head.0" in report["int8"] and report["skipped"] == ["world_head.2"]
    with pytest.raises(EmbodyHubError, match="precision"):
        QuantConfig("int3")
    with pytest.raises(EmbodyHubError, match="group_size"):
        QuantConfig("int4", group_size=0)


@pytest.mark.parametrize("precision", ["float32", "int4"])
def test_onnx_policy_matches_pytorch(precision, tmp_path):
    model, processor = tiny()
    report = quantize_model(model, QuantConfig(precision, group_size=16))
    path = export_policy(model, processor, "panda", tmp_path / "policy.onnx")
    result = check_against_torch(path, model, processor, "panda", trials=3)
    assert result["max_abs_canonical"] <= 1e-4 and result["token_agreement"] == 1.0 and result["max_abs_native"] == 0.0
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (loop,) = [n for n in proto.graph.node if n.op_type == "Loop"]
    int4 = [name for name in report["quantized"] if not name.startswith("world_head")]  # imagine=False: unused
    want = Counter({onnx.TensorProto.UINT4: len(int4), onnx.TensorProto.INT8: len(report["int8"])})  # the action head: int8
    for graph in (proto.graph, loop.attribute[0].g):  # the prefill and the Loop body each dequantize every used layer once
        types = {i.name: i.data_type for i in graph.initializer}
        assert Counter(types[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear") == +want
        assert not any(t == onnx.TensorProto.DOUBLE for t in types.values())
    # the step-wise form: one KV-cached token per call, the cache growing through the chunk
    step = check_decode_step(export_decode_step(model, processor, "panda", tmp_path / "step.onnx"), model, processor, "panda")
    assert step["max_abs_logits"] <= 1e-4 * max(1.0, step["max_abs_logit_value"])


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_loop_policy_decodes_the_pytorch_tokens_for_each_robot(precision, tmp_path):
    model, processor = tiny(seed=1)
    processor.add_embodiment(load_robot("ur5"))
    quantize_model(model, QuantConfig(precision, group_size=16))
    for robot in ("panda", "ur5"):  # random in-limit states and goals, a batch of 2
        path = export_policy(model, processor, robot, tmp_path / f"{robot}.onnx", batch_size=2)
        result = check_against_torch(path, model, processor, robot, batch_size=2, trials=4)
        assert result["token_agreement"] == 1.0 and result["max_abs_canonical"] <= 1e-4 and result["max_abs_native"] == 0.0


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_ort_session_folds_dequantization_only_without_a_fused_kernel(precision, tmp_path):
    """int8 weights are dequantized once at load, int4 ones stay for ``MatMulNBits``; either way the session
    gives what one dequantizing at every step gives."""
    import onnxruntime as ort

    from embodyhub.export.onnx import OUTPUT_NAMES, ort_session

    model, processor = tiny(seed=2)
    quantize_model(model, QuantConfig(precision, group_size=16))
    path = export_policy(model, processor, "panda", tmp_path / "policy.onnx")
    session = ort_session(path)
    try:
        folded = session.get_session_options().get_session_config_entry("session.disable_quant_qdq") == "1"
    except RuntimeError:  # the entry was never set
        folded = False
    assert folded == (precision == "int8")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")  # float32 compute, as ours
    plain = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for seed in range(3):
        q, goal = example_inputs(load_robot("panda"), 1, seed)
        feed = {"q": q.numpy(), "goal": goal.numpy()}
        ours, theirs = session.run(OUTPUT_NAMES, feed), plain.run(OUTPUT_NAMES, feed)
        assert (ours[0] == theirs[0]).all() and abs(ours[1] - theirs[1]).max() <= 1e-6


def test_policy_graph_size_does_not_grow_with_action_tokens(tmp_path):
    torch.manual_seed(0)
    panda = load_robot("panda")
    model = WamForActionPrediction(WamConfig(**{**TINY, "chunk_length": 4})).eval()
    shapes = []
    for chunk in (2, 4):
        processor = WamProcessor(chunk_length=chunk)
        processor.add_embodiment(panda)
        proto = onnx.load(str(export_policy(model, processor, "panda", tmp_path / f"policy{chunk}.onnx")))
        (loop,) = [n for n in proto.graph.node if n.op_type == "Loop"]
        trips = next(i for i in proto.graph.initializer if i.name == loop.input[0])
        assert int(onnx.numpy_helper.to_array(trips)) == processor.schedule(panda)[0].numel() - 1
        shapes.append((len(proto.graph.node), len(loop.attribute[0].g.node)))
    assert shapes[0] == shapes[1]  # twice the action tokens, the same graph (only the trip count and tables differ)


def test_bundle_graphs_share_one_weights_file(tmp_path):
    from embodyhub.export.onnx import ONNX_DATA_NAME, PolicyGraph, _graphs, ort_session
    from embodyhub.export.runtime import OnnxPolicy
    from embodyhub.export.thor import build_bundle, verify_bundle

    model, processor = tiny()
    processor.add_embodiment(load_robot("ur5"))
    for emb in processor.embodiments.values():
        emb.control_hz = 1.0  # a generous budget: no warning
    folder = tmp_path / "bundle"
    manifest = build_bundle(model, processor, folder, QuantConfig("int4", group_size=16), check_trials=2, latency_repeats=1)
    graphs = sorted(folder.glob("*.onnx"))
    assert [p.name for p in graphs] == ["decode_step.onnx", "policy_panda.onnx", "policy_ur5.onnx"]
    assert [p.name for p in folder.glob("*.data")] == [ONNX_DATA_NAME] and ONNX_DATA_NAME in manifest["files"]
    used: dict[str, set[tuple[int, int]]] = {}
    for path in graphs:
        proto = onnx.load(str(path), load_external_data=False)
        used[path.name] = set()
        for init in (i for g in _graphs(proto.graph) for i in g.initializer):
            if init.data_location != onnx.TensorProto.EXTERNAL:
                assert len(init.raw_data) < 128  # only small constants stay in the graph files
                continue
            info = {e.key: e.value for e in init.external_data}
            assert info["location"] == ONNX_DATA_NAME
            used[path.name].add((int(info["offset"]), int(info["length"])))
    assert used["policy_panda.onnx"] & used["policy_ur5.onnx"] & used["decode_step.onnx"]  # the trunk's weights, shared
    ranges = sorted(set().union(*used.values()))
    data = (folder / ONNX_DATA_NAME).read_bytes()
    chunks = [data[offset : offset + length] for offset, length in ranges]
    assert sum(len(c) for c in chunks) == len(data) and len(set(chunks)) == len(chunks)  # each tensor stored once
    for robot in ("panda", "ur5"):  # every graph loads from the bundle folder and decodes the PyTorch tokens
        policy = OnnxPolicy(folder, robot)
        q, goal = example_inputs(policy.embodiment, 1, seed=3)
        with torch.no_grad():
            assert torch.equal(policy.run_graph(q, goal)[0], PolicyGraph(model, processor, robot)(q, goal)[0])
    assert [i.name for i in ort_session(folder / "decode_step.onnx").get_inputs()][:2] == ["token", "dim"]
    verify_bundle(folder)
    (folder / ONNX_DATA_NAME).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(EmbodyHubError, match="manifest hash"):
        verify_bundle(folder)


@pytest.mark.parametrize("precision", ["int8", "int4", "fp8"])
def test_a_plain_session_opened_as_the_bundle_readme_says_gives_the_pytorch_actions(precision, tmp_path):
    """The session the manifest's check ran is the one a user builds from the bundle's README with plain
    onnxruntime; onnxruntime's defaults are recorded next to it for comparison."""
    import re

    from embodyhub.export.onnx import OUTPUT_NAMES, PolicyGraph
    from embodyhub.export.thor import build_bundle

    if precision == "fp8" and not fp8_supported():
        pytest.skip("no float8 dtype in this torch build")
    model, processor = tiny(seed=3)
    processor.embodiments["panda"].control_hz = 1.0
    folder = tmp_path / "bundle"
    manifest = build_bundle(model, processor, folder, QuantConfig(precision, group_size=16), check_trials=2, latency_repeats=1, export_step=False)
    entry = manifest["embodiments"][0]
    assert entry["onnx_check"]["max_abs_canonical"] <= 1e-4 and "max_abs_canonical" in entry["default_session_check"]
    (snippet,) = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        exec(snippet, scope)  # the README's own lines, run as written
    finally:
        os.chdir(cwd)
    graph = PolicyGraph(model, processor, "panda").eval()
    for seed in range(4):
        q, goal = example_inputs(processor.resolve("panda"), 1, seed)
        with torch.no_grad():
            _, want = graph(q, goal)
        got = scope["session"].run(OUTPUT_NAMES, {"q": q.numpy(), "goal": goal.numpy()})[1]
        assert float(abs(torch.from_numpy(got) - want).max()) <= 1e-4


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_float_precisions_store_what_they_are_named(precision, tmp_path):
    from safetensors import safe_open

    model, processor = tiny()
    config = QuantConfig(precision, keep_float="float16" if precision == "float32" else "float32")  # the name wins
    assert config.keep_float == precision
    quantize_model(model, config)
    path = save_quantized(model, tmp_path, processor)
    with safe_open(str(path), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {f"torch.{precision}"}
    assert not any(isinstance(m, QuantizedLinear) for m in model.modules())


def test_bundle_manifest_cli_runtime_and_bench(tmp_path, capsys):
    from embodyhub.cli import main
    from embodyhub.export.runtime import OnnxPolicy
    from embodyhub.export.thor import verify_bundle

    model, processor = tiny()
    processor.embodiments["panda"].control_hz = 1e6  # a budget of 2 microseconds: must be reported as missed
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "bundle"
    with pytest.warns(UserWarning, match="budget"):
        assert main(["export", "--model", str(tmp_path / "model"), "--target", "thor", "--precision", "int8", "--out", str(out)]) == 0
    manifest = verify_bundle(out)
    assert manifest["precision"] == "int8" and manifest["target"] == "jetson-thor"
    entry = manifest["embodiments"][0]
    assert entry["robot"] == "panda" and entry["budget_ms"] == pytest.approx(1e3 * 2 / 1e6)
    assert not entry["within_budget"] and "warning" in entry
    assert entry["onnx_check"]["passed"] and entry["io"]["inputs"][0] == {"name": "q", "dtype": "float32", "shape": [1, 8]}
    assert entry["trtexec"].startswith("trtexec --onnx=policy_panda.onnx")
    assert {"model.quantized.safetensors", "policy_panda.onnx", "weights.onnx.data", "embodiments/panda/embodiment.json"} <= set(manifest["files"])
    assert manifest["quantization"]["int8_layers"] == [] and "action_head" in manifest["quantization"]["quantized_layers"]
    assert "trtexec" in (out / "README.md").read_text()
    step = manifest["decode_step"]
    assert step["max_abs_logits"] <= 1e-4 * max(1.0, step["max_abs_logit_value"]) and "decode_step.onnx" in manifest["files"]
    assert [i["name"] for i in step["io"]["inputs"]] == ["token", "dim", "step", "attention_mask", "past_keys", "past_values"]
    assert step["io"]["inputs"][4]["shape"][3] == "past"  # the cache length stays dynamic

    # the bundle's runtime gives the quantized PyTorch model's native commands
    policy = OnnxPolicy(out, "panda")
    quantized = load_quantized(out)
    q, goal = example_inputs(policy.embodiment, 1, seed=7)
    want = quantized.predict_action(**policy.processor({"state": q.double(), "goal": goal.double()}, "panda"))
    torch.testing.assert_close(policy(q, goal), want, rtol=0, atol=1e-9)

    capsys.readouterr()
    assert main(["bench", "--bundle", str(out), "--repeats", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["backend"].startswith("onnxruntime") and rows[0]["total_ms"] >= rows[0]["graph_ms"] > 0
    for timing in ("graph", "total"):  # a median with its spread, over at least two rounds of runs
        low, high = rows[0][f"{timing}_iqr_ms"]
        assert low <= rows[0][f"{timing}_ms"] <= high and rows[0][f"{timing}_runs"] >= 2 * (2 if timing == "graph" else 3)
    assert main(["bench", "--bundle", str(out), "--repeats", "2", "--max-seconds", "1"]) == 0
    header = capsys.readouterr().out.splitlines()[1].split()
    assert header[:5] == ["robot", "backend", "graph", "ms", "graph"] and "chunk" in header and "+decode" not in header

    (out / "policy_panda.onnx").write_bytes((out / "policy_panda.onnx").read_bytes() + b"\0")
    with pytest.raises(EmbodyHubError, match="manifest hash"):
        verify_bundle(out)


def _cuda_compiler() -> bool:
    """Triton with its CUDA backend's tools: kernels compile for a GPU without one."""
    from embodyhub.export.kernels import triton_module
    from embodyhub.export.kernels.compile_check import cuda_tools_available

    return triton_module() is not None and cuda_tools_available()


@pytest.mark.skipif(not _cuda_compiler(), reason="needs triton with its CUDA compiler tools")
def test_bench_compile_for_compiles_every_kernel_of_a_chunk_for_hopper_and_thor(tmp_path):
    """``bench --compile-for``: a bundle's GPU decode compiled for sm_90 and sm_110 on this CPU machine, every
    fused kernel of a step launched under programmatic dependent launch (the default), none spilling
    registers, and again with plain launches; Triton's driver restored afterwards. In a fresh process: the
    kernel tests may have built the kernels for Triton's interpreter in this one."""
    from embodyhub.cli import main

    model, processor = tiny()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(tmp_path / "model"), "--precision", "int4", "--out", str(bundle)]) == 0
    script = (
        "import contextlib, io, json, os, sys\n"
        "from triton.runtime.driver import driver\n"
        "from embodyhub.cli import main\n"
        "from embodyhub.export.kernels import triton_kernels as tk\n"
        "before = driver._active\n"
        "def compile_for(*targets):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        assert main(['bench', '--bundle', sys.argv[1], '--json'] + [a for t in targets for a in ('--compile-for', t)]) == 0\n"
        "    return json.loads(out.getvalue())\n"
        "default = compile_for('90', 'thor')\n"
        "tk.PDL = False\n"
        "plain = compile_for('90')\n"
        "assert driver._active is before and tk.HOST_GPU == {'multiprocessors': 8, 'capability': 0} and 'EMBODYHUB_KERNELS' not in os.environ\n"
        "print(json.dumps({'default': default, 'plain': plain}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EMBODYHUB_KERNELS")}
    env.update(TRITON_HOME=str(tmp_path), TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))  # compiled kernels stay in the test's folder
    result = subprocess.run([sys.executable, "-c", script, str(bundle)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout)
    targets = runs["default"]
    assert set(targets) == {"sm_90", "sm_110"}
    assert (targets["sm_110"][0]["gpu"], targets["sm_110"][0]["multiprocessors"]) == ("Jetson Thor", 20)
    # every kernel of the chunk compiles with programmatic dependent launch (the default) and, switched off, without
    (plain,) = runs["plain"]["sm_90"]
    assert all("PDL=False" in launch["constants"] and launch["stack"] == 0 for launch in plain["decode"] + plain["prefill"])
    assert all("PDL=True" in launch["constants"] for (robot,) in targets.values() for launch in robot["decode"] + robot["prefill"])
    fused = {"_int4_gemv_kernel", "_add_rmsnorm_kernel", "_rope_cache_kernel", "_decode_attention_kernel", "_silu_mul_kernel", "_step_inputs_kernel", "_greedy_advance_kernel"}
    for (robot,) in targets.values():
        assert robot["robot"] == "panda" and robot["steps"] == processor.schedule(processor.resolve("panda"))[0].numel() - 1
        decode = robot["decode"]
        assert fused <= {launch["kernel"] for launch in decode}
        assert all(launch["count"] % robot["steps"] == 0 for launch in decode)  # the same kernels every step
        assert "_int4_gemm_kernel" in {launch["kernel"] for launch in robot["prefill"]}  # the prefix: more rows than a GEMV takes
        for launch in decode + robot["prefill"]:
            assert launch["stack"] == 0 and 0 < launch["registers"] <= 255 and launch["programs_per_sm"] >= 1, launch


@pytest.mark.skipif(not _cuda_compiler(), reason="needs triton with its CUDA compiler tools")
def test_int4_gemv_converts_no_code_with_an_int_to_float_instruction(tmp_path):
    """The grouped int4 GEMV compiled for sm_90 and Thor dequantizes its codes with bit operations: int-to-float
    instructions (quarter rate up to sm_90; one per weight had bounded the kernel) remain only for its zero
    points, a few per hundred weights. And the installed Triton lays out its codes with no threads along the rows
    (``INT4_ROWS_LAST``): a thread holds all its rows, so each x value it converts serves every one. In a fresh
    process, as above."""
    script = (
        "import json, re, torch\n"
        "from embodyhub.export.kernels import triton_kernels as tk\n"
        "from embodyhub.export.kernels.compile_check import compiled_variants, dry_target, executed_opcodes\n"
        "from embodyhub.export.quantize import QuantizedLinear\n"
        "m = QuantizedLinear.from_linear(torch.nn.Linear(2048, 2048, bias=False), 'int4', 128).to(torch.bfloat16)\n"
        "x = torch.randn(1, 2048, dtype=torch.bfloat16)\n"
        "per_weight = {}\n"
        "for arch in (90, 110):\n"
        "    with dry_target(arch) as launches:\n"
        "        tk.int4_linear(x, m.qweight, m.scale, m.zero, m.group_size)\n"
        "        (kernel,) = compiled_variants(tk._int4_gemv_grouped_kernel)\n"
        "    (launch,) = launches\n"
        "    assert 'BLOCK_G=8' in launch.constants, launch  # the 1024 packed bytes of a row in one pass\n"
        "    rows = 2 if tk.INT4_ROWS_LAST else 0  # the codes load is [BLOCK_G, GROUP, BLOCK_N] or [BLOCK_N, BLOCK_G, GROUP]\n"
        "    for layout in set(re.findall(r'tt\\.load .*: tensor<\\d+x\\d+x\\d+x!tt\\.ptr<i8>, #(\\w+)>', kernel.asm['ttgir'])):  # each pass's\n"
        "        threads = re.search('#' + layout + r' = .*threadsPerWarp = \\[(\\d+), (\\d+), (\\d+)\\]', kernel.asm['ttgir'])\n"
        "        assert int(threads.group(1 + rows)) == 1, threads.group(0)\n"
        "    opcodes = executed_opcodes(kernel.asm['cubin'], 1)\n"
        "    weights = 2048 * 2048 / (launch.grid[0] * launch.num_warps * 32)\n"
        "    per_weight[arch] = [sum(opcodes.values()) / weights, sum(n for op, n in opcodes.items() if op.startswith('I2F')) / weights]\n"
        "print(json.dumps(per_weight))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EMBODYHUB_KERNELS")}
    env.update(TRITON_HOME=str(tmp_path), TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    for arch, (instructions, conversions) in json.loads(result.stdout).items():
        assert 2 < instructions < 20 and conversions < 0.1, (arch, instructions, conversions)


def test_export_merges_a_lora_adapter(tmp_path):
    from embodyhub.export.thor import load_model
    from embodyhub.training.lora import attach_adapter, lora_config, save_adapter

    model, processor = tiny()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    ur5 = load_robot("ur5")
    peft = attach_adapter(model, ur5, lora_config(r=4))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    folder = save_adapter(peft, ur5, tmp_path / "adapter")
    inputs = prefix(processor, ur5)
    want = peft(**inputs).logits
    merged, merged_processor, robot = load_model(tmp_path / "model", folder)
    assert robot.name == "ur5" and "ur5" in merged_processor.embodiments
    assert isinstance(merged, WamForActionPrediction)
    torch.testing.assert_close(merged(**inputs).logits, want, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_fused_decoder_layers_decode_like_the_model():
    from embodyhub.export.fused import FusedDecoderLayer, FusedRMSNorm, fuse_decoder

    model, processor = tiny()
    quantize_model(model, QuantConfig("int8"))
    emb = processor.resolve("panda")
    dims, steps, inputs = decode_inputs(processor, emb, batch=3)
    want = model.sample_action_tokens(dims, steps, imagine=True, **inputs)
    fuse_decoder(model)
    assert all(isinstance(layer, FusedDecoderLayer) for layer in model.model.layers) and isinstance(model.model.norm, FusedRMSNorm)
    got = model.sample_action_tokens(dims, steps, imagine=True, **inputs)
    assert torch.equal(got["tokens"], want["tokens"])
    torch.testing.assert_close(got["world"], want["world"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision,fused", [("float32", False), ("int4", True)])
def test_graphed_decoder_decodes_the_model_tokens(precision, fused):
    from embodyhub.export.fused import fuse_decoder
    from embodyhub.export.runtime import GraphedDecoder

    model, processor = tiny(seed=2)
    processor.add_embodiment(load_robot("ur5"))
    quantize_model(model, QuantConfig(precision, group_size=16))
    if fused:
        fuse_decoder(model)
    for robot, batch in (("panda", 1), ("ur5", 3), ("panda", 2)):  # new shapes reallocate the static buffers
        emb = processor.resolve(robot)
        decoder = GraphedDecoder(model, processor, emb)
        for seed in (0, 1):
            q, goal = example_inputs(emb, batch, seed)
            inputs = dict(processor({"state": q, "goal": goal}, emb))
            inputs.pop("action_decoder")
            with torch.no_grad():
                want = model.sample_action_tokens(inputs.pop("action_dims"), inputs.pop("action_steps"), **inputs)["tokens"]
                native = model.predict_action(**processor({"state": q, "goal": goal}, emb))
            assert torch.equal(decoder(q, goal), want)
            assert torch.equal(decoder.actions(q, goal), native)  # the same native commands as predict_action


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_decoder_replays_the_eager_steps_on_cuda():
    from embodyhub.export.fused import fuse_decoder
    from embodyhub.export.runtime import GraphedDecoder

    model, processor = tiny(seed=3)
    quantize_model(model, QuantConfig("int4", group_size=16))
    model = fuse_decoder(model).cuda()
    emb = processor.resolve("panda")
    graphed, eager = GraphedDecoder(model, processor, emb), GraphedDecoder(model, processor, emb, graph=False)
    for seed in range(3):
        q, goal = example_inputs(emb, 2, seed)
        assert torch.equal(graphed(q, goal), eager(q, goal))
    assert set(graphed._graphs) == {"prefill", "step"}
    graphed.load(q, goal)
    graphed.prefill()
    assert torch.equal(graphed.decode(), graphed.decode())  # each decode starts again from the prefill


@pytest.mark.parametrize("precision", ["float32", "int4"])
def test_graphed_decoder_parts_are_capturable(precision):
    """What a CUDA graph capture forbids, checked on CPU: the prefill and the step as the GPU runs them (fused
    layers, no dequantized copy) call no op that reads a value back to the host or creates a tensor from
    host data, and allocate nothing whose address a replay could not reuse (the caches are preallocated)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from embodyhub.export.fused import fuse_decoder
    from embodyhub.export.runtime import GraphedDecoder

    forbidden = ("aten._local_scalar_dense", "aten.nonzero", "aten.lift_fresh", "aten.masked_select", "aten.item")

    class Ops(TorchDispatchMode):
        seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(str(func))
            return func(*args, **(kwargs or {}))

    model, processor = tiny(seed=4)
    quantize_model(model, QuantConfig(precision, group_size=16))
    decoder = GraphedDecoder(fuse_decoder(model), processor, "panda", dequantize=False)  # as on CUDA
    with pytest.raises(EmbodyHubError, match="load"):
        decoder.prefill()
    with pytest.raises(EmbodyHubError, match="CUDA device"):
        GraphedDecoder(model, processor, "panda", graph=True)
    q, goal = example_inputs(processor.resolve("panda"), 2)
    decoder.load(q, goal)
    with torch.no_grad(), Ops() as ops:
        decoder._prefill()
        decoder._advance()
    assert not [op for op in ops.seen if op.startswith(forbidden)]
    assert "aten.index_copy_.default" in ops.seen  # the step wrote its slot in place


@pytest.mark.parametrize("precision", ["float32", "int4"])
def test_row_stack_computes_the_layers_at_once_without_a_second_copy(precision):
    from embodyhub.export.fused import RowStack

    torch.manual_seed(0)
    layers = nn.ModuleList([nn.Linear(24, n, bias=False) for n in (8, 8, 16)])
    if precision != "float32":
        quantize_model(layers, QuantConfig(precision, group_size=8))
    x = torch.randn(3, 24)
    want = torch.cat([m(x) for m in layers], -1)
    stack = RowStack(list(layers))
    assert stack.stacked is not None and stack.parts is None
    torch.testing.assert_close(stack(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([m(x) for m in layers], -1), want, rtol=0, atol=0)  # the originals still compute
    stored = {t.untyped_storage().data_ptr() for t in layers.state_dict().values()} | {t.untyped_storage().data_ptr() for t in stack.state_dict().values()}
    assert len(stored) == (1 if precision == "float32" else 3)  # one storage per stacked tensor (qweight, scale, zero)
    mixed = RowStack([nn.Linear(24, 4), nn.Linear(24, 4, bias=False)])  # different kinds run one by one
    assert mixed.stacked is None and mixed(x).shape == (3, 8)


@torch.no_grad()
def test_a_fused_model_keeps_one_copy_of_its_stacked_weights_after_to():
    from embodyhub.export.fused import fuse_decoder

    model, processor = tiny(seed=5)
    quantize_model(model, QuantConfig("int4", group_size=16))
    emb = processor.resolve("panda")
    dims, steps, inputs = decode_inputs(processor, emb, batch=2)
    fused = fuse_decoder(model).to(torch.float64)
    layer = fused.model.layers[0]
    stacked, q_proj = layer.qkv.stacked, layer.layer.self_attn.q_proj
    assert stacked.scale.dtype == torch.float64 and q_proj.scale.dtype == torch.float64
    for name in ("qweight", "scale", "zero"):  # the original's rows are a view of the stacked tensor, not a copy
        assert getattr(q_proj, name).untyped_storage().data_ptr() == getattr(stacked, name).untyped_storage().data_ptr()
    # the prefill (the originals) and the decode steps (the stacked rows) agree with an unfused float64 copy
    reference, _ = tiny(seed=5)
    quantize_model(reference, QuantConfig("int4", group_size=16))
    reference.to(torch.float64)
    want = reference.sample_action_tokens(dims, steps, **inputs)["tokens"]
    assert torch.equal(fused.sample_action_tokens(dims, steps, **inputs)["tokens"], want)


# ---- hardening: the deployed runtime trusts nothing (issue 24) ---------------------------------------


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """A tiny int8 panda bundle (with the decode step) and the quantized model it was built from."""
    from embodyhub.export.thor import build_bundle

    model, processor = tiny()
    processor.embodiments["panda"].control_hz = 1.0  # a generous budget: no warning
    folder = tmp_path_factory.mktemp("hardening") / "bundle"
    build_bundle(model, processor, folder, QuantConfig("int8"), check_trials=1, latency_repeats=1)
    return folder, model, processor


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "bundle")


def _rewrite_manifest(folder, edit):
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _rehash(folder, rel):
    from embodyhub.export.thor import sha256

    _rewrite_manifest(folder, lambda m: m["files"][rel].update(sha256=sha256(folder / rel), bytes=(folder / rel).stat().st_size))


HOSTILE = [float("nan"), float("inf"), -float("inf"), 1e39, -1e39, 3.4e38]  # the last: finite in float32, 10x of it is not


def _hostile_inputs(emb, n=60, seed=0):
    """In-limit states and reachable goals with one entry replaced by NaN, inf or a value beyond float32 (in
    q, in the goal's position or rotation), plus clean ones and mildly out-of-range ones."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        q, goal = example_inputs(emb, 1, seed=1000 + i)
        q, goal = q.double(), goal.double()
        kind = i % 4
        value = HOSTILE[int(torch.randint(len(HOSTILE), (1,), generator=gen))]
        if kind == 0:
            q[0, int(torch.randint(emb.dof, (1,), generator=gen))] = value
        elif kind == 1:
            goal[0, 0, int(torch.randint(3, (1,), generator=gen)), int(torch.randint(4, (1,), generator=gen))] = value
        elif kind == 2:
            goal[0, 0, :3, 3] += 10.0 * torch.randn(3, generator=gen, dtype=torch.float64)  # unreachable, finite
        yield q, goal


def test_onnx_policy_and_pytorch_refuse_or_stay_in_limits_on_hostile_inputs(int8_bundle):
    """Fuzz both paths: each input is refused with InvalidActionError by both, or both command in-limit
    positions that move at most velocity x dt per step from the in-limit state (a NaN goal used to make the
    graph emit token 0 everywhere: every joint at its velocity limit, no error)."""
    from embodyhub.errors import InvalidActionError
    from embodyhub.export.runtime import OnnxPolicy

    folder, _, _ = int8_bundle
    policy, quantized = OnnxPolicy(folder, "panda"), load_quantized(folder)
    emb = policy.embodiment
    refused = accepted = 0
    for q, goal in _hostile_inputs(emb):
        outcomes = []
        for run in (lambda: policy(q, goal), lambda: quantized.predict_action(**policy.processor({"state": q, "goal": goal}, "panda"))):
            try:
                outcomes.append(run())
            except InvalidActionError:
                outcomes.append(None)
        assert (outcomes[0] is None) == (outcomes[1] is None), f"one path refused q={q}, goal={goal} and the other did not"
        if outcomes[0] is None:
            refused += 1
            continue
        accepted += 1
        in_limits = bool(((q >= emb.lower) & (q <= emb.upper)).all())
        for chunk in outcomes:
            assert torch.isfinite(chunk).all()
            assert ((chunk >= emb.lower - 1e-12) & (chunk <= emb.upper + 1e-12)).all()
            if in_limits:
                steps = torch.diff(torch.cat([q[:, None], chunk], 1), dim=1).abs()
                assert (steps <= emb.velocity_limit * emb.dt + 1e-9).all()
    assert refused >= 25 and accepted >= 25


@pytest.mark.parametrize(
    "where,value,match",
    [("q", float("nan"), "NaN"), ("goal", float("nan"), "NaN"), ("goal", float("inf"), "infinite"),
     ("goal", 1e39, "float32"), ("q", 1e39, "float32"), ("goal_position", 3.4e38, "float32")],
)
def test_onnx_policy_refuses_what_the_pytorch_path_refuses(int8_bundle, where, value, match):
    """A goal of 1e39 is finite in float64 but inf in the float32 model (greedy: full-speed motion; sampling:
    a raw RuntimeError); 3.4e38 fits float32 but the goal-minus-end-effector features overflow."""
    from embodyhub.errors import InvalidActionError
    from embodyhub.export.runtime import OnnxPolicy

    folder, model, processor = int8_bundle
    policy = OnnxPolicy(folder, "panda")
    q, goal = example_inputs(policy.embodiment, 1, seed=5)
    q, goal = q.double(), goal.double()
    if where == "q":
        q[0, 2] = value
    elif where == "goal":
        goal[0, 0, 1, 1] = value
    else:
        goal[0, 0, 0, 3] = value
    with pytest.raises(InvalidActionError, match=match):
        policy(q, goal)
    with pytest.raises(InvalidActionError, match=match):
        policy.run_graph(q, goal)
    with pytest.raises(InvalidActionError, match=match):
        model.predict_action(**processor({"state": q, "goal": goal}, "panda"), do_sample=True)


def test_onnx_policy_verifies_the_bundle_when_it_opens_it(int8_bundle, tmp_path):
    """Flipped bytes in the graph, or a widened joint limit in the bundle's URDF with the card's hash
    updated, used to load and drive the robot; both are refused on open (verify=False: development only)."""
    from embodyhub.embodiment.spec import _sha256
    from embodyhub.errors import EmbodimentMismatchError
    from embodyhub.export.runtime import OnnxPolicy, runtime_model

    folder = _copy(int8_bundle[0], tmp_path)
    graph = folder / "policy_panda.onnx"
    original = graph.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 1
    graph.write_bytes(bytes(flipped))
    with pytest.raises(EmbodyHubError, match="policy_panda.onnx does not match its manifest hash"):
        OnnxPolicy(folder, "panda")
    graph.write_bytes(original)

    urdf, card = folder / "embodiments/panda/robot.urdf", folder / "embodiments/panda/embodiment.json"
    text = urdf.read_text()
    assert 'upper="2.8973"' in text
    wide = text.replace('upper="2.8973"', 'upper="4.05"', 1)
    urdf.write_text(wide)
    card.write_text(card.read_text().replace(_sha256(text), _sha256(wide)))
    with pytest.raises(EmbodyHubError, match="embodiments/panda/.* does not match its manifest hash"):
        OnnxPolicy(folder, "panda")
    assert float(OnnxPolicy(folder, "panda", verify=False).embodiment.upper[0]) == pytest.approx(4.05)  # what verify stops
    for rel in ("embodiments/panda/robot.urdf", "embodiments/panda/embodiment.json"):  # a manifest rewritten too
        _rehash(folder, rel)
    with pytest.raises(EmbodimentMismatchError, match="urdf_sha256"):
        OnnxPolicy(folder, "panda")

    weights = folder / "model.quantized.safetensors"  # the GPU runtime's model is verified the same way
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(EmbodyHubError, match="model.quantized.safetensors does not match its manifest hash"):
        runtime_model(folder)


def test_verify_bundle_refuses_paths_outside_unlisted_files_and_outside_graphs(int8_bundle, tmp_path):
    from embodyhub.export.thor import sha256, verify_bundle

    folder = _copy(int8_bundle[0], tmp_path)
    manifest = verify_bundle(folder)
    secret = tmp_path / "hostname"
    secret.write_text("robot-7\n")
    entry = {"sha256": sha256(secret), "bytes": secret.stat().st_size}
    for rel in ("../hostname", "../../etc/hostname", str(secret), "embodiments/../../hostname"):
        _rewrite_manifest(folder, lambda m: m["files"].update({rel: entry}))
        with pytest.raises(EmbodyHubError, match="inside the bundle"):
            verify_bundle(folder)
        (folder / "manifest.json").write_text(json.dumps(manifest))

    (folder / "link.txt").symlink_to(secret)  # a listed symlink out of the bundle
    _rewrite_manifest(folder, lambda m: m["files"].update({"link.txt": entry}))
    with pytest.raises(EmbodyHubError, match="outside the bundle"):
        verify_bundle(folder)
    (folder / "link.txt").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))

    # a tampered file simply dropped from the manifest, or a file the manifest never listed
    _rewrite_manifest(folder, lambda m: m["files"].pop("embodiments/panda/robot.urdf"))
    with pytest.raises(EmbodyHubError, match="does not list: embodiments/panda/robot.urdf"):
        verify_bundle(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "extra.onnx").write_bytes(b"x")
    with pytest.raises(EmbodyHubError, match="does not list: extra.onnx"):
        verify_bundle(folder)
    (folder / "extra.onnx").unlink()

    # the manifest's graph pointing outside the bundle
    outside = tmp_path / "evil.onnx"
    outside.write_bytes((folder / "policy_panda.onnx").read_bytes())
    _rewrite_manifest(folder, lambda m: m["embodiments"][0].update(onnx="../evil.onnx"))
    with pytest.raises(EmbodyHubError, match="not one of the bundle's listed files"):
        verify_bundle(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))

    # a listed graph whose external data is read from outside the bundle (hash updated to match)
    proto = onnx.load(str(folder / "decode_step.onnx"), load_external_data=False)
    for init in proto.graph.initializer:
        for e in init.external_data:
            if e.key == "location":
                e.value = "../weights.onnx.data"
    onnx.save(proto, str(folder / "decode_step.onnx"))
    _rehash(folder, "decode_step.onnx")
    with pytest.raises(EmbodyHubError, match="reads external data '../weights.onnx.data'"):
        verify_bundle(folder)


def test_batched_bundle_builds_and_runs_each_row(tmp_path):
    """batch_size > 1 crashed in check_decode_step with a raw onnxruntime INVALID_ARGUMENT (and left a folder
    without manifest.json); now the bundle builds, verifies, and each row decodes the PyTorch commands."""
    from embodyhub.export.runtime import OnnxPolicy
    from embodyhub.export.thor import build_bundle, verify_bundle

    model, processor = tiny()
    processor.embodiments["panda"].control_hz = 1.0
    folder = tmp_path / "b2"
    with pytest.raises(EmbodyHubError, match="batch_size must be at least 1"):
        build_bundle(model, processor, folder, QuantConfig("int8"), batch_size=0)
    manifest = build_bundle(model, processor, folder, QuantConfig("int8"), batch_size=2, check_trials=1, latency_repeats=1)
    assert verify_bundle(folder) == manifest and manifest["decode_step"]["io"]["inputs"][0]["shape"][0] == 2
    policy = OnnxPolicy(folder, "panda")
    q, goal = example_inputs(policy.embodiment, 2, seed=9)
    want = model.predict_action(**processor({"state": q.double(), "goal": goal.double()}, "panda"))
    torch.testing.assert_close(policy(q, goal), want, rtol=0, atol=1e-6)
