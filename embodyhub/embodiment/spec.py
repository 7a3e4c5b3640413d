"""Embodiment: which chains of a URDF are arms, which joints are grippers, at what rate it is commanded.

Serialized as ``embodiment.json`` (the *embodiment card*) next to the URDF it was derived from;
the card carries the URDF's sha256 so a model, an adapter and a robot can be checked against
each other before anything moves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from ..errors import EmbodimentMismatchError, URDFError
from ..kinematics import KinematicChain, RobotModel
from ..kinematics.chain import finite_range, sample_uniform
from .registry import CARD_NAME, URDF_NAME
CARD_FORMAT = "embodyhub.embodiment/v1"
ActionRepresentation = Literal["absolute", "delta", "relative"]
REPRESENTATIONS = ("absolute", "delta", "relative")
JOINT_FEATURES = 17  # width of Embodiment.joint_features()


@dataclass(frozen=True)
class ArmSpec:
    """One arm: the chain from ``base`` (its frame for end-effector poses) to ``tip`` (the end effector)."""

    name: str
    base: str
    tip: str


@dataclass(frozen=True)
class GripperSpec:
    """A gripper joint of arm ``arm``; ``open`` says which URDF limit is the open position."""

    joint: str
    arm: int
    open: Literal["upper", "lower"] = "upper"


def plain_name(name: Any, what: str) -> str:
    """``name`` if it is one plain file or folder name (no separator, not ``.`` or ``..``): names read from
    cards and configs become paths, which must stay inside their folder."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise EmbodimentMismatchError(f"{what} {name!r} is not a plain name: it becomes a path, which must stay inside its folder")
    return name


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Embodiment:
    """A robot as the model sees it: arms (base -> tip chains), grippers, native joint order, limits, rate."""

    def __init__(
        self,
        robot: RobotModel,
        arms: Sequence[ArmSpec | tuple[str, str]],
        grippers: Sequence[GripperSpec | str | dict | None] = (),
        control_hz: float = 30.0,
        name: str | None = None,
        action_representation: ActionRepresentation = "absolute",
    ) -> None:
        if robot.source_text is None:
            raise URDFError("an Embodiment needs the URDF text (load the robot with RobotModel.from_urdf)")
        if not arms:
            raise EmbodimentMismatchError("an embodiment needs at least one arm (base_link, tip_link)")
        if not (isinstance(control_hz, (int, float)) and math.isfinite(control_hz) and control_hz > 0):
            raise EmbodimentMismatchError(f"control_hz must be a positive number, got {control_hz!r}")
        if action_representation not in REPRESENTATIONS:
            raise EmbodimentMismatchError(
                f"action_representation must be one of {REPRESENTATIONS}, got {action_representation!r}"
            )
        self.robot = robot
        self.name = name or robot.name
        self.control_hz = float(control_hz)
        self.action_representation: ActionRepresentation = action_representation
        self.arms = [
            a if isinstance(a, ArmSpec) else ArmSpec(f"arm{i}", a[0], a[1]) for i, a in enumerate(arms)
        ]
        self.chains: list[KinematicChain] = [robot.chain(a.base, a.tip) for a in self.arms]
        self.grippers = self._gripper_specs(grippers)

        names: list[str] = []
        for i, chain in enumerate(self.chains):
            for joint in chain.joint_names:
                if joint not in names:
                    names.append(joint)
            names.extend(g.joint for g in self.grippers if g.arm == i and g.joint not in names)
        self.joint_names = names
        self.arm_indices = [torch.tensor([names.index(j) for j in c.joint_names]) for c in self.chains]
        self.gripper_indices = torch.tensor([names.index(g.joint) for g in self.grippers], dtype=torch.long)

        self.lower, self.upper, self.velocity_limit = robot.limits(names)
        self._joint_features: Tensor | None = None
        self.mjcf: dict[str, str] | None = None  # {"sha256", "source"} when derived from an MJCF

    def _gripper_specs(self, grippers: Sequence[GripperSpec | str | dict | None]) -> list[GripperSpec]:
        if len(grippers) > len(self.arms):
            raise EmbodimentMismatchError(f"{len(grippers)} grippers for {len(self.arms)} arms (one per arm at most)")
        specs = []
        for i, g in enumerate(grippers):
            if g is None:
                continue
            if isinstance(g, str):
                g = GripperSpec(g, i)
            elif isinstance(g, dict):
                g = GripperSpec(g["joint"], int(g.get("arm", i)), g.get("open", "upper"))
            joint = self.robot.joints.get(g.joint)
            if joint is None:
                raise EmbodimentMismatchError(f"gripper joint '{g.joint}' is not in robot '{self.robot.name}'")
            if joint.type not in ("revolute", "prismatic") or joint.limit is None or joint.mimic is not None:
                raise EmbodimentMismatchError(
                    f"gripper joint '{g.joint}' must be a bounded revolute/prismatic joint that is not a mimic"
                )
            if g.open not in ("upper", "lower"):
                raise EmbodimentMismatchError(f"gripper '{g.joint}': open must be 'upper' or 'lower'")
            if any(g.joint in c.joint_names for c in self.chains):
                raise EmbodimentMismatchError(f"gripper joint '{g.joint}' is also an arm joint")
            specs.append(g)
        return specs

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_urdf(
        cls,
        urdf: str | bytes | os.PathLike | RobotModel,
        arms: Sequence[ArmSpec | tuple[str, str]],
        grippers: Sequence[GripperSpec | str | dict | None] = (),
        control_hz: float = 30.0,
        name: str | None = None,
        action_representation: ActionRepresentation = "absolute",
    ) -> "Embodiment":
        """Derive an embodiment from a URDF (path, text, bytes or a loaded ``RobotModel``)."""
        robot = urdf if isinstance(urdf, RobotModel) else RobotModel.from_urdf(urdf)
        return cls(robot, arms, grippers, control_hz, name, action_representation)

    @classmethod
    def from_mjcf(
        cls,
        mjcf: str | os.PathLike,
        base_body: str,
        ee_site: str,
        gripper: str | None = None,
        control_hz: float = 30.0,
        name: str | None = None,
        action_representation: ActionRepresentation = "absolute",
        asset_root: str | os.PathLike | None = None,
        label: str | None = None,
        gripper_open_at: float | None = None,
        gripper_range: tuple[float, float] | None = None,
    ) -> "Embodiment":
        """Derive an embodiment from an MJCF (a file, or XML text with ``asset_root``): one arm from
        ``base_body`` to the end-effector site ``ee_site``, optionally one ``gripper`` joint whose open
        side is the limit nearest ``gripper_open_at`` (default: the upper limit) and whose range is
        ``gripper_range`` where the MJCF leaves it unlimited. Needs MuJoCo."""
        from ..kinematics.mjcf import read_mjcf

        ranges = {gripper: gripper_range} if gripper is not None and gripper_range is not None else None
        read = read_mjcf(mjcf, base_body, [ee_site], asset_root=asset_root, name=name, label=label, ranges=ranges)
        grippers: list[GripperSpec] = []
        if gripper is not None:
            joint = read.robot.joints.get(gripper)
            if joint is None or joint.limit is None:
                raise EmbodimentMismatchError(f"gripper joint '{gripper}' is not a bounded joint of the MJCF robot")
            lo, hi = joint.limit.lower, joint.limit.upper
            near_lower = gripper_open_at is not None and abs(gripper_open_at - lo) < abs(gripper_open_at - hi)
            grippers.append(GripperSpec(gripper, 0, "lower" if near_lower else "upper"))
        emb = cls(read.robot, [ArmSpec("arm0", base_body, ee_site)], grippers, control_hz, name, action_representation)
        emb.mjcf = {"sha256": read.mjcf_sha256, "source": read.source}
        return emb

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike) -> "Embodiment":
        """Load from a folder holding ``embodiment.json`` + ``robot.urdf``, or a bundled robot by name."""
        path = Path(name_or_dir)
        if not (path / CARD_NAME).is_file():
            from .registry import robot_dir

            path = robot_dir(str(name_or_dir))
        card = json.loads((path / CARD_NAME).read_text())
        urdf_text = (path / plain_name(card.get("urdf_file", URDF_NAME), "the card's urdf_file")).read_text()
        return cls.from_card(card, urdf_text)

    @classmethod
    def from_card(cls, card: dict[str, Any], urdf_text: str) -> "Embodiment":
        """Rebuild from a card dict and the URDF text; the URDF must match the card's sha256."""
        if card.get("format") != CARD_FORMAT:
            raise EmbodimentMismatchError(f"unknown embodiment card format {card.get('format')!r}")
        digest = _sha256(urdf_text)
        if digest != card["urdf_sha256"]:
            raise EmbodimentMismatchError(
                f"URDF sha256 {digest[:12]}... does not match the card's {card['urdf_sha256'][:12]}... "
                f"for embodiment '{card.get('name')}'"
            )
        emb = cls.from_urdf(
            urdf_text,
            arms=[ArmSpec(a["name"], a["base"], a["tip"]) for a in card["arms"]],
            grippers=[GripperSpec(g["joint"], g["arm"], g["open"]) for g in card["grippers"]],
            control_hz=card["control_hz"],
            name=card["name"],
            action_representation=card["action_representation"],
        )
        emb.mjcf = card.get("mjcf")
        if emb.joint_names != card["joint_names"]:
            raise EmbodimentMismatchError(
                f"card joint order {card['joint_names']} differs from the URDF-derived {emb.joint_names}"
            )
        return emb

    # ------------------------------------------------------------------ card
    @property
    def urdf_text(self) -> str:
        return self.robot.source_text  # type: ignore[return-value]

    @property
    def urdf_sha256(self) -> str:
        return _sha256(self.urdf_text)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz

    def to_card(self) -> dict[str, Any]:
        """The embodiment card: everything a consumer needs to know about frames, units and joints."""
        from .action_space import CanonicalActionSpace

        def finite_or_none(v: float) -> float | None:
            return v if math.isfinite(v) else None

        roles = {j: f"arm{i}" for i, c in enumerate(self.chains) for j in c.joint_names}
        roles.update({g.joint: f"gripper{g.arm}" for g in self.grippers})
        space = CanonicalActionSpace()
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "urdf_file": URDF_NAME,
            "urdf_sha256": self.urdf_sha256,
            **({"mjcf": self.mjcf} if self.mjcf else {}),
            "urdf_robot_name": self.robot.name,
            "root_link": self.robot.root_link,
            "dof": self.dof,
            "joint_names": self.joint_names,
            "joints": [
                {
                    "name": name,
                    "type": self.robot.joints[name].type,
                    "role": roles[name],
                    "lower": finite_or_none(float(self.lower[i])),
                    "upper": finite_or_none(float(self.upper[i])),
                    "velocity": finite_or_none(float(self.velocity_limit[i])),
                    "unit": "m" if self.robot.joints[name].type == "prismatic" else "rad",
                }
                for i, name in enumerate(self.joint_names)
            ],
            "arms": [{"name": a.name, "base": a.base, "tip": a.tip, "joints": c.joint_names} for a, c in zip(self.arms, self.chains)],
            "grippers": [{"joint": g.joint, "arm": g.arm, "open": g.open} for g in self.grippers],
            "control_hz": self.control_hz,
            "action_representation": self.action_representation,
            "frames": {
                "ee_position": "tip link origin in the arm's base link frame",
                "ee_rotation": "6D: first two columns of the tip rotation in the arm's base link frame",
            },
            "units": {"position": "m", "revolute": "rad", "prismatic": "m", "gripper": "0 = closed, 1 = open"},
            "canonical": {
                "dim": space.dim,
                "max_arm_joints": space.max_arm_joints,
                "filled_slots": space.filled_slots(self),
            },
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``embodiment.json`` and the exact URDF text it was derived from."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / URDF_NAME).write_text(self.urdf_text)
        (out / CARD_NAME).write_text(json.dumps(self.to_card(), indent=2) + "\n")
        return out

    def check_compatible(self, card: dict[str, Any]) -> None:
        """Raise ``EmbodimentMismatchError`` with a readable diff if ``card`` describes another body."""
        mine = self.to_card()
        diffs = [
            f"{key}: expected {card.get(key)!r}, this robot has {mine[key]!r}"
            for key in ("urdf_sha256", "dof", "joint_names", "action_representation")
            if card.get(key) != mine[key]
        ]
        if diffs:
            raise EmbodimentMismatchError(
                f"embodiment '{card.get('name')}' does not match '{self.name}':\n  " + "\n  ".join(diffs)
            )

    def __repr__(self) -> str:
        arms = ", ".join(f"{a.base}->{a.tip}" for a in self.arms)
        return f"Embodiment({self.name!r}, dof={self.dof}, arms=[{arms}], grippers={[g.joint for g in self.grippers]})"

    # ------------------------------------------------------------------ joint-space helpers
    def check_q(self, q: Tensor, what: str = "q") -> Tensor:
        """Validate a native joint tensor ``[..., dof]``: shape and finiteness."""
        from ..errors import InvalidActionError

        q = torch.as_tensor(q)
        if not q.is_floating_point():
            q = q.to(torch.float64)
        if q.shape[-1:] != (self.dof,):
            raise InvalidActionError(f"{what} has shape {tuple(q.shape)}; '{self.name}' expects [..., {self.dof}] ({self.joint_names})")
        if not torch.isfinite(q).all():
            raise InvalidActionError(f"{what} contains NaN or infinite values")
        return q

    def joint_features(self) -> Tensor:
        """Per-joint body description ``[dof, JOINT_FEATURES]`` (float32) for the model's embodiment tokens.

        Built from the URDF alone (joint type, role, axis and origin in the arm base frame at q = 0,
        limits, velocity limit, depth in the chain), so an unseen robot still gets a description.
        Computed once (it runs FK per joint) and shared: treat the returned tensor as read-only.
        """
        if self._joint_features is not None:
            return self._joint_features
        rows = []
        lower, upper = finite_range(self.lower, self.upper)
        for i, name in enumerate(self.joint_names):
            joint = self.robot.joints[name]
            arm = next((k for k, c in enumerate(self.chains) if name in c.joint_names), None)
            gripper = next((g.arm for g in self.grippers if g.joint == name), None)
            kind = [joint.type == "revolute", joint.type == "continuous", joint.type == "prismatic"]
            role = [arm == 0, arm == 1, gripper == 0, gripper == 1]
            base = self.chains[arm if arm is not None else gripper].base_link  # type: ignore[index]
            depth = len(self.robot.path(base, joint.child))
            origin = self.robot.chain(base, joint.child)
            T = origin.forward_kinematics(torch.zeros(origin.dof, dtype=torch.float64))
            axis = T[:3, :3] @ torch.tensor(joint.axis, dtype=torch.float64)
            vel = float(self.velocity_limit[i])
            rows.append(
                [float(v) for v in kind + role]
                + axis.tolist()
                + T[:3, 3].tolist()
                + [float(lower[i]) / math.pi, float(upper[i]) / math.pi, math.log1p(vel) if math.isfinite(vel) else 5.0, depth / 10]
            )
        self._joint_features = torch.tensor(rows, dtype=torch.float32)
        return self._joint_features

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` native configurations uniform within limits (continuous joints in [-pi, pi]), float64."""
        return sample_uniform(self.lower, self.upper, n, generator)

    def clamp(self, q: Tensor, q_current: Tensor | None = None) -> Tensor:
        """Clamp to URDF position limits and, given ``q_current``, to velocity limits over one control step."""
        if q_current is not None:  # velocity first, so position limits win if q_current is out of range
            step = self.velocity_limit.to(q) * self.dt
            q = torch.maximum(torch.minimum(q, q_current + step), q_current - step)
        return torch.maximum(torch.minimum(q, self.upper.to(q)), self.lower.to(q))
