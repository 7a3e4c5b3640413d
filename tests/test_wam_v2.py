"""WAM v2 inputs and world head: object keypoints (a set), task words, an optional goal, keypoint flow."""

from __future__ import annotations

import json

import pytest
import torch

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.errors import ConfigError, InvalidActionError
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TASKS = ["lift the cube", "stack the red cube on the green cube", "pick up the can and place it in the bin"]
K, H = 8, 4


def make(seed: int = 0, keypoints_per_object: int = 1, **overrides):
    torch.manual_seed(seed)
    processor = WamProcessor(chunk_length=H, max_keypoints=K, keypoints_per_object=keypoints_per_object,
                             task_vocab=WamProcessor.task_words(TASKS), max_task_tokens=12)
    processor.add_embodiment(load_robot("panda"))
    config = WamConfig(chunk_length=H, max_keypoints=K, keypoints_per_object=keypoints_per_object,
                       task_vocab_size=processor.task_vocab_size, max_task_tokens=12, **{**TINY, **overrides})
    return WamForActionPrediction(config).eval(), processor


@pytest.fixture(scope="module")
def v2():
    return make()


def observation(batch=3, points=6, seed=0, task="stack the red cube on the green cube"):
    emb = load_robot("panda")
    gen = torch.Generator().manual_seed(seed)
    q = emb.sample(batch, gen)
    kp = torch.rand(batch, points, 3, generator=gen) * 0.6 - 0.3
    return {"state": q, "environment_state": kp.reshape(batch, -1), "task": task}


def inputs(batch):
    batch = dict(batch)
    batch.pop("action_decoder")
    return batch.pop("action_dims"), batch.pop("action_steps"), batch


def first_logits(model, batch):
    dims, steps, prefix = inputs(batch)
    bos = torch.full((dims.shape[0], 1), model.config.bos_token_id)
    with torch.no_grad():
        return model(bos, dims[:, :1], steps[:, :1], **prefix).logits


def test_processor_encodes_keypoints_task_and_no_goal(v2):
    _, processor = v2
    obs = observation(points=5)
    batch = processor(obs, "panda")
    assert batch["keypoints"].shape == (3, K, 3 + 3 * processor.max_arms)
    assert batch["keypoint_mask"].sum(-1).tolist() == [5, 5, 5]
    kp = obs["environment_state"].reshape(3, 5, 3)
    assert torch.allclose(batch["keypoints"][:, :5, :3], kp.float())
    ee = processor.adapter(processor.resolve("panda")).to_canonical(obs["state"])[0][:, :3]
    assert torch.allclose(batch["keypoints"][:, :5, 3:6], ((kp - ee[:, None]) * 10).float(), atol=1e-6)  # relative to the gripper
    assert not batch["keypoints"][:, :5, 6:].any()  # panda has no second arm
    same = processor({**obs, "environment_state": kp, "task": [obs["task"]] * 3}, "panda")  # [B, K, 3] and a list of tasks
    assert torch.equal(same["keypoints"], batch["keypoints"]) and torch.equal(same["task_ids"], batch["task_ids"])
    assert batch["task_mask"].sum(-1).tolist() == [8, 8, 8] and not batch["goal_mask"].any()
    lerobot = processor({"observation.state": obs["state"], "observation.environment_state": obs["environment_state"]}, "panda")
    assert torch.equal(lerobot["keypoints"], batch["keypoints"]) and not lerobot["task_mask"].any()


def test_task_tokenizer_unknown_words_punctuation_and_truncation(v2):
    _, processor = v2
    ids, mask = processor.encode_task(["Lift the CUBE!", "open the purple door, please"], 2)
    vocab = {w: i + 2 for i, w in enumerate(processor.task_vocab)}
    assert ids[0, :4].tolist() == [vocab["lift"], vocab["the"], vocab["cube"], 1]  # "!" is a word of its own, unknown
    assert ids[1, :6].tolist() == [1, vocab["the"], 1, 1, 1, 1] and mask.sum(-1).tolist() == [4, 6]
    long_ids, long_mask = processor.encode_task("the " * 40, 1)
    assert long_mask.all() and long_ids.shape == (1, 12)
    with pytest.raises(InvalidActionError, match="list of 2 strings"):
        processor.encode_task(["lift the cube"], 2)


