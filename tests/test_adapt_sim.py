"""`embodyhub adapt --env`: a LoRA adapter (or a full fine-tuning) for a held-out simulator arm on robosuite demos,
evaluated zero-shot vs adapted in the simulator, at toy size (the real numbers: docs/adapt_sim.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("robosuite", reason="robosuite (sim extra) not installed")

from embodyhub.cli import main  # noqa: E402

RECIPE = dict(episodes=1, workers=1, lora={"r": 2, "alpha": 4}, train_steps=2, batch_size=8, warmup_steps=1, eval_episodes=1)


@pytest.fixture(scope="module")
def v2_base(tiny_sim_model) -> Path:
    """A tiny, untrained v2 base (``pretrain_sim``'s kind, panda only), saved."""
    return tiny_sim_model[2]


def _recipe(tmp_path: Path, **overrides) -> str:
    path = tmp_path / f"recipe{len(list(tmp_path.glob('recipe*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **overrides}))
    return str(path)


def test_adapt_env_collects_trains_and_evaluates_zero_shot_vs_adapter(v2_base, tmp_path, capsys):
    from embodyhub.envs.sim import EVAL_SEED_BASE, ModelPolicy, sim_embodiment
    from embodyhub.hub import find_eval, render_card
    from embodyhub.training import load_adapter
    from embodyhub.models.wam import WamForActionPrediction

    out = tmp_path / "run"
    assert main(["adapt", "--base", str(v2_base), "--robot", "xarm7", "--env", "lift", "--recipe", _recipe(tmp_path),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained on 1 demos per task" in printed
    staged = sorted((out / "data" / "xarm7-lift" / ".staging").glob("lift-*.npz"))
    assert len(staged) == 1 and all(int(p.stem.split("-")[1]) < EVAL_SEED_BASE for p in staged)  # demos: collection seeds

    folder = out / "adapter" / "xarm7"
    xarm7 = sim_embodiment("xarm7")
    _, robot = load_adapter(WamForActionPrediction.from_pretrained(v2_base), folder)
    assert robot.mjcf == xarm7.mjcf and robot.joint_names == xarm7.joint_names
    ModelPolicy(str(v2_base), str(folder)).build(xarm7, "lift the cube")  # loads as the evaluation workers do

    zero, adapted = json.loads((out / "eval.json").read_text())
    assert (zero["task"], zero["robot"], zero["method"], zero["baseline"], zero["adapter"]) == ("lift", "xarm7", "zero-shot", True, None)
    assert (adapted["method"], adapted["adapter"], "baseline" in adapted) == ("LoRA", str(folder), False)
    assert zero["seeds"] == adapted["seeds"] == [EVAL_SEED_BASE, EVAL_SEED_BASE]
    assert (out / "eval.png").is_file() and "xarm7 zero-shot" in printed and "xarm7 LoRA" in printed

    card = (folder / "README.md").read_text()
    assert f"MJCF `{xarm7.mjcf['sha256'][:16]}…`" in card
    assert f"`embodyhub eval --env lift --robot xarm7 --model {v2_base} --adapter {folder} --control joint --episodes 1 --seed {EVAL_SEED_BASE}`" in card
    assert "| xarm7 | lift | zero-shot (baseline: not this model) |" in card and "| xarm7 | lift | LoRA |" in card
    published = render_card(folder, "org/xarm7-lora", base_model="org/wam-sim", eval_path=find_eval(folder))
    assert [r.metric_value for r in published.card_data.eval_results] == [adapted["success_rate"]]  # the adapter's row only


def test_adapt_env_reuses_collected_data_full_finetunes_and_warns_below_zero_shot(v2_base, tmp_path, capsys, monkeypatch):
    import embodyhub.envs.sim as sim
    from embodyhub.envs.sim import EVAL_SEED_BASE, ModelPolicy, SimEnv, collect
    from embodyhub.models.wam import WamProcessor

    data = collect(["lift"], "xarm7", 1, tmp_path / "data" / "xarm7-lift", progress=False)
    rates = {"zero-shot": 0.5, "adapted": 0.0}

    def scored(task, robot, episodes, seed, workers, policy):  # the rows evaluate_policy returns, scores set
        rate = rates["zero-shot" if (policy.model, policy.adapter) == (str(v2_base), None) else "adapted"]
        return {"task": task, "robot": robot, "control": "joint", **policy.describe(), "episodes": episodes,
                "seeds": [seed, seed + episodes - 1], "success_rate": rate, "mean_steps": 150.0, "cpu_s_per_episode": 0.1,
                "per_episode": [], "videos": []}

    monkeypatch.setattr(sim, "evaluate_policy", scored)
    recipe = _recipe(tmp_path)
    for given, full in ((data, False), (data.parent, True)):  # the dataset itself, or a folder of ROBOT-TASK datasets
        out = tmp_path / f"run-{full}"
        args = ["adapt", "--base", str(v2_base), "--robot", "xarm7", "--env", "lift", "--data", str(given), "--recipe", recipe,
                "--out", str(out)]
        assert main(args + ["--full-finetune"] * full) == 0
        printed = capsys.readouterr().out
        subject = "the fine-tuned model" if full else "the adapter"
        assert f"warning: {subject} succeeds less often than the base did zero-shot on the same evaluation seeds: lift (0% vs 50%)" in printed
        assert not (out / "data").exists()  # nothing collected
    assert "xarm7" in WamProcessor.from_pretrained(out / "model").embodiments  # --full-finetune: a whole model folder
    env = SimEnv("lift", "xarm7")
    assert ModelPolicy(str(out / "model")).build(env.embodiment, env.task.description)(env.reset(EVAL_SEED_BASE)).shape == (8,)
    assert json.loads((out / "eval.json").read_text())[1]["method"] == "full fine-tuning"
    rates["adapted"] = 0.5
    assert main(args) == 0
    assert "warning" not in capsys.readouterr().out

    # the data must hold every --env task; a v2 base without --env skips the (meaningless) reach evaluation
    assert main(["adapt", "--base", str(v2_base), "--robot", "xarm7", "--env", "lift,stack", "--data", str(data.parent),
                 "--recipe", recipe, "--out", str(tmp_path / "x")]) == 2
    assert "lacks xarm7-stack" in capsys.readouterr().err
    assert main(["adapt", "--base", str(v2_base), "--robot", str(data / "meta" / "embodiment"), "--data", str(data),
                 "--recipe", recipe, "--out", str(tmp_path / "plain")]) == 0
    assert "reach evaluation skipped" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--robot", "xarm7", "--env", "lift,door"], "unknown env 'door'; choose one of: lift, stack, can"),
    (["--robot", "ur5", "--env", "lift"], "unknown simulator robot 'ur5'; choose one of: panda"),
    (["--robot", "xarm7", "--env", "lift", "--arm", "a:b"], "--arm describe a URDF robot; with --env, --robot is a simulator arm"),
    (["--robot", "xarm7", "--env", "lift"], "is a goal-reaching base: --env needs a base trained on the simulator"),
])
def test_adapt_env_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["adapt", *args, "--out", str(tmp_path / "o")]) == 2  # the default base: the shipped goal-reaching one
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0]


def test_adapt_sim_recipe_trains_at_most_5_percent_of_the_pretrain_sim_base():
    from embodyhub.envs.sim import sim_embodiment
    from embodyhub.recipes import recipe_path
    from embodyhub.training import AdaptRecipe, PretrainRecipe, attach_adapter, build, lora_config, trainable_share

    recipe = AdaptRecipe.from_yaml(recipe_path("adapt_sim"))
    model, _ = build(PretrainRecipe.from_yaml(recipe_path("pretrain_sim")))
    share = trainable_share(attach_adapter(model, sim_embodiment("xarm7"), lora_config(**recipe.lora)))
    assert 0.02 < share <= 0.05 and recipe.full_learning_rate < recipe.learning_rate
