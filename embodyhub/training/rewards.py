"""GRPO rewards as plain TRL reward callables: ``f(prompts, completions, completion_ids, **columns) -> list[float]``.

A prompt is an observation ``{"robot": name, "q": [dof], "goal": [n_arms * 9]}`` (optionally
``"waypoints": [K, n_arms * 9]`` for a trace); a completion's ids are the sampled action tokens. The
environment rewards decode the tokens with the ``WamProcessor`` (the same decode the closed-loop
policy uses) and execute the chunk in ``embodyhub.envs.ReachEnv`` (the environment
``evaluate_reach`` scores), so GRPO optimizes what is measured. The world-model reward instead
scores a path with the model's own world head, without executing it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..embodiment import Embodiment
from ..envs import ReachEnv
from ..envs.reach import goal_poses
from ..errors import InvalidActionError
from ..kinematics.chain import finite_range
from ..models.wam import WamForActionPrediction, WamProcessor
from .evaluate import wam_policy


def group_by_robot(prompts: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Row indices per robot name, in first-seen order (robots differ in DoF and token count)."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p["robot"], []).append(i)
    return groups


def observation_tensors(prompts: Sequence[dict[str, Any]], rows: list[int]) -> tuple[Tensor, Tensor]:
    """``q [n, dof]`` and goal vectors ``[n, n_arms * 9]`` (float64) of some rows of one robot."""
    q = torch.tensor([prompts[i]["q"] for i in rows], dtype=torch.float64)
    goal = torch.tensor([prompts[i]["goal"] for i in rows], dtype=torch.float64)
    return q, goal


class ReachReward:
    """Execute each decoded chunk in ``ReachEnv`` from the prompt's state toward its goal (or waypoints).

    reward = ``success_bonus`` * reached + ``speed_weight`` * (share of the steps left when it succeeded)
    - ``distance_weight`` * position error (m) - ``rotation_weight`` * rotation error (rad)
    - ``limit_weight`` * joint-limit proximity - ``jerk_weight`` * jerk of the sampled chunk, where the
    errors are taken when the episode first reports success (else at the end) and, for waypoints,
    ``reached`` is the fraction of waypoints passed.

    ``rollout_steps > 0`` (needs ``model``) scores where a path leads rather than one chunk's progress:
    after the sampled chunk, ``model`` (the policy being trained, greedy, like the evaluation) goes on
    from the state it left for up to ``rollout_steps`` more steps. A chunk that gains a centimetre now
    but leaves the arm where the policy then stalls scores low; one chunk's distance alone cannot tell.
    The components are logged through TRL's ``log_metric`` when the trainer provides it.
    """

    def __init__(
        self,
        processor: WamProcessor,
        embodiments: dict[str, Embodiment] | None = None,
        success_bonus: float = 1.0,
        distance_weight: float = 10.0,
        rotation_weight: float = 1.0,
        limit_weight: float = 0.1,
        limit_margin: float = 0.05,
        jerk_weight: float = 0.0,
        pos_tol: float = 0.02,
        rot_tol: float = 0.1,
        speed_weight: float = 0.0,
        rollout_steps: int = 0,
        model: WamForActionPrediction | None = None,
    ) -> None:
        if rollout_steps and model is None:
            raise ValueError("rollout_steps > 0 continues each path with the policy: pass model")
        self.processor = processor
        self.embodiments = dict(embodiments or {})
        self.success_bonus, self.distance_weight, self.rotation_weight = success_bonus, distance_weight, rotation_weight
        self.limit_weight, self.limit_margin, self.jerk_weight = limit_weight, limit_margin, jerk_weight
        self.pos_tol, self.rot_tol = pos_tol, rot_tol
        self.speed_weight, self.rollout_steps, self.model = speed_weight, rollout_steps, model

    def robot(self, name: str) -> Embodiment:
        return self.embodiments[name] if name in self.embodiments else self.processor.resolve(name)

    def score(self, emb: Embodiment, q: Tensor, goal: Tensor, tokens: Tensor, waypoints: Tensor | None = None) -> dict[str, Tensor]:
        """Per-row components ``[n]`` for one robot: ``reward``, ``success``, ``pos_err``, ``rot_err``, ``limit``, ``jerk``."""
        chunk = self.processor.decode_actions(tokens, emb, q)  # [n, H, dof], clamped like the policy's commands
        n, H = chunk.shape[:2]
        targets = goal_poses(waypoints if waypoints is not None else goal[:, None])  # [n, K, arms, 4, 4]
        env = ReachEnv(emb, batch_size=n, pos_tol=self.pos_tol, rot_tol=self.rot_tol, max_steps=H + self.rollout_steps)
        follow = wam_policy(self.model, self.processor, emb) if self.rollout_steps else None
        pending = [chunk]  # the sampled chunk first, then (with rollout_steps) the policy's own chunks

        def policy(obs: dict[str, Tensor]) -> Tensor:
            return pending.pop() if pending else follow(obs)

        with torch.no_grad():
            out = env.run(policy, env.reset_to(q, targets))
        pos, rot = out["pos_err"].mean(-1), out["rot_err"].mean(-1)
        steps_left = torch.where(out["success"], 1 - out["steps"].double() / env.max_steps, 0.0)
        reached = env.waypoint_index.double() / targets.shape[1]
        lo, hi = finite_range(emb.lower, emb.upper)
        unit = 2 * (chunk - lo) / (hi - lo) - 1  # [-1, 1] inside the limits
        limit = ((unit.abs() - (1 - self.limit_margin)).clamp_min(0) / self.limit_margin).mean((1, 2))
        path = torch.cat([q[:, None], chunk], 1) / (hi - lo)
        jerk = path.diff(n=3, dim=1).pow(2).sum(-1).mean(-1) if H >= 3 else torch.zeros(n, dtype=torch.float64)
        reward = (
            self.success_bonus * reached
            + self.speed_weight * steps_left
            - self.distance_weight * pos
            - self.rotation_weight * rot
            - self.limit_weight * limit
            - self.jerk_weight * jerk
        )
        return {"reward": reward, "success": env.success.double(), "pos_err": pos, "rot_err": rot, "limit": limit, "jerk": jerk}

    def __call__(self, prompts: list[dict[str, Any]], completions: list[Any], completion_ids: list[list[int]], **columns: Any) -> list[float]:
        rewards = [0.0] * len(prompts)
        parts: dict[str, list[float]] = {}
        for name, rows in group_by_robot(prompts).items():
            emb = self.robot(name)
            q, goal = observation_tensors(prompts, rows)
            L = self.processor.schedule(emb)[0].shape[0]
            tokens = torch.tensor([list(completion_ids[i])[:L] for i in rows], dtype=torch.long)
            waypoints = None
            if "waypoints" in prompts[rows[0]] and prompts[rows[0]]["waypoints"] is not None:
                waypoints = torch.tensor([prompts[i]["waypoints"] for i in rows], dtype=torch.float64)
            out = self.score(emb, q, goal, tokens, waypoints)
            for j, i in enumerate(rows):
                rewards[i] = float(out["reward"][j])
            for key in ("success", "pos_err", "limit", "jerk"):
                parts.setdefault(key, []).extend(out[key].tolist())
        log_metric = columns.get("log_metric")
        if log_metric is not None:
            for key, values in parts.items():
                log_metric(f"reach/{key}", sum(values) / len(values))
        return rewards


class WorldModelReward:
    """Score each path by the model's own world head: minus the distance (m) between the end-effector
    positions it imagines at the end of the chunk and the goal positions (``imagine=True`` without
    executing anything; cheap, and usable where no simulator exists)."""

    def __init__(self, model: WamForActionPrediction, processor: WamProcessor, embodiments: dict[str, Embodiment] | None = None) -> None:
        if model.config.max_keypoints:
            raise InvalidActionError("WorldModelReward scores the v1 world head (end-effector positions); this model predicts keypoint flow")
        self.model, self.processor = model, processor
        self.embodiments = dict(embodiments or {})

    @torch.no_grad()
    def __call__(self, prompts: list[dict[str, Any]], completions: list[Any], completion_ids: list[list[int]], **columns: Any) -> list[float]:
        rewards = [0.0] * len(prompts)
        device = next(self.model.parameters()).device
        for name, rows in group_by_robot(prompts).items():
            emb = self.embodiments[name] if name in self.embodiments else self.processor.resolve(name)
            q, goal = observation_tensors(prompts, rows)
            batch = dict(self.processor({"state": q, "goal": goal}, emb))
            batch.pop("action_decoder")
            dims, steps = batch.pop("action_dims").to(device), batch.pop("action_steps").to(device)
            tokens = torch.tensor([list(completion_ids[i])[: dims.shape[1]] for i in rows], dtype=torch.long, device=device)
            bos = torch.full_like(tokens[:, :1], self.model.config.bos_token_id)
            out = self.model(torch.cat([bos, tokens[:, :-1]], 1), dims, steps, **{k: v.to(device) for k, v in batch.items()})
            world = self.model.world_from_hidden(out.last_hidden_state, steps)[:, -1].double().cpu()  # [n, 3 * max_arms]
            n_arms = len(emb.arms)
            target = goal.reshape(len(rows), n_arms, 9)[..., :3]
            dist = (world[:, : 3 * n_arms].reshape(len(rows), n_arms, 3) - target).norm(dim=-1).mean(-1)
            for j, i in enumerate(rows):
                rewards[i] = -float(dist[j])
        return rewards