def test_task_vocabulary_round_trips_through_save_pretrained(v2, tmp_path):
    from transformers import AutoProcessor

    model, processor = v2
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["task_vocab"] == processor.task_vocab and saved["max_keypoints"] == K
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.task_vocab == processor.task_vocab and loaded.task_vocab_size == model.config.task_vocab_size
    text = ["stack the red cube on the blue cube", "lift it"]
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode_task(text, 2), processor.encode_task(text, 2)))
    again = WamForActionPrediction.from_pretrained(tmp_path).eval()
    obs = observation(batch=1)
    assert torch.equal(again.predict_action(**loaded(obs, "panda")), model.predict_action(**processor(obs, "panda")))


def test_keypoint_order_does_not_change_the_prediction(v2):
    model, processor = v2
    obs = observation(points=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = {**obs, "environment_state": obs["environment_state"].reshape(3, 6, 3)[:, perm].reshape(3, -1)}
    a, b = processor(obs, "panda"), processor(shuffled, "panda")
    assert torch.allclose(first_logits(model, a), first_logits(model, b), atol=1e-5)
    chunk_a, world_a = model.predict_action(**a, imagine=True)
    chunk_b, world_b = model.predict_action(**b, imagine=True)
    assert torch.equal(chunk_a, chunk_b)
    assert torch.allclose(world_a[:, :, perm], world_b[:, :, :6], atol=1e-6)  # the flow follows the points
    assert torch.allclose(world_a[:, :, K:], world_b[:, :, K:], atol=1e-6)


def test_objects_keep_their_shape_and_stay_a_set(tmp_path):
    """With 4 points per object every point reads its object's shape (a 2 cm and a 2.5 cm cube differ), the
    objects stay an unordered set, and the setting round-trips with the processor."""
    from transformers import AutoProcessor

    torch.manual_seed(0)
    processor = WamProcessor(chunk_length=H, max_keypoints=K, keypoints_per_object=4)
    processor.add_embodiment(load_robot("panda"))
    model = WamForActionPrediction(WamConfig(chunk_length=H, max_keypoints=K, keypoints_per_object=4, **TINY)).eval()

    def cube(centre, half):
        return [centre] + [[c + half * (i == k) for i, c in enumerate(centre)] for k in range(3)]

    small, large = cube([0.5, 0.1, -0.08], 0.02), cube([0.5, -0.1, -0.08], 0.025)
    q = load_robot("panda").sample(1, torch.Generator().manual_seed(0))
    a = processor({"state": q, "environment_state": torch.tensor([small + large])}, "panda")
    b = processor({"state": q, "environment_state": torch.tensor([large + small])}, "panda")
    width = 3 * (1 + processor.max_arms + 3)
    assert a["keypoints"].shape == (1, K, width)
    shape = a["keypoints"][0, :, -9:]
    assert torch.allclose(shape[:4], torch.eye(3).flatten().expand(4, -1) * 2, atol=1e-5)  # 2 cm on each axis
    assert torch.allclose(shape[4:], torch.eye(3).flatten().expand(4, -1) * 2.5, atol=1e-5)
    reference = first_logits(model, a)
    order = (first_logits(model, b) - reference).abs().max()
    swapped = processor({"state": q, "environment_state": torch.tensor([cube(small[0], 0.025) + cube(large[0], 0.02)])}, "panda")
    sizes = (first_logits(model, swapped) - reference).abs().max()
    assert order < 1e-6 and sizes > 100 * order  # object order changes nothing; swapping the sizes does
    with pytest.raises(InvalidActionError, match="4 per object"):
        processor({"state": q, "environment_state": torch.zeros(1, 6 * 3)}, "panda")
    with pytest.raises(ConfigError, match="keypoints_per_object"):
        WamConfig(max_keypoints=K, keypoints_per_object=3)
    processor.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).keypoints_per_object == 4


