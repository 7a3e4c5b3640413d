"""Batched rotation conversions in torch: RPY, axis-angle, quaternion (w, x, y, z), matrix, 6D.

The 6D representation is the first two columns of the rotation matrix (continuous, which is
why the canonical action space uses it); ``rotation_6d_to_matrix`` re-orthonormalizes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rpy_to_matrix(rpy: Tensor) -> Tensor:
    """URDF fixed-axis roll-pitch-yaw ``[..., 3]`` -> ``[..., 3, 3]`` (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    r, p, y = rpy.unbind(-1)
    cr, sr, cp, sp, cy, sy = r.cos(), r.sin(), p.cos(), p.sin(), y.cos(), y.sin()
    rows = [
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr,
    ]
    return torch.stack(rows, -1).reshape(*rpy.shape[:-1], 3, 3)


def skew(v: Tensor) -> Tensor:
    """``[..., 3]`` -> cross-product matrix ``[..., 3, 3]``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rotation vector (axis * angle) ``[..., 3]`` -> ``[..., 3, 3]`` (Rodrigues, stable near zero)."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]
    theta = theta2.clamp_min(1e-30).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, theta.sin() / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - theta.cos()) / theta2.clamp_min(1e-30))
    K = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * K + b * (K @ K)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> unit quaternion ``[..., 4]`` (w, x, y, z) with w >= 0."""
    m = R
    diag = torch.stack(
        [
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        -1,
    )
    # Candidates computed from each of the four largest-component formulas; pick the best conditioned.
    cands = torch.stack(
        [
            torch.stack([diag[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], diag[..., 1], m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], diag[..., 2], m[..., 2, 1] + m[..., 1, 2]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2], diag[..., 3]], -1),
        ],
        -2,
    )
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Quaternion ``[..., 4]`` (w, x, y, z; normalized here) -> ``[..., 3, 3]``."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def quaternion_to_axis_angle(q: Tensor) -> Tensor:
    """Quaternion ``[..., 4]`` -> rotation vector ``[..., 3]`` with angle in [0, pi]."""
    q = torch.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., :1])
    scale = torch.where(s > 1e-12, angle / s.clamp_min(1e-30), 2 / q[..., :1].clamp_min(1e-30))
    return v * scale


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> rotation vector ``[..., 3]`` (accurate near 0 and near pi)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def matrix_to_rotation_6d(R: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> ``[..., 6]``: first column then second column."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], -1)


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """``[..., 6]`` -> ``[..., 3, 3]`` by Gram-Schmidt (any non-degenerate input gives a rotation)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2)
    return torch.stack([b1, b2, b3], -1)
