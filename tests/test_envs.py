"""Kinematic reach/trace environments and the IK-based experts."""

from __future__ import annotations

import pytest
import torch

from embodyhub.embodiment import load_robot
from embodyhub.envs import ReachEnv, TraceEnv, goal_poses, goal_vector, plan_reach, plan_trace
from embodyhub.errors import InvalidActionError


@pytest.fixture(scope="module")
def panda():
    return load_robot("panda")


def reach_expert(emb):
    return lambda obs: plan_reach(emb, obs["q"], obs["goal"], steps=20).q


def test_reset_shapes_and_goal_margin(panda):
    env = ReachEnv(panda, batch_size=64, seed=0, goal_margin=0.2)
    obs = env.reset()
    assert obs["q"].shape == (64, panda.dof) and obs["q"].dtype == torch.float64
    assert obs["goal"].shape == obs["ee"].shape == (64, 1, 4, 4)
    span = panda.upper - panda.lower
    assert (obs["q"] >= panda.lower + 0.2 * span).all() and (obs["q"] <= panda.upper - 0.2 * span).all()
    R = obs["goal"][..., :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-9)
    assert torch.allclose(obs["ee"], env.ee_poses(obs["q"]))
    assert torch.allclose(goal_poses(goal_vector(obs["goal"])), obs["goal"], atol=1e-12)


def test_step_clamps_to_velocity_and_position_limits(panda):
    env = ReachEnv(panda, batch_size=8, seed=1)
    obs = env.reset()
    for sign in (1.0, -1.0):
        q_before = obs["q"]
        obs, reward, done, info = env.step(q_before + sign * 100.0)
        moved = (obs["q"] - q_before).abs()
        assert (moved <= panda.velocity_limit * panda.dt + 1e-12).all()
        assert torch.allclose(moved, panda.velocity_limit * panda.dt)  # mid-range start: the full step is taken
        assert reward.shape == done.shape == (8,) and done.dtype == torch.bool
        assert info["pos_err"].shape == info["rot_err"].shape == (8, 1)
        assert (info["steps"] == 2 - (sign > 0)).all()
    for _ in range(200):
        obs, *_ = env.step(obs["q"] + 100.0)
    assert torch.equal(obs["q"], panda.upper.expand(8, -1))


def test_invalid_commands_raise(panda):
    env = ReachEnv(panda, batch_size=2, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(2, panda.dof))
    obs = env.reset()
    bad = obs["q"].clone()
    bad[1, 3] = float("nan")
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(bad)
    with pytest.raises(InvalidActionError):
        env.step(obs["q"][:1])
    with pytest.raises(InvalidActionError):
        env.evaluate(lambda o: torch.zeros(3, panda.dof), episodes=2)


def test_reproducible_by_seed(panda):
    a, b = ReachEnv(panda, batch_size=4, seed=7), ReachEnv(panda, batch_size=4, seed=7)
    first, second = a.reset(), b.reset()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(a.reset(seed=3)["goal"], b.reset(seed=3)["goal"])
    assert not torch.equal(a.reset(seed=4)["goal"], b.reset(seed=5)["goal"])
    env = TraceEnv(panda, batch_size=3, seed=0, max_steps=300)
    policy = lambda obs: plan_trace(panda, obs["q"], env.waypoints, 20, 5, torch.Generator().manual_seed(0)).q
    r1, r2 = env.evaluate(policy, 3, seed=11), env.evaluate(policy, 3, seed=11)
    assert torch.equal(r1["final_pos_err"], r2["final_pos_err"]) and torch.equal(r1["waypoints"], r2["waypoints"])


