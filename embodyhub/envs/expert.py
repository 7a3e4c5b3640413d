"""Scripted experts: joint trajectories through end-effector targets, solved with the library's own IK.

Each target is solved per arm with ``chain.inverse_kinematics`` seeded at the previous
configuration (so the solution stays near the robot), revolute joints are moved to the
2π-equivalent angle nearest that seed, and consecutive configurations are joined by
minimum-jerk segments. A segment lasts at least the requested number of steps and longer when
a joint's velocity limit needs it (peak minimum-jerk speed is 15/8 of the mean), so commanding
the plan never triggers the velocity clamp of ``Embodiment.clamp``. The data generator and the
tests use these plans as demonstrations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..embodiment import Embodiment
from ..errors import InvalidActionError
from ..kinematics import KinematicChain, pose_error

_PEAK_SPEED = 15 / 8  # peak / mean speed of the minimum-jerk profile
_MAX_PROPORTIONAL_STEPS = 400


@dataclass
class ExpertPlan:
    """A batch of expert trajectories; sample ``b`` arrives after ``lengths[b]`` steps and holds after."""

    q: Tensor  # [B, T, dof] configuration to command at steps 1..T (q_start excluded)
    lengths: Tensor  # [B] long: steps sample b needs (<= T)
    reached: Tensor  # [B] bool: IK solved every target of the sample within the IK tolerances


def min_jerk(s: Tensor) -> Tensor:
    """Minimum-jerk profile ``10s³ - 15s⁴ + 6s⁵`` on ``s`` clamped to [0, 1]."""
    s = s.clamp(0, 1)
    return s**3 * (10 - 15 * s + 6 * s * s)


def _nearest_equivalent(chain: KinematicChain, q: Tensor, q_ref: Tensor) -> Tensor:
    """``q`` with revolute joints shifted by multiples of 2π toward ``q_ref`` where the limits allow
    and the pose is unchanged (a mimic follower with a non-unit multiplier would move)."""
    revolute = torch.tensor([chain.robot.joints[n].type in ("revolute", "continuous") for n in chain.joint_names])
    turns = torch.round((q_ref - q) / (2 * math.pi)) * revolute.to(q)
    shifted = q + 2 * math.pi * turns
    inside = (shifted >= chain.lower.to(q)) & (shifted <= chain.upper.to(q))
    shifted = torch.where(inside, shifted, q)
    err = pose_error(chain.forward_kinematics(shifted), chain.forward_kinematics(q)).norm(dim=-1)
    return torch.where((err < 1e-9)[..., None], shifted, q)


def _gripper_targets(embodiment: Embodiment, batch: int, generator: torch.Generator | None) -> Tensor:
    """``[B, n_grippers]``: each gripper fully open or fully closed, at random."""
    lower = embodiment.lower[embodiment.gripper_indices]
    upper = embodiment.upper[embodiment.gripper_indices]
    opened = torch.rand(batch, len(embodiment.grippers), generator=generator, dtype=torch.float64) < 0.5
    return torch.where(opened, upper, lower)


def _segment_steps(embodiment: Embodiment, delta: Tensor, min_steps: int) -> Tensor:
    """Steps ``[B]`` a minimum-jerk move by ``delta [B, dof]`` needs within the velocity limits."""
    per_step = embodiment.velocity_limit.to(delta) * embodiment.dt
    need = (_PEAK_SPEED * delta.abs() / per_step).amax(-1)
    return torch.ceil(need - 1e-9).clamp(min=min_steps).to(torch.long)


def _solve_knots(
    embodiment: Embodiment,
    q_start: Tensor,
    waypoints: Tensor,
    gripper: Tensor,
    generator: torch.Generator | None,
    tol_pos: float,
    tol_rot: float,
) -> tuple[list[Tensor], Tensor]:
    """IK configuration for each waypoint, each seeded at the previous one, and whether all were reached."""
    batch, n_targets = waypoints.shape[:2]
    knots, reached, q_prev = [], torch.ones(batch, dtype=torch.bool), q_start
    for k in range(n_targets):
        q_next = q_prev.clone()
        for i, (chain, idx) in enumerate(zip(embodiment.chains, embodiment.arm_indices)):
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
            result = chain.inverse_kinematics(
                waypoints[:, k, i], q0=q_next[:, idx], tol_pos=tol_pos, tol_rot=tol_rot, seed=seed
            )
            q_next[:, idx] = _nearest_equivalent(chain, result.q, q_next[:, idx])
        if k == 0:
            q_next[:, embodiment.gripper_indices] = torch.as_tensor(gripper, dtype=torch.float64)
        # Check every arm on the final knot: arms that share joints are solved in turn.
        for i, (chain, idx) in enumerate(zip(embodiment.chains, embodiment.arm_indices)):
            err = pose_error(chain.forward_kinematics(q_next[:, idx]), waypoints[:, k, i])
            reached &= (err[:, :3].norm(dim=-1) <= tol_pos) & (err[:, 3:].norm(dim=-1) <= tol_rot)
        knots.append(q_next)
        q_prev = q_next

    return knots, reached


def plan_trace(
    embodiment: Embodiment,
    q_start: Tensor,
    waypoints: Tensor,
    steps: int = 30,
    segment_steps: int = 10,
    generator: torch.Generator | None = None,
    gripper: Tensor | None = None,
    tol_pos: float = 1e-3,
    tol_rot: float = 1e-3,
) -> ExpertPlan:
    """Expert joint trajectory from ``q_start [B, dof]`` through ``waypoints [B, K, n_arms, 4, 4]`` in order.

    The move to the first waypoint takes at least ``steps`` steps, each following one at least
    ``segment_steps``; both grow where a velocity limit needs it (so ``lengths`` may exceed them).
    Grippers go to ``gripper [B, n_grippers]`` (native joint values) during the first move, or to
    a random fully open / fully closed target when ``gripper`` is None.
    """
    q_start = embodiment.check_q(q_start, "q_start").to(torch.float64)
    waypoints = torch.as_tensor(waypoints, dtype=torch.float64)
    n_arms = len(embodiment.chains)
    if q_start.dim() != 2 or waypoints.shape != (q_start.shape[0], waypoints.shape[1], n_arms, 4, 4):
        raise InvalidActionError(
            f"expected q_start [B, {embodiment.dof}] and waypoints [B, K, {n_arms}, 4, 4], "
            f"got {tuple(q_start.shape)} and {tuple(waypoints.shape)}"
        )
    if waypoints.shape[1] < 1:
        raise InvalidActionError("waypoints must hold at least one target per sample")
    if steps < 1 or segment_steps < 1:
        raise ValueError(f"steps and segment_steps must be >= 1, got {steps} and {segment_steps}")
    batch, n_targets = waypoints.shape[:2]
    if gripper is None:
        gripper = _gripper_targets(embodiment, batch, generator)

    knots, reached = _solve_knots(embodiment, q_start, waypoints, gripper, generator, tol_pos, tol_rot)
    deltas = torch.diff(torch.stack([q_start] + knots, 1), dim=1)  # [B, K, dof]
    durations = torch.stack(
        [_segment_steps(embodiment, deltas[:, k], steps if k == 0 else segment_steps) for k in range(n_targets)], 1
    )
    ends = durations.cumsum(1)
    starts = ends - durations
    lengths = ends[:, -1]
    t = torch.arange(1, int(lengths.max()) + 1, dtype=torch.float64)
    progress = min_jerk((t[None, None, :] - starts[..., None]) / durations[..., None])  # [B, K, T]
    q = q_start[:, None, :] + torch.einsum("bkt,bkd->btd", progress, deltas)
    return ExpertPlan(q=q, lengths=lengths, reached=reached)


def plan_reach(
    embodiment: Embodiment,
    q_start: Tensor,
    goal: Tensor,
    steps: int = 30,
    generator: torch.Generator | None = None,
    gripper: Tensor | None = None,
    profile: str = "min_jerk",
    gain: float = 0.2,
) -> ExpertPlan:
    """Expert trajectory from ``q_start [B, dof]`` to an IK solution of ``goal [B, n_arms, 4, 4]`` near the start.

    ``profile="min_jerk"``: one minimum-jerk move lasting ``steps`` steps or longer where a velocity
    limit needs it. ``profile="proportional"``: each step closes ``gain`` of the remaining joint
    distance, capped by the velocity limits, until within 1e-3; the next command then depends only
    on the current state and the goal (no hidden phase), which is what a reactive policy can learn.
    """
    goal = torch.as_tensor(goal)
    if profile == "min_jerk":
        return plan_trace(embodiment, q_start, goal[:, None], steps, steps, generator, gripper)
    if profile != "proportional":
        raise ValueError(f"profile must be 'min_jerk' or 'proportional', got {profile!r}")
    if not 0 < gain <= 1:
        raise ValueError(f"gain must be in (0, 1], got {gain}")
    q_start = embodiment.check_q(q_start, "q_start").to(torch.float64)
    goal = goal.to(torch.float64)
    if gripper is None:
        gripper = _gripper_targets(embodiment, q_start.shape[0], generator)
    knots, reached = _solve_knots(embodiment, q_start, goal[:, None], gripper, generator, 1e-3, 1e-3)
    target, per_step = knots[0], embodiment.velocity_limit.to(q_start) * embodiment.dt
    q, out = q_start, []
    for _ in range(_MAX_PROPORTIONAL_STEPS):
        q = q + torch.maximum(torch.minimum(gain * (target - q), per_step), -per_step)
        out.append(q)
        if ((target - q).abs() < 1e-3).all():
            break
    plan = torch.stack(out, 1)
    arrived = ((target[:, None] - plan).abs() < 1e-3).all(-1)
    lengths = torch.where(arrived.any(1), arrived.long().argmax(1) + 1, torch.full_like(arrived[:, 0], plan.shape[1], dtype=torch.long))
    return ExpertPlan(q=plan, lengths=lengths, reached=reached & arrived[:, -1])
