"""Retarget a joint trajectory of robot A onto robot B through end-effector space."""

from __future__ import annotations

import torch
from torch import Tensor

from .action_space import CanonicalActionSpace
from .adapter import KinematicAdapter
from .spec import Embodiment


def retarget(
    trajectory: Tensor,
    src: Embodiment,
    dst: Embodiment,
    q0: Tensor | None = None,
    **ik_kwargs: object,
) -> Tensor:
    """Map ``trajectory[T, src.dof]`` to ``[T, dst.dof]``: FK on ``src``, then IK on ``dst`` step by step.

    Arm ``i`` of ``src`` drives arm ``i`` of ``dst`` (end-effector pose in each arm's base frame) and
    grippers map open-to-open. Each step's IK is seeded with the previous solution so the result
    stays continuous; arms of ``dst`` without a counterpart hold ``q0``. Results are clamped to
    ``dst``'s position limits (velocity is not clamped: the input is a plan, not a command stream).
    """
    space = CanonicalActionSpace()
    src_adapter, dst_adapter = KinematicAdapter(src, space), KinematicAdapter(dst, space)
    x, _ = src_adapter.to_canonical(trajectory)
    # Only end-effector and gripper slots carry over between different bodies; joint slots never do.
    shared = torch.zeros(space.dim, dtype=torch.bool)
    for i in range(min(len(src.arms), len(dst.arms))):
        for name in (f"arm{i}.ee_pos", f"arm{i}.ee_rot6d", f"arm{i}.gripper"):
            shared[space[name]] = True
    source_mask = shared & src_adapter.mask
    out = []
    q = q0
    for t in range(x.shape[0]):
        q = dst_adapter.from_canonical(x[t], q, source_mask=source_mask, clamp_velocity=False, **ik_kwargs)
        out.append(q)
    return torch.stack(out)
