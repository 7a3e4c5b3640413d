"""`embodyhub adapt` and the transfer benchmark at toy size (the real numbers come from benchmarks/transfer.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from embodyhub.cli import main
from embodyhub.data import generate, load_dataset
from embodyhub.embodiment import load_robot
from embodyhub.embodiment.registry import robot_dir
from embodyhub.errors import EmbodimentMismatchError
from embodyhub.pretrained import tiny_base
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor
from embodyhub.training import AdaptRecipe, adapt, chunk_samples, demos_per_task, load_adapter
from embodyhub.envs import ReachEnv
from embodyhub.training.transfer import expert_policy, format_table, transfer_benchmark

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_length=2)
RECIPE = dict(
    episodes=4, steps_per_episode=12, lora={"r": 2, "alpha": 4}, train_steps=4, batch_size=8,
    warmup_steps=1, eval_episodes=2, eval_max_steps=3,
)


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    processor = WamProcessor(chunk_length=2)
    processor.add_embodiment(load_robot("panda"))
    folder = tmp_path / "base"
    WamForActionPrediction(WamConfig(**TINY)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def test_adapt_cli_trains_saves_and_reloads(recipe, tmp_path, capsys):
    """On the shipped (trained) base: with peaked logits, greedy actions must not move when merging."""
    base = tiny_base()
    out = tmp_path / "run"
    assert main(["adapt", "--base", str(base), "--robot", "ur5", "--recipe", str(recipe), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "adapter:" in printed and "trained on 4 demos per task (4 episodes in the data)" in printed
    folder = out / "adapter" / "ur5"
    for name in ("adapter_config.json", "adapter_model.safetensors", "embodiment.json", "robot.urdf", "wam_base.json"):
        assert (folder / name).is_file(), name
    assert load_dataset(out / "data" / "ur5").num_episodes == 4
    rows = json.loads((out / "eval.json").read_text())
    assert set(rows) == {"ur5 zero-shot", "ur5 LoRA"} and rows["ur5 zero-shot"]["baseline"] and "baseline" not in rows["ur5 LoRA"]
    assert len(json.loads((out / "adapt_log.json").read_text())) == RECIPE["train_steps"] + 1

    ur5 = load_robot("ur5")
    plain = WamForActionPrediction.from_pretrained(base).eval()
    model, robot = load_adapter(WamForActionPrediction.from_pretrained(base).eval(), folder, embodiment=ur5)
    assert any("lora_B" in n and p.abs().max() > 0 for n, p in model.named_parameters()), "the adapter did not train"
    processor = WamProcessor.from_pretrained(base)
    gen = torch.Generator().manual_seed(3)
    q = ur5.sample(5, gen)
    goal = ur5.chains[0].forward_kinematics(ur5.sample(5, gen))[:, None]
    inputs = processor({"state": q, "goal": goal}, robot)
    unmerged = model.predict_action(**inputs)
    merged_model = model.merge_and_unload()
    assert isinstance(merged_model, WamForActionPrediction)
    assert (merged_model.predict_action(**inputs) - unmerged).abs().max() <= 1e-5
    q_proj = [m.model.layers[0].self_attn.q_proj.weight for m in (plain, merged_model)]
    assert not torch.equal(*q_proj)


@pytest.mark.parametrize("after", [0.0, 1.0])
def test_adapt_cli_warns_when_the_adapter_is_worse_than_zero_shot(base, recipe, tmp_path, capsys, monkeypatch, after):
    import embodyhub.training as training

    real, calls = training.evaluate_reach, []

    def scored(*args, **kwargs):  # the real evaluation, with the success rate set: zero-shot 50%, then ``after``
        results = real(*args, **kwargs)
        for r in results.values():
            r["success_rate"] = 0.5 if not calls else after
        calls.append(1)
        return results

    monkeypatch.setattr(training, "evaluate_reach", scored)
    assert main(["adapt", "--base", str(base), "--robot", "panda", "--recipe", str(recipe), "--out", str(tmp_path / "w")]) == 0
    printed = capsys.readouterr().out
    assert len(calls) == 2
    assert ("warning: the adapter reaches fewer targets than the base did zero-shot" in printed) == (after < 0.5)


def test_adapt_urdf_robot_needs_its_arms(base, recipe, tmp_path, capsys):
    urdf = robot_dir("ur5") / "robot.urdf"
    args = ["adapt", "--base", str(base), "--robot", str(urdf), "--recipe", str(recipe), "--out", str(tmp_path / "u")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--arm BASE:TIP" in err and "tool0" in err
    assert main(args + ["--arm", "base_link:tool0", "--control-hz", "50", "--steps", "2"]) == 0
    card = json.loads((tmp_path / "u" / "adapter" / "ur5" / "embodiment.json").read_text())
    assert card["urdf_sha256"] == load_robot("ur5").urdf_sha256


def test_the_first_demos_of_each_task_of_a_multi_task_dataset_train(tmp_path):
    """``--episodes N`` means N demos per task, also where one dataset holds several tasks (`embodyhub collect --env
    lift,stack` writes one task after the other)."""
    generate(["panda"], tmp_path / "d", episodes_per_robot=4, tasks=["reach", "trace"], steps_per_episode=8, progress=False)
    ds = load_dataset(tmp_path / "d" / "panda")
    per_task = ds.task_episodes
    assert list(per_task.values()) == [[0, 1], [2, 3]]
    samples = chunk_samples(ds, 2, episodes=1)
    assert samples["task"] == [ds.episode(0)["task"]] * len(ds.episode(0)["action"]) + [ds.episode(2)["task"]] * len(ds.episode(2)["action"])
    assert demos_per_task(ds, 5) == 2 and demos_per_task({"a": ds}, 1) == 1
    with pytest.raises(ValueError, match="asked for 3 episodes per task"):
        chunk_samples(ds, 2, episodes=3)


def test_demos_of_another_robot_are_refused(base, tmp_path):
    generate(["panda"], tmp_path / "d", episodes_per_robot=2, tasks=["reach"], steps_per_episode=8, progress=False)
    model = WamForActionPrediction.from_pretrained(base)
    with pytest.raises(EmbodimentMismatchError, match="does not match 'ur5'"):
        adapt(model, WamProcessor.from_pretrained(base), load_robot("ur5"), load_dataset(tmp_path / "d" / "panda"), AdaptRecipe(**RECIPE))


def test_full_finetuning_uses_its_own_learning_rate(base, tmp_path, monkeypatch):
    import embodyhub.training.lora as lora

    generate(["panda"], tmp_path / "d", episodes_per_robot=2, tasks=["reach"], steps_per_episode=8, progress=False)
    rates = []
    monkeypatch.setattr(lora, "train", lambda *args, **kwargs: rates.append(args[5]) or [{"seconds": 0.0}])
    recipe = AdaptRecipe(**RECIPE, learning_rate=1e-3, full_learning_rate=1e-4)
    for full in (False, True):
        adapt(WamForActionPrediction.from_pretrained(base), WamProcessor.from_pretrained(base), load_robot("panda"),
              load_dataset(tmp_path / "d" / "panda"), recipe, full_finetune=full, progress=False)
    assert rates == [1e-3, 1e-4]


def test_same_recipe_and_data_give_the_same_adapter_whatever_the_callers_random_state(base, tmp_path):
    """peft draws the adapter's initial weights from the global generator; adapt seeds it from the recipe."""
    generate(["panda"], tmp_path / "d", episodes_per_robot=2, tasks=["reach"], steps_per_episode=8, progress=False)
    adapters = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        model, _ = adapt(WamForActionPrediction.from_pretrained(base), WamProcessor.from_pretrained(base), load_robot("panda"),
                         load_dataset(tmp_path / "d" / "panda"), AdaptRecipe(**RECIPE), progress=False)
        adapters.append({k: v for k, v in model.state_dict().items() if "lora_" in k})
    assert adapters[0] and adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


