"""Synthetic multi-robot demonstrations: expert reach/trace episodes written as LeRobot v3.0 datasets.

Tasks are drawn by the environments of ``embodyhub.envs`` (so the data and the evaluation share
one task distribution), solved by the IK-based experts, and executed in the environment: only
episodes the environment scores as successful are kept. Frame ``t`` holds the joint state
``q_t`` (``observation.state``), the next commanded configuration ``q_{t+1}`` (``action``) and the
pose(s) the environment targets at ``t`` (``observation.goal``: per arm position + 6D rotation in
the arm's base frame). Each dataset records its embodiment card in ``info.json`` and the robot's
``embodiment.json`` + URDF under ``meta/embodiment/``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Sequence

import torch

from ..embodiment import Embodiment, load_robot
from ..envs import ReachEnv, TraceEnv, goal_vector, plan_reach, plan_trace
from ..errors import DatasetError
from .lerobot import EMBODIMENT_DIR, write_dataset

TASK_TEXT = {"reach": "reach the target pose", "trace": "trace the path"}
_MAX_ROUNDS = 5  # batches drawn per task before giving up on episodes the expert cannot solve


def _features(emb: Embodiment) -> dict[str, dict[str, Any]]:
    goal_names = [
        f"{arm.name}.{part}" for arm in emb.arms for part in ("x", "y", "z", *(f"rot6d_{i}" for i in range(6)))
    ]
    return {
        "observation.state": {"dtype": "float32", "shape": [emb.dof], "names": list(emb.joint_names)},
        "action": {"dtype": "float32", "shape": [emb.dof], "names": list(emb.joint_names)},
        "observation.goal": {"dtype": "float32", "shape": [len(goal_names)], "names": goal_names},
    }


def _rollout(env: ReachEnv, task: str, steps: int, segment_steps: int, profile: str) -> list[dict[str, Any]]:
    """One batch of expert episodes executed in ``env``; returns the successful ones as frame arrays."""
    obs = env.reset()
    if task == "reach":
        plan = plan_reach(env.embodiment, obs["q"], obs["goal"], steps, env.generator, profile=profile)
    else:
        plan = plan_trace(env.embodiment, obs["q"], env.waypoints, steps, segment_steps, env.generator)
    states, goals = [obs["q"]], [goal_vector(obs["goal"])]
    for t in range(plan.q.shape[1]):
        obs, _, _, info = env.step(plan.q[:, t])
        states.append(obs["q"])
        goals.append(goal_vector(obs["goal"]))
    state, goal = torch.stack(states, 1), torch.stack(goals, 1)
    keep = (info["success"] & plan.reached).nonzero().flatten().tolist()
    return [
        {
            "observation.state": state[b, : int(plan.lengths[b])],
            "action": plan.q[b, : int(plan.lengths[b])],
            "observation.goal": goal[b, : int(plan.lengths[b])],
            "task": TASK_TEXT[task],
        }
        for b in keep
    ]


def generate(
    robot_names: Sequence[str | Embodiment],
    out_dir: str | os.PathLike,
    episodes_per_robot: int = 100,
    tasks: Sequence[str] = ("reach", "trace"),
    seed: int = 0,
    steps_per_episode: int = 30,
    segment_steps: int = 8,
    n_waypoints: int = 5,
    goal_distance: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    reach_profile: str = "min_jerk",
) -> list[Path]:
    """Write one LeRobot dataset of expert episodes per robot at ``out_dir/<robot name>/``.

    ``episodes_per_robot`` are split evenly over ``tasks`` ("reach", "trace"). A reach lasts at
    least ``steps_per_episode`` steps and a trace adds at least ``segment_steps`` per further
    waypoint; both last longer where a joint's velocity limit needs it. ``goal_distance``
    (radians or metres per joint) draws goals near the start for short episodes (see
    ``ReachEnv``). ``reach_profile`` is the reach expert's velocity profile (see ``plan_reach``).
    The same ``seed`` gives the same data for a robot whatever else is requested.
    """
    unknown = [t for t in tasks if t not in TASK_TEXT]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {sorted(TASK_TEXT)}, got {list(tasks)}")
    if episodes_per_robot < len(tasks):
        raise ValueError(f"episodes_per_robot ({episodes_per_robot}) is below the number of tasks ({len(tasks)})")
    embodiments = [load_robot(r) if isinstance(r, str) else r for r in robot_names]
    counts = [episodes_per_robot // len(tasks) + (i < episodes_per_robot % len(tasks)) for i in range(len(tasks))]
    jobs = [(emb, task, n) for emb in embodiments for task, n in zip(tasks, counts)]
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic", unit="task", disable=not progress)
    except ImportError:
        bar = None

    outputs, episodes = [], []
    for j, (emb, task, n) in enumerate(jobs):
        if bar is not None:
            bar.set_postfix_str(f"{emb.name}/{task}")
        elif progress:
            print(f"[{j + 1}/{len(jobs)}] {emb.name}: {n} {task} episodes", flush=True)
        sub_seed = zlib.crc32(f"{seed}/{emb.name}/{task}".encode())
        env_cls = ReachEnv if task == "reach" else TraceEnv
        kwargs = {"n_waypoints": n_waypoints} if task == "trace" else {}
        env = env_cls(emb, batch_size=n, seed=sub_seed, goal_distance=goal_distance, **kwargs)
        kept: list[dict[str, Any]] = []
        for _ in range(_MAX_ROUNDS):
            kept += _rollout(env, task, steps_per_episode, segment_steps, reach_profile)
            if len(kept) >= n:
                break
        else:
            raise DatasetError(
                f"{emb.name}/{task}: the expert solved only {len(kept)} of {n} episodes in {_MAX_ROUNDS} batches"
            )
        episodes += kept[:n]
        if bar is not None:
            bar.update(1)
        if j + 1 == len(jobs) or jobs[j + 1][0] is not emb:
            root = Path(out_dir) / emb.name
            extra = {
                "embodyhub": {
                    "embodiment": emb.to_card(),
                    "observation.goal": "per arm: tip position (3, m) then 6D rotation (6), in the arm's base frame",
                    "generator": {
                        "tasks": list(tasks),
                        "seed": seed,
                        "steps_per_episode": steps_per_episode,
                        "segment_steps": segment_steps,
                        "n_waypoints": n_waypoints,
                        "goal_distance": goal_distance,
                        "reach_profile": reach_profile,
                        "pos_tol": env.pos_tol,
                        "rot_tol": env.rot_tol,
                    },
                }
            }
            write_dataset(root, episodes, emb.control_hz, emb.name, _features(emb), extra, overwrite=overwrite)
            emb.save_pretrained(root / EMBODIMENT_DIR)
            outputs.append(root)
            episodes = []
    if bar is not None:
        bar.close()
    return outputs
