"""The simulator's arms as embodiments: derived from robosuite's own MJCF, not a same-named URDF.

robosuite's IIWA is an iiwa7, its UR5e sits higher than a UR5, its Jaco is the 7-DoF j2s7s300, and
its end effector is the gripper's grip site (a different offset per gripper), so every embodiment
here is read from the robot + gripper MJCF robosuite itself assembles: base body -> grip site is
the arm, the gripper's first joint is the gripper (its open side read from the gripper's initial
state). The card records the MJCF's sha256 (with robosuite's install folder written as
``robosuite://`` so the hash does not depend on where it is installed).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ...embodiment import Embodiment
from ...errors import EmbodimentMismatchError
from ._robosuite import import_robosuite

CONTROL_HZ = 20.0


@dataclass(frozen=True)
class SimRobot:
    """A robosuite arm: its robosuite name and the gripper it carries here."""

    robosuite_name: str
    gripper: str
    pretraining: bool  # one of the arms the base is pretrained on (else held out)
    gripper_range: tuple[float, float] | None = None  # where robosuite's MJCF leaves the driver unlimited


SIM_ROBOTS: dict[str, SimRobot] = {
    "panda": SimRobot("Panda", "PandaGripper", True),
    "iiwa": SimRobot("IIWA", "Robotiq85Gripper", True),
    "ur5e": SimRobot("UR5e", "Robotiq85Gripper", True),
    "kinova3": SimRobot("Kinova3", "Robotiq85Gripper", True),
    # The XArm7 gripper's driver range sits in a default class its joints never use (0 - 0.85 rad).
    "xarm7": SimRobot("XArm7", "XArm7Gripper", False, (0.0, 0.85)),
    # Jaco's own three-finger gripper moves inverted and very slowly in robosuite 1.5.2.
    "jaco": SimRobot("Jaco", "Robotiq85Gripper", False),
}
BASE_BODY = "robot0_base"
EE_SITE = "gripper0_right_grip_site"


def sim_robot(name: str) -> SimRobot:
    """The simulator arm ``name``; a clear error listing the valid ones otherwise."""
    try:
        return SIM_ROBOTS[name.lower()]
    except KeyError:
        raise EmbodimentMismatchError(f"unknown simulator robot '{name}'; choose one of: {', '.join(SIM_ROBOTS)}") from None


def _grippers() -> list[str]:
    from robosuite.models.grippers import GRIPPER_MAPPING

    return sorted(g for g in GRIPPER_MAPPING if g)


def robosuite_robot(name: str, gripper: str | None = None):  # -> robosuite.robots.Robot
    """robosuite's own robot object (model loaded, gripper attached), as ``suite.make`` would build it."""
    robosuite = import_robosuite()
    spec = sim_robot(name)
    gripper = gripper or spec.gripper
    if gripper not in _grippers():
        raise EmbodimentMismatchError(f"unknown gripper '{gripper}'; robosuite has: {', '.join(_grippers())}")
    from robosuite.robots import ROBOT_CLASS_MAPPING

    robot = ROBOT_CLASS_MAPPING[spec.robosuite_name](spec.robosuite_name, idn=0, gripper_type=gripper)
    robot.load_model()
    return robot, robosuite


@functools.lru_cache(maxsize=None)
def sim_embodiment(name: str, gripper: str | None = None) -> Embodiment:
    """The ``Embodiment`` of simulator arm ``name`` with ``gripper`` (default: the one listed in ``SIM_ROBOTS``)."""
    spec = sim_robot(name)
    gripper = gripper or spec.gripper
    robot, robosuite = robosuite_robot(name, gripper)
    root = Path(robosuite.__file__).resolve().parent
    xml = robot.robot_model.get_xml()
    label = f"robosuite {robosuite.__version__}: {spec.robosuite_name} + {gripper}"
    model_gripper = robot.gripper["right"]
    joint = model_gripper.joints[0]
    emb = Embodiment.from_mjcf(
        xml, BASE_BODY, EE_SITE, gripper=joint, control_hz=CONTROL_HZ, asset_root=root, label=label,
        name=name.lower() + ("" if gripper == spec.gripper else f"_{gripper.lower()}"),
        gripper_open_at=float(model_gripper.init_qpos[0]), gripper_range=spec.gripper_range if gripper == spec.gripper else None,
    )
    # the install folder written as robosuite:// so the hash does not depend on where robosuite lives
    emb.mjcf = {"sha256": hashlib.sha256(xml.replace(str(root), "robosuite:/").encode()).hexdigest(), "source": label}
    return emb


def fk_error_vs_mujoco(name: str, samples: int = 100, seed: int = 0) -> tuple[float, float]:
    """Largest position (m) and rotation (rad) gap between the embodiment's FK and MuJoCo's own grip-site pose
    (in the base body's frame) over ``samples`` random configurations within the joint limits."""
    import mujoco
    import numpy as np
    import torch

    emb = sim_embodiment(name)
    robot, _ = robosuite_robot(name)
    model = mujoco.MjModel.from_xml_string(robot.robot_model.get_xml())
    data = mujoco.MjData(model)
    chain = emb.chains[0]
    q = emb.sample(samples, torch.Generator().manual_seed(seed))[:, emb.arm_indices[0]]
    T = chain.forward_kinematics(q).numpy()
    base, site = model.body(BASE_BODY).id, model.site(EE_SITE).id
    pos = rot = 0.0
    for i in range(samples):
        for k, joint in enumerate(chain.joint_names):
            data.qpos[model.joint(joint).qposadr[0]] = float(q[i, k])
        mujoco.mj_kinematics(model, data)
        R_base = data.xmat[base].reshape(3, 3)
        p = R_base.T @ (data.site_xpos[site] - data.xpos[base])
        R = R_base.T @ data.site_xmat[site].reshape(3, 3)
        pos = max(pos, float(np.abs(p - T[i, :3, 3]).max()))
        rot = max(rot, float(np.linalg.norm(R.T @ T[i, :3, :3] - np.eye(3)) / np.sqrt(2)))  # = angle, no arccos floor
    return pos, rot
