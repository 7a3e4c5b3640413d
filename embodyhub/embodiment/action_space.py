"""CanonicalActionSpace: one fixed, named, masked action vector shared by every robot.

Per arm (up to ``max_arms``): end-effector position (3, metres, arm base frame), 6D rotation (6),
gripper (1, 0 = closed, 1 = open) and limit-normalized joint positions (``max_arm_joints``);
then base velocity (3). The layout is derived from the URDF through the ``Embodiment``: a robot
fills the slots it has and the boolean mask says which, so no per-robot mapping is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import EmbodimentMismatchError

if TYPE_CHECKING:
    from .spec import Embodiment


@dataclass(frozen=True)
class Slot:
    name: str
    start: int
    size: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


class CanonicalActionSpace:
    """Named slots of the canonical action vector and per-embodiment validity masks."""

    def __init__(self, max_arms: int = 2, max_arm_joints: int = 8) -> None:
        self.max_arms, self.max_arm_joints = max_arms, max_arm_joints
        sizes = []
        for i in range(max_arms):
            sizes += [(f"arm{i}.ee_pos", 3), (f"arm{i}.ee_rot6d", 6), (f"arm{i}.gripper", 1), (f"arm{i}.joints", max_arm_joints)]
        sizes.append(("base.vel", 3))
        self.slots: dict[str, Slot] = {}
        start = 0
        for name, size in sizes:
            self.slots[name] = Slot(name, start, size)
            start += size
        self.dim = start

    def __getitem__(self, name: str) -> slice:
        return self.slots[name].slice

    def __repr__(self) -> str:
        return f"CanonicalActionSpace(dim={self.dim}, max_arms={self.max_arms}, max_arm_joints={self.max_arm_joints})"

    def check(self, embodiment: "Embodiment") -> None:
        """Raise if the embodiment does not fit (too many arms, or an arm with too many joints)."""
        if len(embodiment.arms) > self.max_arms:
            raise EmbodimentMismatchError(
                f"'{embodiment.name}' has {len(embodiment.arms)} arms; the canonical space holds {self.max_arms}"
            )
        for arm, chain in zip(embodiment.arms, embodiment.chains):
            if chain.dof > self.max_arm_joints:
                raise EmbodimentMismatchError(
                    f"arm '{arm.name}' of '{embodiment.name}' has {chain.dof} joints; "
                    f"the canonical space holds {self.max_arm_joints} per arm"
                )

    def filled_slots(self, embodiment: "Embodiment") -> list[str]:
        """Names of the slots this embodiment fills (partially filled joint slots included)."""
        self.check(embodiment)
        names = []
        for i in range(len(embodiment.arms)):
            names += [f"arm{i}.ee_pos", f"arm{i}.ee_rot6d"]
            if any(g.arm == i for g in embodiment.grippers):
                names.append(f"arm{i}.gripper")
            names.append(f"arm{i}.joints")
        return names

    def mask(self, embodiment: "Embodiment") -> Tensor:
        """Boolean ``[dim]``: True where the embodiment provides a value."""
        m = torch.zeros(self.dim, dtype=torch.bool)
        for name in self.filled_slots(embodiment):
            slot = self.slots[name]
            arm = int(name.split(".")[0].removeprefix("arm")) if name.startswith("arm") else -1
            size = embodiment.chains[arm].dof if name.endswith(".joints") else slot.size
            m[slot.start : slot.start + size] = True
        return m
