"""Kinematic task environments scored by forward kinematics: reach a pose, trace a path.

Both are batched torch environments in float64 over an ``Embodiment``: a command is a native
joint vector, clamped to the URDF position limits and to the velocity limits over one control
step, and the robot is exactly where the clamped command puts it (no dynamics yet). A task is a
sequence of end-effector waypoints per arm (one for reach), each made by FK of a configuration
sampled within the joint limits, so every target is reachable. Goals are poses of each arm's tip
in that arm's base frame, like the canonical action space.

An episode ends (``done``) on success or after ``max_steps``; stepping on after that is allowed
(success stays latched), so a batch runs until its slowest member is done.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..embodiment import Embodiment
from ..errors import InvalidActionError
from ..kinematics import pose_error
from ..kinematics.chain import finite_range, sample_uniform
from ..kinematics.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix

Policy = Callable[[dict[str, Tensor]], Tensor]


def goal_vector(goal: Tensor) -> Tensor:
    """Poses ``[..., n_arms, 4, 4]`` -> ``[..., n_arms * 9]``: per arm position (3) then 6D rotation (6)."""
    per_arm = torch.cat([goal[..., :3, 3], matrix_to_rotation_6d(goal[..., :3, :3])], -1)
    return per_arm.flatten(-2)


def goal_poses(vector: Tensor) -> Tensor:
    """Inverse of ``goal_vector``: ``[..., n_arms * 9]`` -> poses ``[..., n_arms, 4, 4]`` (rotation
    re-orthonormalized), e.g. to rebuild targets from a dataset's ``observation.goal``."""
    vector = torch.as_tensor(vector)
    per_arm = vector.reshape(*vector.shape[:-1], vector.shape[-1] // 9, 9)
    T = torch.zeros(*per_arm.shape[:-1], 4, 4, dtype=vector.dtype, device=vector.device)
    T[..., :3, :3] = rotation_6d_to_matrix(per_arm[..., 3:])
    T[..., :3, 3] = per_arm[..., :3]
    T[..., 3, 3] = 1
    return T


class ReachEnv:
    """Move every arm's end effector to a goal pose (``pos_tol`` metres and ``rot_tol`` radians).

    Start and goal configurations are uniform within the joint limits shrunk by ``goal_margin``
    of each range at both ends; with ``goal_distance`` (radians or metres per joint) the goal
    configuration is instead the start plus a uniform offset of at most that much, for short reaches.
    """

    def __init__(
        self,
        embodiment: Embodiment,
        batch_size: int = 1,
        pos_tol: float = 0.02,
        rot_tol: float = 0.1,
        max_steps: int = 50,
        seed: int | None = None,
        goal_margin: float = 0.1,
        goal_distance: float | None = None,
    ) -> None:
        if batch_size < 1 or max_steps < 1:
            raise ValueError(f"batch_size and max_steps must be >= 1, got {batch_size} and {max_steps}")
        if not 0 <= goal_margin < 0.5:
            raise ValueError(f"goal_margin must be in [0, 0.5), got {goal_margin}")
        if goal_distance is not None and not goal_distance > 0:
            raise ValueError(f"goal_distance must be positive, got {goal_distance}")
        self.embodiment = embodiment
        self.batch_size, self.max_steps = batch_size, max_steps
        self.pos_tol, self.rot_tol = pos_tol, rot_tol
        self.goal_distance = goal_distance
        lo, hi = finite_range(embodiment.lower, embodiment.upper)
        self.lower, self.upper = lo + goal_margin * (hi - lo), hi - goal_margin * (hi - lo)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        # Episode state, set by reset(): configuration, waypoints [B, K, n_arms, 4, 4], progress.
        self.q = torch.empty(0)
        self.waypoints = torch.empty(0)
        self.waypoint_index = torch.empty(0, dtype=torch.long)
        self.steps = torch.empty(0, dtype=torch.long)
        self._ee = torch.empty(0)

    # ------------------------------------------------------------------ task definition
    def _sample(self, n: int) -> Tensor:
        return sample_uniform(self.lower, self.upper, n, self.generator)

    def _goal_configuration(self, q_start: Tensor) -> Tensor:
        """``[B, dof]``: the configuration whose end-effector poses are the goal."""
        if self.goal_distance is None:
            return self._sample(q_start.shape[0])
        offset = (2 * torch.rand(q_start.shape, generator=self.generator, dtype=torch.float64) - 1) * self.goal_distance
        return torch.maximum(torch.minimum(q_start + offset, self.upper), self.lower)

    def _waypoint_configurations(self, q_start: Tensor) -> Tensor:
        """``[B, K, dof]`` configurations whose end-effector poses are the waypoints, in order."""
        return self._goal_configuration(q_start)[:, None]

    # ------------------------------------------------------------------ environment API
    @property
    def n_arms(self) -> int:
        return len(self.embodiment.chains)

    @property
    def goal(self) -> Tensor:
        """Current target ``[B, n_arms, 4, 4]`` (the last waypoint once all are reached)."""
        k = self.waypoint_index.clamp(max=self.waypoints.shape[1] - 1)
        return self.waypoints[torch.arange(self.batch_size), k]

    @property
    def success(self) -> Tensor:
        """``[B]`` bool: every waypoint reached, in order."""
        return self.waypoint_index >= self.waypoints.shape[1]

    def ee_poses(self, q: Tensor) -> Tensor:
        """End-effector pose of each arm in its base frame, ``[..., n_arms, 4, 4]``."""
        emb = self.embodiment
        return torch.stack([c.forward_kinematics(q[..., idx]) for c, idx in zip(emb.chains, emb.arm_indices)], -3)

    def errors(self, ee: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Position (m) and rotation (rad) errors ``[..., n_arms]`` between poses."""
        err = pose_error(ee, target)
        return err[..., :3].norm(dim=-1), err[..., 3:].norm(dim=-1)

    def _obs(self) -> dict[str, Tensor]:
        return {"q": self.q.clone(), "goal": self.goal, "ee": self._ee.clone()}

    def reset(self, seed: int | None = None) -> dict[str, Tensor]:
        """New episodes for the whole batch: ``{"q" [B, dof], "goal" [B, n_arms, 4, 4], "ee" [B, n_arms, 4, 4]}``."""
        if seed is not None:
            self.generator.manual_seed(seed)
        q = self._sample(self.batch_size)
        return self.reset_to(q, self.ee_poses(self._waypoint_configurations(q)))

    def reset_to(self, q: Tensor, waypoints: Tensor) -> dict[str, Tensor]:
        """Start episodes from given configurations ``q [B, dof]`` and targets: ``[B, K, n_arms, 4, 4]``
        waypoints, or one goal ``[B, n_arms, 4, 4]`` (to replay recorded episodes or roll out from them)."""
        q = self.embodiment.check_q(q, "q").to(torch.float64)
        waypoints = torch.as_tensor(waypoints, dtype=torch.float64)
        if waypoints.dim() == 4:
            waypoints = waypoints[:, None]
        expected = (self.batch_size, waypoints.shape[1], self.n_arms, 4, 4)
        if q.shape != (self.batch_size, self.embodiment.dof) or waypoints.shape != expected:
            raise InvalidActionError(
                f"reset_to needs q [{self.batch_size}, {self.embodiment.dof}] and waypoints {list(expected)}, "
                f"got {tuple(q.shape)} and {tuple(waypoints.shape)}"
            )
        self.q, self.waypoints = q.clone(), waypoints.clone()
        self.waypoint_index = torch.zeros(self.batch_size, dtype=torch.long)
        self.steps = torch.zeros(self.batch_size, dtype=torch.long)
        self._ee = self.ee_poses(self.q)
        return self._obs()

    def step(self, q_cmd: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor, dict[str, Tensor]]:
        """Command ``q_cmd [B, dof]``; returns ``(obs, reward [B], done [B], info)``.

        ``info``: ``pos_err``/``rot_err [B, n_arms]`` against the waypoint targeted before this step,
        ``success [B]``, ``steps [B]``, ``waypoints_reached [B]``. Reward: minus the mean position
        error, plus 1/K per waypoint reached this step (so +1 on a reach success).
        """
        emb = self.embodiment
        if self.waypoints.numel() == 0:
            raise RuntimeError("call reset() before step()")
        q_cmd = emb.check_q(q_cmd, "q_cmd")
        if q_cmd.shape != (self.batch_size, emb.dof):
            raise InvalidActionError(f"q_cmd has shape {tuple(q_cmd.shape)}; expected [{self.batch_size}, {emb.dof}]")
        self.q = emb.clamp(q_cmd.to(torch.float64), self.q)
        self.steps = self.steps + 1
        self._ee = self.ee_poses(self.q)
        pos_err, rot_err = self.errors(self._ee, self.goal)
        before = self.waypoint_index.clone()
        p, r = pos_err, rot_err
        for _ in range(self.waypoints.shape[1]):  # consecutive waypoints within tolerance are all passed
            hit = ~self.success & (p <= self.pos_tol).all(-1) & (r <= self.rot_tol).all(-1)
            if not hit.any():
                break
            self.waypoint_index = self.waypoint_index + hit.long()
            p, r = self.errors(self._ee, self.goal)
        reached = (self.waypoint_index - before).to(torch.float64) / self.waypoints.shape[1]
        reward = -pos_err.mean(-1) + reached
        success = self.success
        done = success | (self.steps >= self.max_steps)
        info = {
            "pos_err": pos_err,
            "rot_err": rot_err,
            "success": success,
            "steps": self.steps.clone(),
            "waypoints_reached": self.waypoint_index.clone(),
        }
        return self._obs(), reward, done, info

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, policy: Policy, episodes: int, seed: int | None = None) -> dict[str, Any]:
        """Run ``episodes`` episodes (batches of ``batch_size``) with ``policy(obs)``.

        The policy returns ``[B, dof]`` or a chunk ``[B, H, dof]``; a chunk is executed step by
        step and the policy is called again when it is used up. Each episode is scored when it
        first reports done. Returns the success rate, mean final position/rotation error and step
        count, per-episode values, and per-step end-effector positions (``ee_trajectories``: one
        ``[steps + 1, n_arms, 3]`` tensor per episode) with the waypoint positions, for plots.
        """
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        success, pos_err, rot_err, steps, trajectories, waypoints = [], [], [], [], [], []
        for b in range(math.ceil(episodes / self.batch_size)):
            out = self.run(policy, self.reset(seed if b == 0 else None))
            trajectories += [out["path"][i, : int(out["steps"][i]) + 1] for i in range(self.batch_size)]
            success.append(out["success"])
            pos_err.append(out["pos_err"])
            rot_err.append(out["rot_err"])
            steps.append(out["steps"])
            waypoints.append(self.waypoints[..., :3, 3])
        success_t = torch.cat(success)[:episodes]
        pos_t, rot_t = torch.cat(pos_err)[:episodes], torch.cat(rot_err)[:episodes]
        steps_t = torch.cat(steps)[:episodes]
        return {
            "episodes": episodes,
            "success_rate": float(success_t.double().mean()),
            "pos_err": float(pos_t.mean()),
            "rot_err": float(rot_t.mean()),
            "steps": float(steps_t.double().mean()),
            "success": success_t,
            "final_pos_err": pos_t,
            "final_rot_err": rot_t,
            "episode_steps": steps_t,
            "ee_trajectories": trajectories[:episodes],
            "waypoints": torch.cat(waypoints)[:episodes],
        }

    def run(self, policy: Policy, obs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run the batch's episodes from ``obs`` (what ``reset``/``reset_to`` returned) until each reports
        done, calling ``policy(obs)`` whenever its last chunk is used up. Per episode, taken when it first
        reports done: ``success [B]``, ``pos_err``/``rot_err [B, n_arms]``, ``steps [B]``; and ``path
        [B, steps + 1, n_arms, 3]``, every step's end-effector positions."""
        path = [obs["ee"][..., :3, 3]]
        finished = torch.zeros(self.batch_size, dtype=torch.bool)
        pos = torch.zeros(self.batch_size, self.n_arms, dtype=torch.float64)
        rot = torch.zeros_like(pos)
        success = torch.zeros(self.batch_size, dtype=torch.bool)
        steps = torch.zeros(self.batch_size, dtype=torch.long)
        chunk, used = torch.empty(self.batch_size, 0, self.embodiment.dof), 0
        while not finished.all():
            if used >= chunk.shape[1]:
                chunk, used = self._as_chunk(policy(obs)), 0
            obs, _, done, info = self.step(chunk[:, used])
            used += 1
            path.append(obs["ee"][..., :3, 3])
            new = done & ~finished
            pos[new], rot[new] = info["pos_err"][new], info["rot_err"][new]
            success[new], steps[new] = info["success"][new], info["steps"][new]
            finished |= done
        return {"success": success, "pos_err": pos, "rot_err": rot, "steps": steps, "path": torch.stack(path, 1)}

    def _as_chunk(self, action: Tensor) -> Tensor:
        action = torch.as_tensor(action)
        if action.dim() == 2:
            action = action[:, None]
        if action.dim() != 3 or action.shape[0] != self.batch_size or action.shape[1] < 1:
            raise InvalidActionError(
                f"policy returned shape {tuple(action.shape)}; "
                f"expected [{self.batch_size}, dof] or [{self.batch_size}, H, dof]"
            )
        return action


class TraceEnv(ReachEnv):
    """Pass every arm's end effector through ``n_waypoints`` poses in order.

    The waypoints are FK of a straight joint-space segment of at most ``path_span`` (radians or
    metres) per joint, starting at a configuration drawn like a reach goal: a short, smooth,
    reachable curve in the workspace. ``goal`` is the current waypoint; each waypoint is reached
    within the same tolerances as a reach.
    """

    def __init__(
        self,
        embodiment: Embodiment,
        batch_size: int = 1,
        n_waypoints: int = 5,
        path_span: float = 0.3,
        pos_tol: float = 0.02,
        rot_tol: float = 0.1,
        max_steps: int = 100,
        seed: int | None = None,
        goal_margin: float = 0.1,
        goal_distance: float | None = None,
    ) -> None:
        if n_waypoints < 2 or not path_span > 0:
            raise ValueError(f"need n_waypoints >= 2 and path_span > 0, got {n_waypoints} and {path_span}")
        self.n_waypoints, self.path_span = n_waypoints, path_span
        super().__init__(embodiment, batch_size, pos_tol, rot_tol, max_steps, seed, goal_margin, goal_distance)

    def _waypoint_configurations(self, q_start: Tensor) -> Tensor:
        first = self._goal_configuration(q_start)
        offset = (2 * torch.rand(first.shape, generator=self.generator, dtype=torch.float64) - 1) * self.path_span
        last = torch.maximum(torch.minimum(first + offset, self.upper), self.lower)
        s = torch.linspace(0, 1, self.n_waypoints, dtype=torch.float64)[None, :, None]
        return first[:, None] + s * (last - first)[:, None]
