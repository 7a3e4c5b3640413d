"""KinematicAdapter: native joint vectors <-> canonical actions, through limits and FK/IK.

Works with zero data: joint slots are the URDF limits mapped to [-1, 1], end-effector slots are
FK in each arm's base frame, the gripper is its limit range mapped to [0 closed, 1 open]. The
way back takes joint slots when the source filled them and otherwise solves IK from the
end-effector slots; whatever comes out is clamped to the URDF position limits and, when the
current joint state is known, to the velocity limits over one control step.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..errors import InvalidActionError
from ..kinematics.chain import finite_range
from ..kinematics.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix
from .action_space import CanonicalActionSpace
from .spec import Embodiment

Mode = Literal["auto", "joints", "ee"]


class KinematicAdapter:
    """Converts between an embodiment's native joint space and the canonical action space."""

    def __init__(self, embodiment: Embodiment, space: CanonicalActionSpace | None = None) -> None:
        self.embodiment = embodiment
        self.space = space or CanonicalActionSpace()
        self.space.check(embodiment)
        self.mask = self.space.mask(embodiment)
        # Joint normalization range: URDF limits, [-pi, pi] for continuous joints.
        self._lo, self._hi = finite_range(embodiment.lower, embodiment.upper)
        self._continuous = ~(torch.isfinite(embodiment.lower) & torch.isfinite(embodiment.upper))
        self._open = torch.tensor(
            [float(embodiment.upper[i] if g.open == "upper" else embodiment.lower[i])
             for g, i in zip(embodiment.grippers, embodiment.gripper_indices.tolist())],
            dtype=torch.float64,
        )
        self._closed = torch.tensor(
            [float(embodiment.lower[i] if g.open == "upper" else embodiment.upper[i])
             for g, i in zip(embodiment.grippers, embodiment.gripper_indices.tolist())],
            dtype=torch.float64,
        )

    def _normalize(self, q: Tensor) -> Tensor:
        lo, hi = self._lo.to(q), self._hi.to(q)
        q = torch.where(self._continuous.to(q.device), torch.remainder(q + math.pi, 2 * math.pi) - math.pi, q)
        span = hi - lo
        return torch.where(span > 0, 2 * (q - lo) / span.clamp_min(1e-12) - 1, torch.zeros_like(q))

    def _denormalize(self, x: Tensor, idx: Tensor) -> Tensor:
        lo, hi = self._lo[idx].to(x), self._hi[idx].to(x)
        return lo + (x.clamp(-1, 1) + 1) * 0.5 * (hi - lo)

    def to_canonical(self, q_native: Tensor) -> tuple[Tensor, Tensor]:
        """``q[..., dof]`` -> ``(x[..., D], mask[D])``; differentiable in ``q``."""
        emb, space = self.embodiment, self.space
        q = emb.check_q(q_native, "q_native")
        qn = self._normalize(q)
        positions: list[range] = []
        values: list[Tensor] = []
        for i, (chain, idx) in enumerate(zip(emb.chains, emb.arm_indices)):
            T = chain.forward_kinematics(q[..., idx])
            # ee_pos (3), ee_rot6d (6), gripper (1), joints: adjacent slots, written in one range
            positions.append(range(space.slots[f"arm{i}.ee_pos"].start, space.slots[f"arm{i}.joints"].start + chain.dof))
            gripper = [g for g in emb.grippers if g.arm == i]
            if gripper:
                k = emb.grippers.index(gripper[0])
                opened = (q[..., emb.gripper_indices[k]] - self._closed[k].to(q)) / (self._open[k] - self._closed[k]).to(q)
            else:
                opened = q.new_zeros(q.shape[:-1])
            values += [T[..., :3, 3], matrix_to_rotation_6d(T[..., :3, :3]), opened[..., None], qn[..., idx]]
        flat = torch.tensor([p for r in positions for p in r], device=q.device)
        x = q.new_zeros(*q.shape[:-1], space.dim).index_copy(-1, flat, torch.cat(values, -1))
        return x, self.mask.clone()

    def from_canonical(
        self,
        x: Tensor,
        q_current: Tensor | None = None,
        mode: Mode = "auto",
        source_mask: Tensor | None = None,
        clamp_velocity: bool = True,
        **ik_kwargs: object,
    ) -> Tensor:
        """``x[..., D]`` -> native ``q[..., dof]``, clamped to position (and, with ``q_current``, velocity) limits.

        ``mode="auto"`` uses each arm's joint slots when ``source_mask`` (default: this robot's own mask)
        marks them filled, else IK on the end-effector slots seeded at ``q_current`` (or mid-range).
        Slots the source did not fill keep ``q_current``. ``clamp_velocity=False`` uses ``q_current``
        only as that seed (for offline plans, not command streams).
        """
        emb, space = self.embodiment, self.space
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.to(torch.float64)
        if x.shape[-1:] != (space.dim,):
            raise InvalidActionError(f"x has shape {tuple(x.shape)}; the canonical space has dim {space.dim}")
        if not torch.isfinite(x).all():
            raise InvalidActionError("canonical action contains NaN or infinite values")
        if mode not in ("auto", "joints", "ee"):
            raise ValueError(f"mode must be 'auto', 'joints' or 'ee', got {mode!r}")
        if q_current is not None:
            q_current = emb.check_q(q_current, "q_current").to(x)
        source = self.mask if source_mask is None else torch.as_tensor(source_mask, dtype=torch.bool)
        mid = (self._lo + self._hi).to(x) / 2
        q = torch.where(self._continuous.to(x.device), torch.zeros_like(mid), mid).expand(*x.shape[:-1], emb.dof).clone()
        if q_current is not None:
            q = q_current.expand_as(q).clone()
        for i, (chain, idx) in enumerate(zip(emb.chains, emb.arm_indices)):
            js = space.slots[f"arm{i}.joints"]
            joint_slice = slice(js.start, js.start + chain.dof)
            use_joints = mode == "joints" or (mode == "auto" and bool(source[joint_slice].all()))
            if use_joints:
                q[..., idx] = self._denormalize(x[..., joint_slice], idx)
                continue
            T = torch.zeros(*x.shape[:-1], 4, 4, dtype=x.dtype, device=x.device)
            T[..., :3, :3] = rotation_6d_to_matrix(x[..., space[f"arm{i}.ee_rot6d"]])
            T[..., :3, 3] = x[..., space[f"arm{i}.ee_pos"]]
            T[..., 3, 3] = 1
            q[..., idx] = chain.inverse_kinematics(T, q0=q[..., idx], **ik_kwargs).q  # type: ignore[arg-type]
        for k, spec in enumerate(emb.grippers):
            slot = space[f"arm{spec.arm}.gripper"]
            if bool(source[slot].all()):
                opened = x[..., slot][..., 0].clamp(0, 1)
                q[..., emb.gripper_indices[k]] = self._closed[k].to(x) + opened * (self._open[k] - self._closed[k]).to(x)
        return emb.clamp(q, q_current if clamp_velocity else None)
