"""World-Action Model: Auto-class round trip, cached decoding, processor, malformed inputs, training."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.errors import EmbodimentMismatchError, InvalidActionError
from embodyhub.models.wam import ActionQueue, BinningActionTokenizer, WamConfig, WamForActionPrediction, WamProcessor

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    processor = WamProcessor(chunk_length=4)
    robots = [load_robot("panda"), load_robot("baxter")]
    for emb in robots:
        processor.add_embodiment(emb)
    config = WamConfig(chunk_length=4, embodiments={e.name: e.urdf_sha256 for e in robots}, **TINY)
    model = WamForActionPrediction(config).eval()
    return model, processor, robots


def observation(emb, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = emb.sample(batch, gen)
    goal = torch.stack([c.forward_kinematics(emb.sample(batch, gen)[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
    return {"state": q, "goal": goal}


def decode_inputs(batch):
    batch = dict(batch)
    batch.pop("action_decoder")
    return batch.pop("action_dims"), batch.pop("action_steps"), batch


ROUND_TRIP = """
import hashlib, json, sys
import torch
import embodyhub
from transformers import AutoConfig, AutoModel, AutoProcessor
path = sys.argv[1]
config = AutoConfig.from_pretrained(path)
model = AutoModel.from_pretrained(path)
processor = AutoProcessor.from_pretrained(path)
print(json.dumps({
    "config_class": type(config).__name__,
    "model_class": type(model).__name__,
    "processor_class": type(processor).__name__,
    "weights": {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()},
    "buffers": {k: v.tolist() for k, v in model.named_buffers()},  # non-persistent ones are rebuilt, not loaded
    "config": config.to_dict(),
    "cards": {n: e.to_card() for n, e in processor.embodiments.items()},
    "processor": {k: getattr(processor, k) for k in ("action_bins", "action_low", "action_high", "chunk_length", "action_slots", "embodiment_names")},
    "tokens": model.sample_action_tokens(**torch.load(sys.argv[2])).get("tokens").tolist(),
}))
"""


def test_auto_classes_round_trip_bit_exact_in_fresh_process(setup, tmp_path):
    import hashlib

    model, processor, robots = setup
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert "auto_map" not in config_json and config_json["model_type"] == "wam"
    for emb in robots:
        assert (tmp_path / "embodiments" / emb.name / "embodiment.json").is_file()
        assert (tmp_path / "embodiments" / emb.name / "robot.urdf").read_text() == emb.urdf_text
    dims, steps, prefix = decode_inputs(processor(observation(robots[0]), "panda"))
    torch.save({"action_dims": dims, "action_steps": steps, **prefix}, tmp_path / "inputs.pt")
    tokens = model.sample_action_tokens(dims, steps, **prefix)["tokens"]
    proc = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, str(tmp_path), str(tmp_path / "inputs.pt")], capture_output=True, text=True, check=True
    )
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (loaded["config_class"], loaded["model_class"], loaded["processor_class"]) == (
        "WamConfig", "WamForActionPrediction", "WamProcessor",
    )
    expected = {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()}
    assert loaded["weights"] == expected
    assert loaded["buffers"] == {k: v.tolist() for k, v in model.named_buffers()}
    saved_config = json.loads(json.dumps(model.config.to_dict()))
    loaded["config"].pop("_name_or_path"), saved_config.pop("_name_or_path")  # where it was loaded from
    assert loaded["config"] == saved_config
    assert loaded["cards"] == json.loads(json.dumps({e.name: e.to_card() for e in robots}))
    assert loaded["processor"]["embodiment_names"] == ["panda", "baxter"]
    assert loaded["processor"]["action_low"] == processor.action_low
    assert loaded["tokens"] == tokens.tolist()  # same behaviour, not only the same stored tensors


@pytest.mark.parametrize("robot", ["panda", "baxter"])
def test_cached_and_uncached_decoding_identical(setup, robot):
    model, processor, _ = setup
    emb = processor.resolve(robot)
    dims, steps, prefix = decode_inputs(processor(observation(emb), robot))
    cached = model.sample_action_tokens(dims, steps, **prefix)["tokens"]
    uncached = model.sample_action_tokens(dims, steps, use_cache=False, **prefix)["tokens"]
    assert cached.shape == dims.shape
    assert torch.equal(cached, uncached)
    assert int(cached.max()) < model.config.action_bins  # never the BOS token


def test_multi_path_sampling_shares_the_prefix(setup):
    model, processor, _ = setup
    dims, steps, prefix = decode_inputs(processor(observation(processor.resolve("panda"), batch=2), "panda"))
    gen = torch.Generator().manual_seed(0)
    out = model.sample_action_tokens(dims, steps, num_samples=4, do_sample=True, generator=gen, imagine=True, **prefix)
    assert out["tokens"].shape == (8, dims.shape[1])
    assert out["world"].shape == (8, 4, 3 * model.config.max_arms)
    assert len({tuple(t.tolist()) for t in out["tokens"]}) > 1  # different paths


@pytest.mark.parametrize("robot", ["panda", "baxter"])
def test_predict_action_native_chunk_within_limits(setup, robot):
    model, processor, _ = setup
    emb = processor.resolve(robot)
    obs = observation(emb)
    chunk, world = model.predict_action(**processor(obs, robot), imagine=True)
    assert chunk.shape == (3, 4, emb.dof) and world.shape == (3, 4, 6)
    assert torch.all(chunk <= emb.upper) and torch.all(chunk >= emb.lower)
    prev = obs["state"]
    for h in range(4):  # each step within one control step of velocity from the previous one
        assert torch.all((chunk[:, h] - prev).abs() <= emb.velocity_limit * emb.dt + 1e-9)
        prev = chunk[:, h]


def test_unseen_robot_gets_a_body_description(setup):
    model, processor, _ = setup
    ur10 = load_robot("ur10")  # not among the processor's cards: passed as an Embodiment
    chunk = model.predict_action(**processor(observation(ur10, batch=1), ur10))
    assert chunk.shape == (1, 4, ur10.dof)


def test_malformed_inputs_raise_clear_errors(setup):
    model, processor, _ = setup
    emb = processor.resolve("panda")
    obs = observation(emb)
    with pytest.raises(InvalidActionError, match="expects"):
        processor({"state": obs["state"][:, :-1], "goal": obs["goal"]}, "panda")
    bad = obs["state"].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InvalidActionError, match="NaN"):
        processor({"state": bad, "goal": obs["goal"]}, "panda")
    no_goal = processor({"state": obs["state"]}, "panda")  # the goal is optional: masked, not an error
    assert not no_goal["goal_mask"].any() and not no_goal["goal"].any()
    with pytest.raises(EmbodimentMismatchError, match="no embodiment card named 'ur5'"):
        processor(obs, "ur5")
    dims, steps, prefix = decode_inputs(processor(obs, "panda"))
    prefix.pop("state_mask")
    with pytest.raises(InvalidActionError, match="state_mask"):
        model.sample_action_tokens(dims, steps, **prefix)


def test_training_step_lowers_the_loss(setup):
    model, processor, _ = setup
    model = WamForActionPrediction(model.config)
    emb = processor.resolve("panda")
    obs = observation(emb, batch=16)
    actions = obs["state"][:, None].expand(16, 4, emb.dof)
    batch = dict(processor(obs, "panda", actions=actions))
    batch.pop("action_decoder")
    assert batch["labels"].shape == batch["input_ids"].shape == batch["action_dims"].shape
    model.train()
    model.activation_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        out = model(**batch)
        first = first if first is not None else out.loss.item()
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert out.loss.item() < 0.5 * first
    assert out.world.shape == (16, 4, 6)


def test_binning_round_trip_within_half_a_bin():
    bins = BinningActionTokenizer(256)
    dims = torch.arange(39).repeat(50)
    low, high = bins.low[dims], bins.high[dims]
    x = low + torch.rand(dims.shape, dtype=torch.float64) * (high - low)
    back = bins.decode(bins.encode(x, dims), dims)
    assert torch.all((back - x).abs() <= bins.resolution()[dims] / 2 + 1e-12)
    assert bins.encode(torch.full((1,), 99.0, dtype=torch.float64), torch.zeros(1, dtype=torch.long)).item() == 255


def test_action_queue_replans_when_empty():
    calls = []

    def policy(q):
        calls.append(q)
        return torch.arange(3, dtype=torch.float64)[:, None] + len(calls) * 10

    queue = ActionQueue(policy)
    got = [float(queue(torch.zeros(1))) for _ in range(7)]
    assert got == [10, 11, 12, 20, 21, 22, 30] and len(calls) == 3
    queue = ActionQueue(policy, replan_every=2)
    calls.clear()
    assert [float(queue(torch.zeros(1))) for _ in range(4)] == [10, 11, 20, 21]


def test_generation_mixin_generate_matches_cached_decoding(setup):
    model, processor, _ = setup
    dims, steps, prefix = decode_inputs(processor(observation(processor.resolve("baxter"), batch=2), "baxter"))
    reference = model.sample_action_tokens(dims, steps, **prefix)["tokens"]
    bos = torch.full((2, 1), model.config.bos_token_id)
    out = model.generate(
        input_ids=bos, action_dims=dims, action_steps=steps, max_new_tokens=dims.shape[1], do_sample=False,
        suppress_tokens=[model.config.bos_token_id], pad_token_id=0, **prefix,
    )
    assert torch.equal(out[:, 1:], reference)


def test_optional_image_patches_join_the_prefix():
    torch.manual_seed(0)
    processor = WamProcessor(chunk_length=2)
    emb = load_robot("so100")
    config = WamConfig(chunk_length=2, image_size=32, patch_size=16, **TINY)
    model = WamForActionPrediction(config).eval()
    obs = observation(emb, batch=2)
    images = torch.rand(2, 3, 32, 32)
    dims, steps, prefix = decode_inputs(processor({**obs, "pixel_values": images}, emb))
    assert prefix["pixel_values"].shape == (2, 3, 32, 32)
    with_images = model(torch.full((2, 1), config.bos_token_id), dims[:, :1], steps[:, :1], **prefix).logits
    prefix["pixel_values"] = torch.zeros_like(images)
    blank = model(torch.full((2, 1), config.bos_token_id), dims[:, :1], steps[:, :1], **prefix).logits
    assert not torch.allclose(with_images, blank)  # the patches reach the action positions
    tokens = model.sample_action_tokens(dims, steps, **prefix)["tokens"]
    assert tokens.shape == dims.shape
    text_only = WamForActionPrediction(WamConfig(chunk_length=2, **TINY)).eval()
    with pytest.raises(InvalidActionError, match="without image inputs"):
        text_only.sample_action_tokens(dims, steps, **prefix)


@pytest.mark.parametrize(
    "change,match",
    [({"num_hidden_layers": -3}, "num_hidden_layers=-3"), ({"num_hidden_layers": 0}, "num_hidden_layers=0"),
     ({"num_attention_heads": 0}, "num_attention_heads=0"), ({"hidden_size": 0}, "hidden_size=0"),
     ({"chunk_length": 2.5}, "chunk_length=2.5"), ({"model_type": "llama"}, "model_type 'llama'")],
)
def test_invalid_configs_are_refused_when_loaded(tmp_path, change, match):
    """num_hidden_layers=-3 loaded a model with no trunk, zero heads raised ZeroDivisionError, and a config of
    another model_type loaded silently."""
    from embodyhub.errors import ConfigError

    WamConfig(**TINY).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=match):
        WamForActionPrediction.from_pretrained(tmp_path)
    if "model_type" not in change:
        with pytest.raises(ConfigError, match=match):
            WamConfig(**{**TINY, **change})


def test_processor_embodiment_names_cannot_leave_the_folder(setup, tmp_path):
    """``processor_config.json`` names with ``../`` loaded embodiment cards from outside the model folder."""
    _, processor, _ = setup
    processor.save_pretrained(tmp_path / "model")
    load_robot("ur5").save_pretrained(tmp_path / "outside" / "embodiments" / "evil")  # what ../../outside/... would read
    config_path = tmp_path / "model" / "processor_config.json"
    config = json.loads(config_path.read_text())
    for name in ("../../outside/embodiments/evil", "..", "/etc", "a\\b"):
        config_path.write_text(json.dumps({**config, "embodiment_names": [name]}))
        with pytest.raises(EmbodimentMismatchError, match="not a plain name"):
            WamProcessor.from_pretrained(tmp_path / "model")
    evil = load_robot("ur5")
    evil.name = "../evil"
    with pytest.raises(EmbodimentMismatchError, match="not a plain name"):
        WamProcessor().add_embodiment(evil)


def test_output_hidden_states_attentions_and_return_dict_follow_transformers(setup):
    """They were accepted and silently ignored; unknown keywords were swallowed by **kwargs."""
    model, processor, _ = setup
    emb = processor.resolve("panda")
    obs = observation(emb, batch=2)
    batch = dict(processor(obs, "panda", actions=obs["state"][:, None].expand(2, 4, emb.dof)))
    batch.pop("action_decoder")
    with torch.no_grad():
        plain = model(**batch)
        full = model(**batch, output_hidden_states=True, output_attentions=True)
        as_tuple = model(**batch, return_dict=False)
    layers = model.config.num_hidden_layers
    assert plain.hidden_states is None and plain.attentions is None
    assert len(full.hidden_states) == layers + 1 and len(full.attentions) == layers
    seq = full.attention_mask.shape[1]
    assert full.attentions[0].shape == (2, model.config.num_attention_heads, seq, seq)
    assert torch.allclose(full.attentions[-1].sum(-1), torch.ones(()), atol=1e-5)  # rows are distributions
    assert torch.allclose(full.logits, plain.logits, atol=1e-5)  # the explicit attention path gives SDPA's result
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], plain.loss) and torch.equal(as_tuple[1], plain.logits)
    trunk = model.model(batch["input_ids"], batch["action_dims"], batch["action_steps"], batch["joint_features"],
                        batch["joint_mask"], batch["state"], batch["state_mask"], batch["goal"], batch["goal_mask"],
                        output_hidden_states=True)
    assert torch.equal(trunk.hidden_states[-1], trunk.last_hidden_state)
    with pytest.raises(TypeError, match="not_an_argument"):
        model(**batch, not_an_argument=1)
