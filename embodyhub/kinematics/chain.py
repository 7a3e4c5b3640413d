"""KinematicChain: batched, differentiable forward kinematics and Jacobian in torch.

Every joint axis is rotated onto z when the chain is built (its alignment folded into the
constant transforms around it), so a revolute joint is a rotation of two columns of the running
pose and a prismatic one a shift of the translation column. A pose is ``[..., 3, 4]`` (the
implicit last row is 0 0 0 1) and each fixed stretch is one small matmul with a constant. No
per-joint Transform objects, no 4x4 batched matmuls: the work is a few vector ops per joint.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import InvalidActionError, KinematicsError
from .rotations import rpy_to_matrix

if TYPE_CHECKING:
    from .ik import IKResult
    from .urdf import RobotModel


_SMALL_BATCH = 64  # flattened batch size up to which the few-ops path is faster


def finite_range(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Joint limits with unbounded (continuous) joints mapped to [-pi, pi]."""
    lo = torch.where(torch.isfinite(lower), lower, torch.full_like(lower, -math.pi))
    hi = torch.where(torch.isfinite(upper), upper, torch.full_like(upper, math.pi))
    return lo, hi


def sample_uniform(lower: Tensor, upper: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` float64 samples uniform in ``finite_range(lower, upper)``."""
    lo, hi = finite_range(lower, upper)
    return lo + torch.rand(n, lo.shape[0], generator=generator, dtype=torch.float64) * (hi - lo)


def _origin(xyz: tuple[float, ...], rpy: tuple[float, ...]) -> Tensor:
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = rpy_to_matrix(torch.tensor(rpy, dtype=torch.float64))
    T[:3, 3] = torch.tensor(xyz, dtype=torch.float64)
    return T


def _align_z(axis: tuple[float, ...]) -> Tensor:
    """A 4x4 rotation Q with Q @ e_z = axis (so a motion about ``axis`` is Q Rz Q^T)."""
    a = torch.tensor(axis, dtype=torch.float64)
    helper = torch.tensor([1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0], dtype=torch.float64)
    x = torch.linalg.cross(helper, a)
    x = x / x.norm()
    Q = torch.eye(4, dtype=torch.float64)
    Q[:3, 0], Q[:3, 1], Q[:3, 2] = x, torch.linalg.cross(a, x), a
    return Q


class KinematicChain:
    """Kinematics from ``base_link`` to ``tip_link``; ``q`` follows ``joint_names``."""

    def __init__(self, robot: "RobotModel", base_link: str, tip_link: str) -> None:
        self.robot = robot
        self.base_link, self.tip_link = base_link, tip_link
        path = robot.path(base_link, tip_link)
        for joint in path:
            if joint.type in ("floating", "planar"):
                raise KinematicsError(
                    f"chain {base_link} -> {tip_link} passes through {joint.type} joint '{joint.name}'; "
                    "choose a base link below it"
                )
        names = [j.name for j in path if j.actuated]
        for joint in path:  # a mimic follower whose leader is off the path still needs the leader's value
            if joint.mimic is not None and joint.mimic.joint not in names:
                names.append(joint.mimic.joint)
        self.joint_names: list[str] = names

        consts, src, mult, offset, kinds = [], [], [], [], []
        pending = torch.eye(4, dtype=torch.float64)  # fixed transform since the last moving joint
        for joint in path:
            pending = pending @ _origin(joint.origin_xyz, joint.origin_rpy)
            if joint.type == "fixed":
                continue
            Q = _align_z(joint.axis)
            consts.append(pending @ Q)
            pending = Q.T.contiguous()
            kinds.append("revolute" if joint.type in ("revolute", "continuous") else "prismatic")
            leader = joint.mimic.joint if joint.mimic is not None else joint.name
            src.append(names.index(leader))
            mult.append(joint.mimic.multiplier if joint.mimic is not None else 1.0)
            offset.append(joint.mimic.offset if joint.mimic is not None else 0.0)
        consts.append(pending)
        self._kinds = kinds
        self._const64 = {
            "consts": torch.stack(consts)[:, :4, :],  # [m + 1, 4, 4]: before joint 0, between joints, tail
            "mult": torch.tensor(mult, dtype=torch.float64),
            "offset": torch.tensor(offset, dtype=torch.float64),
            "rev": torch.tensor([k == "revolute" for k in kinds], dtype=torch.float64),
        }
        self._src = torch.tensor(src, dtype=torch.long)
        self._is_mimic_free = src == list(range(len(src))) and all(m == 1.0 for m in mult) and not any(offset)
        self._cache: dict[tuple[torch.dtype, torch.device], dict[str, Tensor]] = {}

        self.lower, self.upper, self.velocity_limit = robot.limits(names)

    # ------------------------------------------------------------------ helpers
    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def __repr__(self) -> str:
        return f"KinematicChain({self.base_link} -> {self.tip_link}, joints={self.joint_names})"

    def _consts(self, q: Tensor) -> dict[str, Tensor]:
        key = (q.dtype, q.device)
        consts = self._cache.get(key)
        if consts is None:
            consts = {k: v.to(dtype=q.dtype, device=q.device) for k, v in self._const64.items()}
            consts["src"] = self._src.to(q.device)
            consts["consts_t"] = consts["consts"].transpose(-1, -2).contiguous()
            nxt = consts["consts"][1:]
            # Rz(θ) C = C + (cos θ - 1) [C0; C1; 0; 0] + sin θ [-C1; C0; 0; 0];  Tz(d) C = C + d e2 C3
            rot_cols = torch.zeros_like(nxt)
            rot_cols[:, :2] = nxt[:, :2]
            sin_cols = torch.zeros_like(nxt)
            sin_cols[:, 0], sin_cols[:, 1] = -nxt[:, 1], nxt[:, 0]
            shift = torch.zeros_like(nxt)
            shift[:, 2] = nxt[:, 3]
            consts["motion_basis"] = torch.stack([rot_cols, sin_cols, shift], 1)  # [m, 3, 4, 4]
            self._cache[key] = consts
        return consts

    def _check(self, q: Tensor) -> Tensor:
        if not isinstance(q, Tensor):
            q = torch.as_tensor(q, dtype=torch.float64)
        if not q.is_floating_point():
            q = q.to(torch.float64)
        if q.shape[-1:] != (self.dof,):
            raise InvalidActionError(
                f"q has shape {tuple(q.shape)}; chain {self.base_link} -> {self.tip_link} expects [..., {self.dof}] "
                f"ordered as {self.joint_names}"
            )
        return q

    def _poses(self, q: Tensor, keep_frames: bool) -> tuple[Tensor, Tensor | None]:
        """Tip pose as ``[3, 4, N]`` (batch last, N = flattened batch) and, if asked, the z-aligned
        frame after each moving joint ``[m, 3, 4, N]``. Small batches are bound by per-op overhead,
        large ones by memory traffic, so each gets its own (equivalent) evaluation order."""
        c = self._consts(q)
        theta = q if self._is_mimic_free else q[..., c["src"]] * c["mult"] + c["offset"]
        theta = theta.reshape(math.prod(q.shape[:-1]), theta.shape[-1])
        if theta.shape[0] <= _SMALL_BATCH:
            return self._poses_small(theta, c, keep_frames)
        return self._poses_wide(theta.T, c, keep_frames)

    def _poses_small(self, theta: Tensor, c: dict[str, Tensor], keep_frames: bool) -> tuple[Tensor, Tensor | None]:
        """Few ops: every joint's ``Rz(θ) C_next`` at once, then one 4x4 matmul per joint."""
        angle = theta * c["rev"]
        coeff = torch.stack([angle.cos() - 1, angle.sin(), theta * (1 - c["rev"])], -1)  # [N, m, 3]
        motion = c["consts"][1:] + torch.einsum("nmk,mkij->nmij", coeff, c["motion_basis"])
        T = c["consts"][0].expand(theta.shape[0], 4, 4)
        frames = [T]
        for k in range(theta.shape[1]):
            T = T @ motion[:, k]
            frames.append(T)
        F = torch.stack(frames[:-1], 1)[:, :, :3].permute(1, 2, 3, 0) if keep_frames else None
        return T[:, :3].permute(1, 2, 0), F

    def _poses_wide(self, theta: Tensor, c: dict[str, Tensor], keep_frames: bool) -> tuple[Tensor, Tensor | None]:
        """Contiguous vector ops: rotate two columns (or shift one), then one wide GEMM per joint."""
        angle = theta * c["rev"][:, None]
        cos, sin = angle.cos(), angle.sin()
        T = c["consts"][0, :3, :, None].expand(3, 4, theta.shape[1])
        frames: list[Tensor] = []
        for k, kind in enumerate(self._kinds):
            x, y, z, p = T.unbind(1)
            if kind == "revolute":
                T = torch.stack([x * cos[k] + y * sin[k], y * cos[k] - x * sin[k], z, p], 1)
            else:
                T = torch.stack([x, y, z, p + z * theta[k]], 1)
            if keep_frames:
                frames.append(T)
            T = torch.matmul(c["consts_t"][k + 1], T)
        return T, torch.stack(frames, 0) if keep_frames else None

    def _to_batch(self, T: Tensor, batch: torch.Size) -> Tensor:
        """``[3, 4, N]`` -> homogeneous ``[*batch, 4, 4]``."""
        row = T.new_tensor([0.0, 0.0, 0.0, 1.0])[:, None].expand(1, 4, T.shape[-1])
        return torch.cat([T, row], 0).permute(2, 0, 1).reshape(*batch, 4, 4)

    # ------------------------------------------------------------------ public API
    def forward_kinematics(self, q: Tensor) -> Tensor:
        """Tip pose in the base-link frame, ``[..., 4, 4]``, for joint positions ``q[..., n]``."""
        q = self._check(q)
        T, _ = self._poses(q, keep_frames=False)
        return self._to_batch(T, q.shape[:-1])

    def forward_kinematics_with_jacobian(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """``(T[..., 4, 4], J[..., 6, n])`` in one pass (what IK needs each iteration)."""
        q = self._check(q)
        batch = q.shape[:-1]
        if not self._kinds:
            return self.forward_kinematics(q), q.new_zeros(*batch, 6, self.dof)
        T, F = self._poses(q, keep_frames=True)  # F: [m, 3, 4, N]
        c = self._consts(q)
        z = F[:, :, 2]  # joint axes in the base frame, [m, 3, N]
        lever = T[None, :, 3] - F[:, :, 3]
        rev = c["rev"][:, None, None]
        jv = rev * torch.linalg.cross(z, lever, dim=1) + (1 - rev) * z
        cols = torch.cat([jv, rev * z], 1) * c["mult"][:, None, None]  # [m, 6, N]
        cols = cols.permute(2, 1, 0).reshape(*batch, 6, cols.shape[0])
        if not self._is_mimic_free:
            cols = cols.new_zeros(*batch, 6, self.dof).index_add(-1, c["src"], cols)
        return self._to_batch(T, batch), cols

    def jacobian(self, q: Tensor) -> Tensor:
        """Geometric Jacobian ``[..., 6, n]``: linear (rows 0:3) and angular (3:6) velocity of the tip, base frame."""
        return self.forward_kinematics_with_jacobian(q)[1]

    def inverse_kinematics(
        self,
        T_target: Tensor,
        q0: Tensor | None = None,
        max_iters: int = 25,
        tol_pos: float = 1e-3,
        tol_rot: float = 1e-3,
        restarts: int = 30,
        seed: int | None = None,
    ) -> "IKResult":
        """Batched damped-least-squares IK within joint limits; see ``embodyhub.kinematics.ik``."""
        from .ik import inverse_kinematics

        return inverse_kinematics(self, T_target, q0, max_iters, tol_pos, tol_rot, restarts, seed)

    def clamp(self, q: Tensor) -> Tensor:
        """Clamp ``q`` to the URDF position limits."""
        lo = self.lower.to(dtype=q.dtype, device=q.device)
        hi = self.upper.to(dtype=q.dtype, device=q.device)
        return torch.maximum(torch.minimum(q, hi), lo)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
        """``n`` configurations uniform within limits (continuous joints in [-pi, pi])."""
        return sample_uniform(self.lower, self.upper, n, generator).to(dtype)