def test_expert_plan_is_smooth_and_within_limits(panda):
    env = ReachEnv(panda, batch_size=16, seed=2)
    obs = env.reset()
    plan = plan_reach(panda, obs["q"], obs["goal"], steps=25, generator=torch.Generator().manual_seed(0))
    assert plan.reached.all() and (plan.lengths >= 25).all() and plan.q.shape[1] == int(plan.lengths.max())
    path = torch.cat([obs["q"][:, None], plan.q], 1)
    assert ((path[:, 1:] - path[:, :-1]).abs() <= panda.velocity_limit * panda.dt + 1e-12).all()
    assert (plan.q >= panda.lower).all() and (plan.q <= panda.upper).all()
    arm = panda.arm_indices[0]
    final = panda.chains[0].forward_kinematics(plan.q[:, -1, arm])
    assert (final[:, :3, 3] - obs["goal"][:, 0, :3, 3]).norm(dim=-1).max() < 1e-3
    grip = plan.q[:, -1, panda.gripper_indices[0]]
    assert ((grip == panda.lower[panda.gripper_indices[0]]) | (grip == panda.upper[panda.gripper_indices[0]])).all()
    # a move longer than the velocity limits allow in `steps` is stretched, never clamped
    short = plan_reach(panda, obs["q"], obs["goal"], steps=1, generator=torch.Generator().manual_seed(0))
    assert (short.lengths > 1).any() and torch.allclose(short.q[torch.arange(16), short.lengths - 1], plan.q[:, -1])


@pytest.mark.parametrize("name", ["panda", "baxter"])
def test_expert_reaches_goals(name):
    emb = load_robot(name)
    env = ReachEnv(emb, batch_size=20, max_steps=400, seed=0)
    result = env.evaluate(reach_expert(emb), episodes=20, seed=0)
    assert result["success_rate"] >= 0.95
    assert result["pos_err"] <= env.pos_tol and result["rot_err"] <= env.rot_tol
    assert len(result["ee_trajectories"]) == 20 and result["waypoints"].shape == (20, 1, len(emb.arms), 3)
    for traj, steps in zip(result["ee_trajectories"], result["episode_steps"]):
        assert traj.shape == (int(steps) + 1, len(emb.arms), 3)


def test_per_step_policy_reward_and_short_goals(panda):
    env = ReachEnv(panda, batch_size=5, max_steps=60, seed=3, goal_distance=0.2)
    obs = env.reset()
    start = obs["q"]
    plan = plan_reach(panda, obs["q"], obs["goal"], steps=20)
    assert int(plan.lengths.max()) <= 40  # nearby goals make short episodes
    rewards, done = [], torch.zeros(5, dtype=torch.bool)
    for t in range(plan.q.shape[1]):
        obs, reward, done_t, info = env.step(plan.q[:, t])
        rewards.append(torch.where(done, torch.nan, reward))
        done |= done_t
    rewards = torch.stack(rewards, 1)
    assert info["success"].all() and done.all()
    finals = rewards[torch.arange(5), (~rewards.isnan()).sum(1) - 1]
    assert (finals > 0.9).all() and (rewards[:, 0] < 0).all()  # -error while moving, +1 on arrival

    calls = []

    def step_policy(o):  # one command per call: the plan made at the episode start, step by step
        calls.append(o["q"])
        return plan.q[:, min(len(calls), plan.q.shape[1]) - 1]

    result = env.evaluate(step_policy, episodes=5, seed=3)
    assert torch.equal(calls[0], start) and torch.allclose(calls[1], plan.q[:, 0])
    assert result["success_rate"] == 1.0 and len(calls) == int(result["episode_steps"].max())


def test_trace_requires_every_waypoint_in_order(panda):
    env = TraceEnv(panda, batch_size=10, n_waypoints=4, max_steps=400, seed=0)
    obs = env.reset()
    assert env.waypoints.shape == (10, 4, 1, 4, 4) and torch.equal(obs["goal"], env.waypoints[:, 0])
    tracer = lambda o: plan_trace(panda, o["q"], env.waypoints, steps=20, segment_steps=5).q
    result = env.evaluate(tracer, episodes=10, seed=0)
    assert result["success_rate"] >= 0.95 and result["waypoints"].shape == (10, 4, 1, 3)
    # going straight to the last waypoint skips the others: no success
    shortcut = lambda o: plan_reach(panda, o["q"], env.waypoints[:, -1], steps=20).q
    assert env.evaluate(shortcut, episodes=10, seed=0)["success_rate"] == 0.0