def test_absent_inputs_are_masked_not_read(v2):
    model, processor = v2
    batch = processor({**observation(points=3), "task": "lift the cube"}, "panda")
    reference = first_logits(model, batch)
    changed = dict(batch)
    changed["keypoints"] = batch["keypoints"].clone()
    changed["keypoints"][:, 3:] = torch.randn_like(changed["keypoints"][:, 3:])  # padding keypoints
    changed["task_ids"] = torch.where(batch["task_mask"], batch["task_ids"], 5)  # padding words
    changed["goal"] = torch.randn_like(batch["goal"])  # no goal: goal_mask is all False
    assert torch.allclose(first_logits(model, changed), reference, atol=1e-6)
    assert not torch.allclose(first_logits(model, processor({**observation(points=3), "task": "stack the red cube"}, "panda")), reference)
    # decoding with the cache keeps the masked tokens out: cached, uncached and generate() agree
    dims, steps, prefix = inputs(changed)
    cached = model.sample_action_tokens(dims, steps, **prefix)["tokens"]
    assert torch.equal(cached, model.sample_action_tokens(dims, steps, use_cache=False, **prefix)["tokens"])
    assert torch.equal(cached, model.sample_action_tokens(*inputs(batch)[:2], **inputs(batch)[2])["tokens"])
    bos = torch.full((3, 1), model.config.bos_token_id)
    out = model.generate(input_ids=bos, action_dims=dims, action_steps=steps, max_new_tokens=dims.shape[1], do_sample=False,
                         suppress_tokens=[model.config.bos_token_id], pad_token_id=0, **prefix)
    assert torch.equal(out[:, 1:], cached)


def test_invalid_keypoints_are_refused(v2):
    _, processor = v2
    obs = observation(points=2)
    bad = obs["environment_state"].clone()
    bad[0, 1] = float("nan")
    with pytest.raises(InvalidActionError, match="NaN"):
        processor({**obs, "environment_state": bad}, "panda")
    with pytest.raises(InvalidActionError, match="K <= 8"):
        processor({**obs, "environment_state": torch.zeros(3, 9 * 3)}, "panda")
    with pytest.raises(InvalidActionError, match="environment_state has shape"):
        processor({**obs, "environment_state": torch.zeros(3, 7)}, "panda")
    with pytest.raises(ConfigError, match="max_keypoints=-1"):
        WamConfig(max_keypoints=-1)
    model, _ = v2
    batch = dict(processor(obs, "panda"))
    batch["task_ids"] = batch["task_ids"] + model.config.task_vocab_size  # another processor's vocabulary
    with pytest.raises(InvalidActionError, match="task vocabulary must be the one the model was built with"):
        model.predict_action(**batch)


def test_flow_targets_imagine_and_a_loss_that_falls(v2):
    model, processor = v2
    model = WamForActionPrediction(model.config)
    emb = processor.resolve("panda")
    obs = observation(batch=8, points=4)
    kp = obs["environment_state"].reshape(8, 4, 3)
    steps = torch.arange(1, H + 1, dtype=torch.float64)[None, :, None, None]
    future_kp = kp[:, None] + 0.01 * steps  # every point drifts 1 cm per step along each axis
    actions = obs["state"][:, None].expand(8, H, emb.dof).clone()
    actions[..., 0] += 0.05 * steps[..., 0, 0]
    batch = processor({**obs, "future_environment_state": future_kp.reshape(8, H, -1), "future_state": actions}, emb, actions=actions)
    assert batch["world_targets"].shape == (8, H, K + 2, 3) and batch["world_mask"].shape == (8, H, K + 2)
    assert torch.allclose(batch["world_targets"][:, :, :4], torch.full((8, H, 4, 3), 0.01) * steps.float(), atol=1e-6)
    assert batch["world_mask"][:, :, :4].all() and not batch["world_mask"][:, :, 4:K].any()
    assert batch["world_mask"][:, :, K].all() and not batch["world_mask"][:, :, K + 1].any()
    ee_now = processor.adapter(emb).to_canonical(obs["state"])[0][:, :3]
    ee_next = processor.adapter(emb).to_canonical(actions)[0][..., :3]
    assert torch.allclose(batch["world_targets"][:, :, K], (ee_next - ee_now[:, None]).float(), atol=1e-6)
    no_future = processor(obs, emb, actions=actions)  # without future keypoints only the end effectors are trained
    assert not no_future["world_mask"][:, :, :K].any() and no_future["world_mask"][:, :, K].all()
    batch = dict(batch)
    batch.pop("action_decoder")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        out = model(**batch)
        losses.append((out.loss.item(), out.world_loss.item()))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1][0] < 0.5 * losses[0][0] and losses[-1][1] < 0.3 * losses[0][1]
    model.eval()
    chunk, world = model.predict_action(**processor(obs, emb), imagine=True)
    assert chunk.shape == (8, H, emb.dof) and world.shape == (8, H, K + 2, 3)
    nothing_moves = batch["world_targets"][:, :, :4].abs().mean()  # the baseline that predicts no motion
    assert (world[:, :, :4] - batch["world_targets"][:, :, :4]).abs().mean() < 0.5 * nothing_moves


