"""GRPO through TRL: the overridden seams, shared-prefix sampling, log-probs, rewards, full-model and PEFT paths."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import trl
from transformers import AutoModel, AutoProcessor
from transformers.cache_utils import Cache

import embodyhub  # noqa: F401  (registers the Auto classes)
from embodyhub.embodiment import load_robot
from embodyhub.envs import goal_vector
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor
from embodyhub.training.grpo import (
    TRL_SEAMS,
    ActionTokenizer,
    AppendingLayer,
    GRPOConfig,
    WamGRPOTrainer,
    reach_prompts,
)
from embodyhub.training.lora import (
    attach_adapter,
    load_adapter,
    lora_config,
)
from embodyhub.training.rewards import ReachReward, WorldModelReward

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_length=2)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    processor = WamProcessor(chunk_length=2)
    panda, ur5 = load_robot("panda"), load_robot("ur5")
    processor.add_embodiment(panda)
    processor.add_embodiment(ur5)
    model = WamForActionPrediction(WamConfig(**TINY))
    return model, processor, panda, ur5


def config(tmp_path: Path, **kw) -> GRPOConfig:
    base = dict(
        output_dir=str(tmp_path / "trainer"), max_steps=2, per_device_train_batch_size=8, num_generations=4,
        learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, bf16=False,
    )
    return GRPOConfig(**{**base, **kw})


def test_trl_seams_are_still_there():
    """The private TRL methods we override: if a TRL release renames or reshapes them, fail here, loudly."""
    assert trl.__version__.startswith("1.16."), f"embodyhub pins trl==1.16.*, found {trl.__version__}"
    for name in TRL_SEAMS:
        assert callable(getattr(trl.GRPOTrainer, name, None)), f"trl.GRPOTrainer.{name} is gone"
    params = {name: list(inspect.signature(getattr(trl.GRPOTrainer, name)).parameters) for name in TRL_SEAMS}
    assert params["_tokenize_prompts"] == ["self", "prompts"]
    assert params["_generate_single_turn"][:5] == ["self", "prompt_ids", "images", "multimodal_fields", "num_generations"]
    assert params["_get_per_token_logps_and_entropies"][:7] == [
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy"
    ]
    assert params["_compute_loss"] == ["self", "model", "inputs"]
    assert params["_generate_and_score_completions"] == ["self", "inputs"]
    assert callable(trl.trainer.grpo_trainer.create_model_from_path)  # patched for the reference model


def test_action_tokenizer_round_trip():
    tok = ActionTokenizer(8)
    assert tok.pad_token_id == tok.eos_token_id == tok.bos_token_id == 8
    assert tok.batch_decode([[0, 7, 8]], skip_special_tokens=True) == ["<a0> <a7>"]
    assert tok.convert_tokens_to_ids(["<a3>", "<bos>"]) == [3, 8]


@pytest.mark.parametrize("checkpointing", [False, True])  # shared-prefix log-prob pass / one pass per row
def test_generation_shares_the_prefix_and_logps_match_per_row(setup, tmp_path, checkpointing):
    model, processor, panda, ur5 = setup
    args = config(tmp_path, activation_checkpointing=checkpointing)
    trainer = WamGRPOTrainer(model, [ReachReward(processor)], args, reach_prompts([panda, ur5], 2, seed=1), processor)
    rows = reach_prompts([panda, ur5], 2, seed=2)["prompt"]
    # Runs of identical observations as TRL's sampler lays them out, one run split (as across DDP ranks).
    obs = [rows[0]] * 4 + [rows[2]] * 4 + [rows[1]] * 3 + [rows[3]] * 1
    prompt_ids, _, _ = trainer._tokenize_prompts(obs)
    calls = []
    original = WamForActionPrediction.sample_action_tokens

    def spy(self, *args, **kwargs):
        calls.append((kwargs["num_samples"], args[0].shape[0]))
        return original(self, *args, **kwargs)

    with mock.patch.object(WamForActionPrediction, "sample_action_tokens", spy):
        completion_ids, _ = trainer._generate_single_turn(prompt_ids, None, {}, 4)
    # one cached decode per (robot, copies): each observation's prefix is encoded once for all its paths
    assert sorted(calls) == [(1, 1), (3, 1), (4, 1), (4, 1)]
    lengths = {"panda": processor.schedule(panda)[0].shape[0], "ur5": processor.schedule(ur5)[0].shape[0]}
    assert [len(c) for c in completion_ids] == [lengths[o["robot"]] for o in obs]
    assert all(0 <= t < processor.action_bins for c in completion_ids for t in c)  # BOS is never sampled

    # TRL shuffles the batch before the loss: the log-prob pass must not rely on runs of identical rows
    order = torch.randperm(len(obs), generator=torch.Generator().manual_seed(0)).tolist()
    obs, completion_ids = [obs[i] for i in order], [completion_ids[i] for i in order]
    trainer._wam_observations = obs
    C = max(lengths.values())
    ids = torch.full((len(obs), 1 + C), processor.action_bins)
    for i, c in enumerate(completion_ids):
        ids[i, 1 : 1 + len(c)] = torch.tensor(c)
    trainer.temperature = 0.7
    logps, ent, _ = trainer._get_per_token_logps_and_entropies(model, ids, torch.ones_like(ids), C, batch_size=3, compute_entropy=True)
    for i in (0, 5, 11):  # one row alone, without the batch's grouping and padding
        emb = panda if obs[i]["robot"] == "panda" else ur5
        state, goal = torch.tensor([obs[i]["q"]], dtype=torch.float64), torch.tensor([obs[i]["goal"]], dtype=torch.float64)
        batch = dict(processor({"state": state, "goal": goal}, emb))
        batch.pop("action_decoder")
        dims, steps = batch.pop("action_dims"), batch.pop("action_steps")
        tokens = torch.tensor([completion_ids[i]])
        inp = torch.cat([torch.full((1, 1), processor.action_bins), tokens[:, :-1]], 1)
        logits = model(inp, dims, steps, **batch).logits[0, :, : processor.action_bins] / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, tokens[0][:, None]).squeeze(-1)
        L = len(completion_ids[i])
        torch.testing.assert_close(logps[i, :L], expected, rtol=1e-5, atol=1e-5)
        assert torch.all(logps[i, L:] == 0)
        assert torch.all((ent[i, :L] > 0) & (ent[i, :L] <= torch.log(torch.tensor(float(processor.action_bins))) + 1e-4))


def test_appending_cache_decodes_like_a_dynamic_cache(setup):
    model, processor, panda, _ = setup
    rows = reach_prompts([panda], 2, seed=4)["prompt"]
    state, goal = (torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in ("q", "goal"))
    batch = dict(processor({"state": state, "goal": goal}, panda))
    batch.pop("action_decoder")
    outs = []
    for cache in (None, Cache(layer_class_to_replicate=AppendingLayer)):
        torch.manual_seed(3)
        outs.append(model.sample_action_tokens(num_samples=5, do_sample=True, cache=cache, **batch)["tokens"])
    assert torch.equal(outs[0], outs[1])


def test_full_model_with_kl_trains_and_saves_for_automodel(setup, tmp_path):
    model, processor, panda, ur5 = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = WamGRPOTrainer(
        model, [ReachReward(processor)], config(tmp_path, beta=0.1), reach_prompts([panda, ur5], 4, seed=3), processor
    )
    assert trainer.ref_model is not None and trainer.ref_model is not model
    trainer.train()
    logs = [e for e in trainer.state.log_history if "reward" in e]
    assert len(logs) == 2 and "kl" in logs[0]
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the reference starts as the policy
    assert logs[1]["kl"] > 0  # ... and stays put while the policy moves
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for k, v in trainer.ref_model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "auto_map").exists()
    assert "auto_map" not in (tmp_path / "saved" / "config.json").read_text()
    loaded = AutoModel.from_pretrained(tmp_path / "saved")
    loaded_processor = AutoProcessor.from_pretrained(tmp_path / "saved")
    assert type(loaded).__name__ == "WamForActionPrediction" and loaded_processor.embodiment_names == ["panda", "ur5"]
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])


def test_peft_adapter_path_with_kl_saves_a_loadable_adapter(setup, tmp_path):
    model, processor, panda, _ = setup
    model.save_pretrained(tmp_path / "base")
    peft = attach_adapter(model, panda, lora_config(r=4))
    with torch.no_grad():  # a pretrained adapter: non-zero, so its frozen "ref" copy differs from the base
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    initial = {n: p.detach().clone() for n, p in peft.named_parameters() if ".panda." in n}
    trainer = WamGRPOTrainer(
        peft, [ReachReward(processor)], config(tmp_path, beta=0.1), reach_prompts([panda], 4, seed=3), processor, {"panda": panda}
    )
    assert sorted(peft.peft_config) == ["panda", "ref"] and peft.active_adapter == "panda"
    trainer.train()
    logs = [e for e in trainer.state.log_history if "reward" in e]
    assert logs[0]["kl"] == pytest.approx(0.0, abs=1e-6) and logs[1]["kl"] > 0
    params = dict(peft.named_parameters())
    assert any(not torch.equal(params[n], p) for n, p in initial.items())
    for n, p in initial.items():  # the reference adapter is the adapter as it was
        torch.testing.assert_close(params[n.replace(".panda.", ".ref.")], p)
    assert all(not p.requires_grad for n, p in params.items() if "lora" not in n)
    trainer.save_model(str(tmp_path / "adapter"))
    folder = tmp_path / "adapter" / "panda"
    assert (folder / "embodiment.json").is_file() and not (tmp_path / "adapter" / "ref").exists()
    loaded, robot = load_adapter(WamForActionPrediction.from_pretrained(tmp_path / "base"), folder, panda)
    assert robot.name == "panda"
    for n, p in loaded.named_parameters():
        if ".panda." in n:
            torch.testing.assert_close(p, params[n])


def _reach_case(processor, emb, offset):
    """One observation ``offset`` rad from a goal configuration, with tokens for 'go to the goal' and 'hold'."""
    gen = torch.Generator().manual_seed(0)
    q_goal = emb.sample(1, gen)
    q = q_goal + offset
    goal = torch.stack([c.forward_kinematics(q_goal[:, i]) for c, i in zip(emb.chains, emb.arm_indices)], 1)
    H = processor.chunk_length
    to_goal = processor({"state": q, "goal": goal}, emb, actions=q_goal[:, None].expand(1, H, -1))["labels"][0].tolist()
    hold = processor({"state": q, "goal": goal}, emb, actions=q[:, None].expand(1, H, -1))["labels"][0].tolist()
    prompt = {"robot": emb.name, "q": q[0].tolist(), "goal": goal_vector(goal)[0].tolist()}
    return prompt, to_goal, hold


def test_reach_reward_executes_the_chunk_in_the_env(setup):
    _, processor, panda, _ = setup
    prompt, to_goal, hold = _reach_case(processor, panda, 0.05)
    metrics = {}
    reward = ReachReward(processor)
    r = reward([prompt, prompt], [None, None], [to_goal, hold], log_metric=lambda k, v: metrics.setdefault(k, v))
    assert r[0] > r[1] + 0.5  # reaching earns the success bonus, holding pays the distance
    assert metrics["reach/success"] == 0.5
    # joint-limit proximity: a chunk commanding a joint at its upper limit is penalized
    q_lim = torch.tensor([prompt["q"]])
    q_lim[0, 0] = panda.upper[0]
    H = processor.chunk_length
    goal = torch.tensor([prompt["goal"]])
    at_limit = processor({"state": torch.tensor([prompt["q"]]), "goal": goal}, panda, actions=q_lim[:, None].expand(1, H, -1))["labels"]
    out = reward.score(panda, torch.tensor([prompt["q"]], dtype=torch.float64), goal.double(), at_limit)
    assert out["limit"][0] > 0
    # waypoints: passing the first of two counts half
    two = reward.score(panda, torch.tensor([prompt["q"]], dtype=torch.float64), goal.double(), torch.tensor([to_goal]),
                       waypoints=torch.stack([goal.double(), goal.double() + torch.tensor([0.3] + [0.0] * 8).double()], 1))
    assert two["success"][0] == 0


def test_reach_reward_rollout_scores_where_the_path_leads():
    """With ``rollout_steps`` the trained policy finishes the episode after the sampled chunk: holding still
    is then rescued by the policy, but reaching at once still scores higher (more steps left)."""
    from embodyhub.pretrained import tiny_base

    processor = AutoProcessor.from_pretrained(tiny_base())
    model = AutoModel.from_pretrained(tiny_base()).eval()
    panda = processor.embodiments["panda"]
    prompt, to_goal, hold = _reach_case(processor, panda, 0.1)
    with pytest.raises(ValueError, match="pass model"):
        ReachReward(processor, rollout_steps=8)
    q, goal = torch.tensor([prompt["q"]] * 2, dtype=torch.float64), torch.tensor([prompt["goal"]] * 2, dtype=torch.float64)
    tokens = torch.tensor([hold, to_goal])
    one = ReachReward(processor, speed_weight=1.0).score(panda, q, goal, tokens)
    rolled = ReachReward(processor, speed_weight=1.0, rollout_steps=40, model=model).score(panda, q, goal, tokens)
    assert one["success"].tolist() == [0.0, 1.0]
    assert rolled["success"].tolist() == [1.0, 1.0]
    assert rolled["reward"][1] > rolled["reward"][0] > one["reward"][0]


def test_world_model_reward_scores_imagined_end_positions(setup):
    model, processor, panda, _ = setup
    prompt, to_goal, hold = _reach_case(processor, panda, 0.05)
    target = torch.tensor(prompt["goal"][:3])
    with torch.no_grad():  # a world head that always imagines the end effector at the goal (arm 0)
        model.world_head[-1].weight.zero_()
        model.world_head[-1].bias.zero_()
        model.world_head[-1].bias[:3] = target.float()
    r = WorldModelReward(model, processor)([prompt, prompt], [None, None], [to_goal, hold])
    assert r[0] == pytest.approx(0.0, abs=1e-6) and r[1] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.world_head[-1].bias[:3] = target.float() + torch.tensor([0.1, 0.0, 0.0])
    r = WorldModelReward(model, processor)([prompt], [None], [to_goal])
    assert r[0] == pytest.approx(-0.1, abs=1e-5)


def test_unsupported_sampling_settings_are_refused(setup, tmp_path):
    model, processor, panda, _ = setup
    with pytest.raises(ValueError, match="top_p"):
        WamGRPOTrainer(model, [ReachReward(processor)], config(tmp_path, top_p=0.9), reach_prompts([panda], 2), processor)


def test_cli_grpo_runs_and_writes_curve(setup, tmp_path, check_saved_figures):
    from embodyhub.cli import main

    model, processor, panda, _ = setup
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "prompts: 4\nrollout_prompts: false\nsteps: 2\nnum_generations: 2\nobservations_per_step: 2\n"
        "eval_every: 1\neval_episodes: 2\neval_max_steps: 4\n"
    )
    assert main(["grpo", "--model", str(tmp_path / "m"), "--robot", "panda", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "grpo_curve.png").stat().st_size > 1000
    assert check_saved_figures() == [tmp_path / "o" / "grpo_curve.png"]  # reward and success panels, both readable
    assert AutoModel.from_pretrained(tmp_path / "o" / "model") is not None
    assert main(["grpo", "--model", str(tmp_path / "m"), "--robot", "panda", "--recipe", str(recipe), "--lora", "--out", str(tmp_path / "l")]) == 0
    assert (tmp_path / "l" / "model" / "panda" / "adapter_config.json").is_file()


def test_cli_grpo_is_quiet_and_says_when_its_time_budget_stops_it(setup, tmp_path, capsys):
    from embodyhub.cli import main

    model, processor, _, _ = setup
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prompts: 4\nrollout_prompts: false\nsteps: 3\nnum_generations: 2\nobservations_per_step: 2\neval_every: 0\n")
    argv = ["grpo", "--model", str(tmp_path / "m"), "--robot", "panda", "--recipe", str(recipe)]
    capsys.readouterr()
    assert main([*argv, "--time-budget", "0", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "stopped on the time budget (0 s) after 1 of 3 planned steps" in captured.out
    assert "'loss'" not in captured.out + captured.err  # TRL's metrics dict per step: only with --verbose
    log = json.loads((tmp_path / "o" / "grpo_log.json").read_text())
    assert log["budget_stop"] == {"time_budget_s": 0.0, "steps": 1, "planned_steps": 3}
    assert main([*argv, "--verbose", "--steps", "1", "--out", str(tmp_path / "v")]) == 0
    captured = capsys.readouterr()
    assert "'loss'" in captured.out + captured.err and "time budget" not in captured.out
    assert json.loads((tmp_path / "v" / "grpo_log.json").read_text())["budget_stop"] is None


DDP_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
import embodyhub
from embodyhub.embodiment import load_robot
from embodyhub.models.wam import WamConfig, WamForActionPrediction, WamProcessor
from embodyhub.training.grpo import GRPOConfig, WamGRPOTrainer, reach_prompts
from embodyhub.training.rewards import ReachReward
torch.manual_seed(0)
processor = WamProcessor(chunk_length=2)
panda = load_robot("panda")
processor.add_embodiment(panda)
model = WamForActionPrediction(WamConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, chunk_length=2))
args = GRPOConfig(output_dir=sys.argv[1], max_steps=2, per_device_train_batch_size=4, num_generations=4, beta=0.1,
                  logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, activation_checkpointing=False)
trainer = WamGRPOTrainer(model, [ReachReward(processor)], args, reach_prompts([panda], 4), processor)
trainer.train()
assert trainer.accelerator.num_processes == 2, trainer.accelerator.num_processes
trainer.save_model(sys.argv[1] + "/model")
print("DDP-OK", trainer.accelerator.process_index)
"""