def test_transfer_benchmark_rows(base, tmp_path):
    rows, results = transfer_benchmark(base, load_robot("ur5"), AdaptRecipe(**RECIPE), tmp_path / "data", (2, 3), progress=False)
    assert [(r["method"], r["demos"]) for r in rows] == [
        ("expert", 0), ("zero-shot", 0), ("lora", 2), ("full", 2), ("lora", 3), ("full", 3)
    ]
    lora, full = rows[2], rows[3]
    assert 0 < lora["trainable"] < 0.2 and full["trainable"] == 1.0
    assert 0 < lora["bytes"] < full["bytes"]
    assert set(results) == {"expert", "zero-shot", "lora N=2", "full N=2", "lora N=3", "full N=3"}
    table = format_table(rows, "ur5")
    assert "LoRA / full at N=2" in table and "LoRA / full at N=3" in table


def test_expert_row_is_the_demonstrator_closed_loop():
    """The ceiling row replays the recipe's expert from the evaluation's own starts: it reaches short goals."""
    ur5 = load_robot("ur5")
    recipe = AdaptRecipe(**{**RECIPE, "goal_distance": 0.3})
    env = ReachEnv(ur5, batch_size=8, max_steps=60, seed=5, goal_distance=0.3)
    result = env.evaluate(expert_policy(ur5, recipe), 8, seed=5)
    assert result["success_rate"] == 1.0
    short = ReachEnv(ur5, batch_size=8, max_steps=2, seed=5, goal_distance=0.3).evaluate(expert_policy(ur5, recipe), 8, seed=5)
    assert short["success_rate"] < 1.0  # the step budget binds the expert like the policies


def test_adapt_refuses_a_dataset_without_a_needed_feature_before_loading_anything(tmp_path):
    """`adapt --data` on a plain state/action LeRobot dataset failed with KeyError 'observation.goal' after
    loading the model; it is now a DatasetError naming the feature, from info.json alone (no torch import)."""
    import json
    import subprocess
    import sys

    info = tmp_path / "plain" / "meta" / "info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"features": {"observation.state": {}, "action": {}, "timestamp": {}}}))
    code = ("import sys; from embodyhub.cli import main; rc = main(['adapt', '--robot', 'panda', '--data', sys.argv[1], "
            "'--out', sys.argv[2]]); print('torch' in sys.modules, 'transformers' in sys.modules); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "plain"), str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode != 0 and run.stdout.split() == ["False", "False"]
    error = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "'observation.goal'" in error[0] and "DatasetError" not in error[0]