TINY_BASE_TOKENS = {  # greedy tokens of the shipped base before v2 (seed-0 observation): v1 checkpoints compute as before
    "panda": [152, 114, 109, 138, 154, 130, 145, 146, 126, 220, 172, 103, 93, 147, 174, 132, 159, 161, 125, 227, 189, 95, 80, 154, 191, 134, 170, 172, 124, 232, 205, 88, 71, 160, 206, 135, 178, 182, 123, 236],
    "baxter": [148, 147, 126, 128, 103, 126, 148, 112, 148, 164, 159, 125, 128, 33, 95, 118, 99, 159, 166, 173, 33, 126, 131, 82, 109, 100, 87, 175, 180, 177, 125, 128, 136, 98, 98, 84, 75, 184, 184, 193, 125, 139, 91, 93, 80, 189, 54, 54, 207, 193, 123, 145, 81, 70, 66, 213, 220, 219, 219, 221, 143, 73, 71, 57, 40, 222, 221, 221, 223, 227, 147, 51, 50, 33, 122, 128, 215, 223, 225, 127],
}


@pytest.mark.parametrize("name", ["panda", "baxter"])
def test_shipped_tiny_base_loads_and_decodes_as_before_v2(name):
    from transformers import AutoModel, AutoProcessor

    from embodyhub.pretrained import tiny_base

    model = AutoModel.from_pretrained(tiny_base()).eval()
    processor = AutoProcessor.from_pretrained(tiny_base())
    assert model.config.max_keypoints == 0 and model.config.task_vocab_size == 0 and processor.max_keypoints == 0
    emb = load_robot(name)
    gen = torch.Generator().manual_seed(0)
    q = emb.sample(1, gen)
    goal = torch.stack([c.forward_kinematics(emb.sample(1, gen)[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
    dims, steps, prefix = inputs(processor({"state": q, "goal": goal, "environment_state": torch.zeros(1, 12), "task": "x"}, emb))
    assert "keypoints" not in prefix and "task_ids" not in prefix  # a v1 processor leaves the v2 inputs out
    assert model.sample_action_tokens(dims, steps, **prefix)["tokens"][0].tolist() == TINY_BASE_TOKENS[name]


def test_adapt_needs_no_goal(v2):
    from embodyhub.data import needed_features

    model, _ = v2
    assert needed_features(model.config.to_dict()) == ("observation.state", "action")
    assert "observation.goal" in needed_features(WamConfig(**TINY).to_dict())


# ---- export: the v2 inputs in the ONNX policy graph --------------------------------------------------


@pytest.mark.parametrize("precision", ["float32", "int8", "int4", "fp8"])
def test_onnx_policy_graph_reads_the_v2_inputs_and_decodes_the_pytorch_tokens(precision, tmp_path):
    """The graph takes the raw keypoints (4 per object), their mask, the task ids and an optional goal; under the
    bundle's session options its canonical chunk is within 1e-4 of PyTorch's, its tokens are PyTorch's, and the
    masks mean per sample what the processor's mean."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from embodyhub.export import QuantConfig, quantize_model
    from embodyhub.export.onnx import OUTPUT_NAMES, PolicyGraph, check_against_torch, example_feed, export_policy, ort_session
    from embodyhub.export.quantize import fp8_supported

    if precision == "fp8" and not fp8_supported():
        pytest.skip("no float8 dtype in this torch build")
    model, processor = make(seed=1, keypoints_per_object=4)
    quantize_model(model, QuantConfig(precision, group_size=16))
    path = export_policy(model, processor, "panda", tmp_path / "policy.onnx", batch_size=2)
    result = check_against_torch(path, model, processor, "panda", batch_size=2, trials=4)
    assert result["max_abs_canonical"] <= 1e-4 and result["token_agreement"] == 1.0 and result["max_abs_native"] == 0.0
    proto = onnx.load(str(path))
    names = ["q", "goal", "has_goal", "keypoints", "keypoint_mask", "task_ids"]
    assert [i.name for i in proto.graph.input] == names
    read = {name for node in proto.graph.node for name in node.input}
    assert set(names) <= read  # none folded away into a constant
    if precision != "float32":
        return
    # per-sample masks: sample 0 with a goal and two objects, sample 1 with no goal, one object and a shorter task
    emb = processor.resolve("panda")
    feed = example_feed(model, processor, emb, 2, seed=1)
    points = observation(batch=2, points=K, seed=4)["environment_state"].reshape(2, K, 3).float()
    points[1, 4:] = 0.0
    feed.update(has_goal=torch.tensor([True, False]), keypoints=points, keypoint_mask=torch.tensor([[True] * 8, [True] * 4 + [False] * 4]))
    feed["task_ids"] = processor.encode_task(["stack the red cube on the green cube", "lift the cube"], 2)[0]
    tokens = torch.from_numpy(ort_session(path).run(OUTPUT_NAMES[:1], {k: v.numpy() for k, v in feed.items()})[0])
    with torch.no_grad():
        assert torch.equal(tokens, PolicyGraph(model, processor, emb)(*feed.values())[0])
        for b, obs in enumerate([{"goal": feed["goal"][:1], "environment_state": points[:1], "task": "stack the red cube on the green cube"},
                                 {"environment_state": points[1:, :4], "task": "lift the cube"}]):
            batch = dict(processor({"state": feed["q"][b : b + 1], **obs}, emb))
            batch.pop("action_decoder")
            want = model.sample_action_tokens(batch.pop("action_dims"), batch.pop("action_steps"), **batch)["tokens"]
            assert torch.equal(tokens[b : b + 1], want)


def test_onnx_policy_graph_reads_camera_frames(tmp_path):
    pytest.importorskip("onnxruntime")
    from embodyhub.export.onnx import check_against_torch, export_policy, ort_session

    model, processor = make(seed=2, image_size=16, patch_size=8)
    path = export_policy(model, processor, "panda", tmp_path / "policy.onnx")
    assert [i.name for i in ort_session(path).get_inputs()][-1] == "pixel_values"
    result = check_against_torch(path, model, processor, "panda", trials=2)
    assert result["max_abs_canonical"] <= 1e-4 and result["token_agreement"] == 1.0


def test_v2_bundle_runs_observations_as_the_processor_takes_them(tmp_path):
    """``OnnxPolicy`` takes keypoints, the task string and an optional goal as ``WamProcessor`` does, gives the
    quantized model's native commands, refuses what the processor refuses; the GPU decoder refuses v2 models."""
    pytest.importorskip("onnxruntime")
    from embodyhub.errors import EmbodyHubError
    from embodyhub.export import GraphedDecoder, OnnxPolicy, QuantConfig, build_bundle, load_quantized
    from embodyhub.export.runtime import bench_bundle

    model, processor = make(seed=3, keypoints_per_object=4)
    processor.embodiments["panda"].control_hz = 1.0  # a generous budget: no warning
    folder = tmp_path / "bundle"
    manifest = build_bundle(model, processor, folder, QuantConfig("int4", group_size=16), check_trials=2, latency_repeats=1)
    entry = manifest["embodiments"][0]
    assert [i["name"] for i in entry["io"]["inputs"]] == ["q", "goal", "has_goal", "keypoints", "keypoint_mask", "task_ids"]
    assert entry["onnx_check"]["passed"] and "task_ids: task word ids" in manifest["inputs_note"]
    assert {"model.keypoint_proj.0", "model.keypoint_proj.2"} <= set(manifest["quantization"]["float_layers"])  # an input projection
    assert "`keypoint_mask`" in (folder / "README.md").read_text()
    policy, quantized = OnnxPolicy(folder, "panda"), load_quantized(folder)
    for seed, obs in enumerate([observation(batch=1, points=8), observation(batch=1, points=4, task="lift the cube")]):
        if seed:
            emb = policy.embodiment
            obs["goal"] = torch.stack([c.forward_kinematics(emb.sample(1)[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
        want = quantized.predict_action(**processor(obs, "panda"))
        got = policy(obs.pop("state"), obs.pop("goal", None), **obs)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
    bad = observation(batch=1, points=4)
    bad["environment_state"][0, 2] = float("nan")
    with pytest.raises(InvalidActionError, match="NaN"):
        policy(bad.pop("state"), **bad)
    with pytest.raises(EmbodyHubError, match="read joint state and goal poses only.*keypoints"):
        GraphedDecoder(quantized, processor, "panda")
    (row,) = bench_bundle(folder, repeats=2, max_seconds=0.2)
    assert row["graph_ms"] > 0