@pytest.mark.slow
def test_two_process_cpu_ddp(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    out = subprocess.run([*torchrun, str(script), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("DDP-OK") == 2
    assert AutoModel.from_pretrained(tmp_path / "run" / "model") is not None


def test_behaviour_cloning_stops_at_its_time_budget(setup, tmp_path, capsys):
    """The BC arm of benchmarks/grpo.py gets the same measured wall-clock as GRPO: ``train`` stops at it."""
    from embodyhub.training import train
    from embodyhub.training.lora import AdaptRecipe
    from embodyhub.training.pretrain import prepare_data

    model, processor, panda, _ = setup
    recipe = AdaptRecipe(episodes=2, steps_per_episode=6)
    data = prepare_data(recipe, tmp_path / "data", progress=False, robots=[panda], episodes=2)
    log = train(model, processor, data, 10**6, 4, 1e-3, warmup_steps=1, progress=False, time_budget_s=0.0)
    assert len(log) == 2 and log[-1]["step"] == 1  # one step, then the budget is spent
    assert "stopped on the time budget (0 s) after 1 of 1000000 planned steps" in capsys.readouterr().out


def test_run_grpo_resumes_a_killed_run_from_its_last_checkpoint(setup, tmp_path):
    """``grpo`` had no resume after a kill. A run killed after step 2 leaves checkpoint-1; the same call
    continues from it (two more steps, not three), keeps the killed run's evaluations, and a finished run
    leaves no checkpoint behind (the next run starts over); another recipe is refused."""
    from embodyhub.errors import EmbodyHubError
    from embodyhub.training.grpo import GrpoRecipe, _EvalCallback, run_grpo

    model, processor, panda, _ = setup
    model.save_pretrained(tmp_path / "base")
    recipe = GrpoRecipe(
        prompts=4, rollout_prompts=False, steps=3, num_generations=2, observations_per_step=2, eval_every=1, eval_episodes=2,
        eval_max_steps=4, checkpoint_every=1,
    )

    class Killed(BaseException):
        pass

    step_end = _EvalCallback.on_step_end

    def killed_at_step_2(self, args, state, control, **kwargs):
        out = step_end(self, args, state, control, **kwargs)
        if state.global_step == 2:  # after step 2's evaluation, before its checkpoint
            raise Killed
        return out

    with mock.patch.object(_EvalCallback, "on_step_end", killed_at_step_2), pytest.raises(Killed):
        run_grpo(model, processor, [panda], recipe, tmp_path / "run", progress=False)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "trainer").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1"] and (tmp_path / "run" / "trainer" / "checkpoint-1" / "grpo_progress.json").is_file()

    with pytest.raises(EmbodyHubError, match="learning_rate differ"):
        run_grpo(WamForActionPrediction.from_pretrained(tmp_path / "base"), processor, [panda],
                 GrpoRecipe(**{**recipe.__dict__, "learning_rate": 1.0}), tmp_path / "run", progress=False)

    fresh = WamForActionPrediction.from_pretrained(tmp_path / "base")  # the rerun starts from the base, as the CLI does
    with mock.patch.object(WamGRPOTrainer, "training_step", autospec=True, side_effect=WamGRPOTrainer.training_step) as steps:
        result = run_grpo(fresh, processor, [panda], recipe, tmp_path / "run", progress=False)
    assert steps.call_count == 2 and result["trainer"].state.global_step == 3
    assert [e["step"] for e in result["history"]] == [0, 1, 2, 3]  # step 0 and 1 evaluated by the killed run
    assert not list((tmp_path / "run" / "trainer").glob("checkpoint-*"))
    assert AutoModel.from_pretrained(tmp_path / "run" / "model") is not None
