"""Batched inverse kinematics: Levenberg-Marquardt damped least squares with joint limits and restarts.

The damping follows the error (λ = ½|e|² + λ_min, Sugihara 2011), which converges quickly far
from the target and behaves like Gauss-Newton near it. Only samples that have not converged
are iterated (the active set shrinks), and a sample that exhausts ``max_iters`` is re-seeded
uniformly within the joint limits, up to ``restarts`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InvalidActionError
from .rotations import matrix_to_axis_angle

if TYPE_CHECKING:
    from .chain import KinematicChain

_MAX_STEP = 0.5  # rad (or m) per joint per iteration: a trust region against wild Gauss-Newton steps
_LAMBDA_MIN = 1e-6
_LANE_FLOOR = 128  # below this many running solves, unsolved targets get parallel restart lanes


@dataclass
class IKResult:
    q: Tensor  # [..., n] best solution found (within limits)
    success: Tensor  # [...] bool: pos_err <= tol_pos and rot_err <= tol_rot
    pos_err: Tensor  # [...] metres
    rot_err: Tensor  # [...] radians


def pose_error(T: Tensor, T_target: Tensor) -> Tensor:
    """Twist-like error ``[..., 6]`` (position, rotation vector) taking ``T`` to ``T_target``, base frame."""
    e_pos = T_target[..., :3, 3] - T[..., :3, 3]
    e_rot = matrix_to_axis_angle(T_target[..., :3, :3] @ T[..., :3, :3].transpose(-1, -2))
    return torch.cat([e_pos, e_rot], -1)


def _lm_step(J: Tensor, e: Tensor, lam: Tensor, eye: Tensor) -> Tensor:
    """Solve ``(J^T J + λ I) dq = J^T e`` for a batch."""
    JT = J.transpose(-1, -2)
    return torch.linalg.solve(JT @ J + lam[:, None, None] * eye, JT @ e[..., None])[..., 0]


def inverse_kinematics(
    chain: "KinematicChain",
    T_target: Tensor,
    q0: Tensor | None = None,
    max_iters: int = 25,
    tol_pos: float = 1e-3,
    tol_rot: float = 1e-3,
    restarts: int = 30,
    seed: int | None = None,
) -> IKResult:
    """Solve ``chain.forward_kinematics(q) ≈ T_target`` for every pose in the batch ``T_target[..., 4, 4]``."""
    T_target = torch.as_tensor(T_target)
    if T_target.shape[-2:] != (4, 4):
        raise InvalidActionError(f"T_target must be [..., 4, 4], got {tuple(T_target.shape)}")
    if not T_target.is_floating_point():
        T_target = T_target.to(torch.float64)
    if not torch.isfinite(T_target).all():
        raise InvalidActionError("T_target contains NaN or infinite values")
    batch = T_target.shape[:-2]
    dtype, device = T_target.dtype, T_target.device
    targets = T_target.reshape(-1, 4, 4)
    B, n = targets.shape[0], chain.dof
    gen = torch.Generator().manual_seed(seed) if seed is not None else None

    def random_q(count: int) -> Tensor:
        return chain.sample(count, generator=gen, dtype=dtype).to(device)

    if q0 is None:
        q = random_q(B)
    else:
        q = chain.clamp(torch.as_tensor(q0, dtype=dtype, device=device).expand(*batch, n).reshape(B, n).clone())
    lo = chain.lower.to(dtype=dtype, device=device)
    hi = chain.upper.to(dtype=dtype, device=device)
    eye = torch.eye(n, dtype=dtype, device=device)

    pos_err = torch.full((B,), float("inf"), dtype=dtype, device=device)
    rot_err = torch.full((B,), float("inf"), dtype=dtype, device=device)
    success = torch.zeros(B, dtype=torch.bool, device=device)
    best_q = q.clone()
    best_cost = torch.full((B,), float("inf"), dtype=dtype, device=device)
    seeds_left = torch.full((B,), restarts, dtype=torch.long, device=device)
    # Lanes: one running solve each, for target ``owner``. A target may hold several lanes once
    # the batch has thinned out, so hard targets spend their restarts in parallel, not in series.
    owner = torch.arange(B, device=device)
    iters = torch.zeros(B, dtype=torch.long, device=device)
    lane_floor = min(_LANE_FLOOR, B * (restarts + 1))

    for _ in range((restarts + 1) * max_iters + 1):
        if owner.numel() == 0:
            break
        T, J = chain.forward_kinematics_with_jacobian(q)
        e = pose_error(T, targets[owner])
        pe, re = e[:, :3].norm(dim=-1), e[:, 3:].norm(dim=-1)
        solved = (pe <= tol_pos) & (re <= tol_rot)
        # Any solved iterate beats any unsolved one, so the returned q always matches ``success``.
        # (a solved cost is at most 2, an unsolved one above 1 + 2).
        cost = pe / tol_pos + re / tol_rot + torch.where(solved, 0.0, 2.0)
        lowest = best_cost.scatter_reduce(0, owner, cost, "amin")
        win = (cost < best_cost[owner]) & (cost == lowest[owner])
        idx = owner[win]
        best_cost[idx], best_q[idx], pos_err[idx], rot_err[idx] = cost[win], q[win], pe[win], re[win]
        success[owner[solved]] = True

        # Levenberg-Marquardt step; joints pinned at a limit and pushed outward are taken out of
        # the Jacobian and the step re-solved (a clamp alone would stall there).
        lam = 0.5 * (e * e).sum(-1) + _LAMBDA_MIN
        dq = _lm_step(J, e, lam, eye)
        pinned = ((q <= lo) & (dq < 0)) | ((q >= hi) & (dq > 0))
        if pinned.any():
            free = (~pinned).to(dtype)
            dq = _lm_step(J * free[:, None, :], e, lam, eye) * free
        dq = dq * (_MAX_STEP / dq.abs().amax(-1, keepdim=True).clamp_min(_MAX_STEP))
        q = torch.maximum(torch.minimum(q + dq, hi), lo)
        iters += 1

        # Drop lanes of solved targets; re-seed exhausted lanes while their target has seeds left.
        keep = ~success[owner]
        q, owner, iters = q[keep], owner[keep], iters[keep]
        stale = iters >= max_iters
        if stale.any():
            reseed = stale & (seeds_left[owner] > 0)
            seeds_left.index_add_(0, owner[reseed], -torch.ones_like(owner[reseed]))
            seeds_left.clamp_(min=0)  # two lanes of one target may re-seed in the same step
            q[reseed] = random_q(int(reseed.sum()))
            iters[reseed] = 0
            live = ~stale | reseed
            q, owner, iters = q[live], owner[live], iters[live]
        # Widen: while few lanes run, give each unsolved target with seeds left one more lane.
        if 0 < owner.numel() < lane_floor:
            extra = torch.unique(owner)
            extra = extra[seeds_left[extra] > 0][: lane_floor - owner.numel()]
            if extra.numel():
                seeds_left[extra] -= 1
                q = torch.cat([q, random_q(extra.numel())])
                owner = torch.cat([owner, extra])
                iters = torch.cat([iters, torch.zeros_like(extra)])

    return IKResult(
        q=best_q.reshape(*batch, n),
        success=success.reshape(batch),
        pos_err=pos_err.reshape(batch),
        rot_err=rot_err.reshape(batch),
    )
