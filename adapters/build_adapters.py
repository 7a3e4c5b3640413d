#!/usr/bin/env python3
"""Maintainer script: (re)build the bundled robot adapters under ``adapters/<name>/``.

For every robot in :data:`ROBOTS` this script

1. locates the original URDF through the installed distribution that ships it
   (``importlib.metadata``; the file's sha256 is checked against the wheel's RECORD),
2. strips it down to kinematics (links with ``<inertial>``, joints with
   origin/axis/limit/mimic/dynamics/calibration/safety_controller/parent/child;
   the axis of fixed joints, ignored by URDF, is dropped) and
   writes ``robot.urdf`` (no geometry file references, no DOCTYPE, original names kept),
3. checks the arm chains and gripper joints chosen in the table against that file,
4. optionally (``pinocchio`` installed, default on) checks the stripped model against
   the original one: same nq/nv, joint names, limits, inertias and frame placements,
5. writes ``LICENSE`` (upstream license text found in the installed package) and
   ``SOURCE.md`` (provenance, what was stripped, the choices made and why),
6. unless ``--no-cards``: builds the embodiment card with
   ``embodyhub.embodiment.Embodiment.from_urdf(...)`` and ``save_pretrained``.

Run from the repository root::

    .venv/bin/python adapters/build_adapters.py               # everything
    .venv/bin/python adapters/build_adapters.py --no-cards    # without embodyhub
    .venv/bin/python adapters/build_adapters.py --only panda ur5

Only the standard library is needed for steps 1-3 and 5; step 4 needs ``pin``
and step 6 needs ``embodyhub`` itself. The source distributions
(``example-robot-data``, ``pybullet``) must be installed (they are test extras).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as metadata
import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

ADAPTERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = ADAPTERS_DIR.parent

ERD = "example-robot-data"
ERD_ROBOTS = "cmeel.prefix/share/example-robot-data/robots"
PYBULLET = "pybullet"

#: Child elements kept inside ``<joint>``; everything else is dropped (and ``<axis>`` of
#: fixed joints, which the URDF spec ignores).
JOINT_CHILDREN = (
    "parent",
    "child",
    "origin",
    "axis",
    "limit",
    "mimic",
    "dynamics",
    "calibration",
    "safety_controller",
)
#: Child elements kept inside ``<link>``.
LINK_CHILDREN = ("inertial",)
#: Attributes kept on ``<robot>``, ``<link>`` and ``<joint>``.
ROBOT_ATTRS = ("name",)
LINK_ATTRS = ("name",)
JOINT_ATTRS = ("name", "type")
#: Joint types a kinematic chain may not pass through.
NON_CHAIN_TYPES = ("floating", "planar")
#: Strings that must not appear anywhere in a generated robot.urdf.
FORBIDDEN_SUBSTRINGS = ("mesh", "filename", "package://", "<!doctype", "<!entity")


# --------------------------------------------------------------------------------------
# The robot table
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextSource:
    """A license text shipped inside an installed distribution.

    ``path`` is relative to the distribution's install root as listed in its RECORD;
    a leading ``@dist-info/`` means "inside this distribution's .dist-info folder".
    ``start``: copy from the first line containing this marker (to drop a preamble).
    ``xml_comments``: the text is the leading XML comment block of an XML file.
    ``fallback``: text used (and flagged) when the distribution is not installed.
    """

    title: str
    dist: str
    path: str
    start: str | None = None
    xml_comments: bool = False
    fallback: str | None = None


@dataclass(frozen=True)
class Arm:
    """One arm: chain ``base -> tip`` and its gripper joint (None = no gripper)."""

    base: str
    tip: str
    gripper: str | None = None
    open: str | None = None  # "upper" | "lower": which limit is the OPEN position

    def gripper_entry(self) -> dict[str, str] | None:
        """The gripper entry in the form ``Embodiment.from_urdf`` accepts."""
        if self.gripper is None:
            return None
        return {"joint": self.gripper, "open": self.open or "upper"}


@dataclass(frozen=True)
class Robot:
    """One bundled robot: where its URDF comes from and how it is used."""

    name: str
    title: str
    dist: str
    path: str
    arms: tuple[Arm, ...]
    control_hz: float
    license: str  # SPDX id (or "BSD (variant unstated)") as declared upstream/by the packager
    license_declared_in: str
    license_texts: tuple[TextSource, ...]
    upstream: str
    choices: tuple[str, ...] = ()  # why this file / these links / this gripper side
    license_notes: tuple[str, ...] = ()  # anything unclear about the license
    control_hz_note: str = ""


def _erd(sub: str) -> str:
    return f"{ERD_ROBOTS}/{sub}"


ERD_PACKAGE_LICENSE = TextSource(
    "License of the example-robot-data distribution itself (its dist-info)",
    ERD,
    "@dist-info/licenses/LICENSE",
)
PYBULLET_PACKAGE_LICENSE = TextSource(
    "License of the pybullet distribution (pybullet_data is shipped inside it)",
    PYBULLET,
    "@dist-info/LICENSE.txt",
)
# The same package ships no Apache-2.0 text next to the SO-ARM models; the verbatim
# Apache-2.0 text it ships next to the Panda model is used (it has no per-project part).
APACHE_TEXT = TextSource(
    "Apache License 2.0 (verbatim text; copy shipped in example-robot-data "
    "panda_description/LICENSE, the package ships none next to this model)",
    ERD,
    _erd("panda_description/LICENSE"),
)
ROBOTS: tuple[Robot, ...] = (
    Robot(
        name="panda",
        title="Franka Emika Panda with Franka Hand",
        dist=ERD,
        path=_erd("panda_description/urdf/panda.urdf"),
        arms=(Arm("panda_link0", "panda_hand_tcp", "panda_finger_joint1", "upper"),),
        control_hz=50,
        license="Apache-2.0",
        license_declared_in=_erd("panda_description/README.md") + " and LICENSE next to it",
        license_texts=(
            TextSource("Apache License 2.0 (panda_description/LICENSE)", ERD, _erd("panda_description/LICENSE")),
        ),
        upstream="https://github.com/frankaemika/franka_ros/tree/noetic-devel/franka_description",
        choices=(
            "Source file: panda.urdf (full model with hand); panda_collision.urdf only differs in collision geometry.",
            "Tip: panda_hand_tcp, the Franka Hand TCP (0.1034 m past the hand flange, between the fingertips; "
            "libfranka's default end-effector frame with the hand). Base: panda_link0.",
            "Gripper: panda_finger_joint1 (prismatic 0..0.04 m per finger; panda_finger_joint2 mimics it). "
            "Open = upper: at 0.04 the finger pads are 0.08 m apart, at 0.0 they touch (checked on the "
            "upstream collision meshes).",
        ),
    ),
    Robot(
        name="ur5",
        title="Universal Robots UR5 (CB-series ur_description)",
        dist=ERD,
        path=_erd("ur_description/urdf/ur5_robot.urdf"),
        arms=(Arm("base_link", "tool0"),),
        control_hz=50,
        license="BSD (variant and copyright holder not stated in the package)",
        license_declared_in=_erd("ur_description/README.md"),
        license_texts=(ERD_PACKAGE_LICENSE,),
        upstream="https://github.com/ros-industrial/universal_robot/tree/kinetic-devel/ur_description",
        choices=(
            "Joint limits: ur5_robot.urdf (pinned), NOT ur5_joint_limited_robot.urdf. ur5_robot.urdf carries the "
            "hardware range of the controller (+-2pi on every joint but the elbow, which upstream limits to +-pi); "
            "the joint_limited variant clamps all joints to +-pi, a MoveIt planning convenience that would put "
            "valid recorded states (wrist angles beyond +-pi) outside the limits.",
            "Tip: tool0, the ROS-Industrial tool flange frame (z out of the flange), same as the UR controller's "
            "flange; ee_link is a legacy x-forward frame at the same point. Base: base_link (the `base` frame "
            "that matches the controller's base is a leaf sibling, not an ancestor of tool0).",
            "Gripper: none (the model has no end effector).",
        ),
        license_notes=(
            "The package declares only 'BSD' for ur_description and ships no license text or copyright line "
            "for it; LICENSE therefore holds the example-robot-data package license (BSD-2-Clause) only.",
        ),
    ),
    Robot(
        name="ur10",
        title="Universal Robots UR10 (CB-series ur_description)",
        dist=ERD,
        path=_erd("ur_description/urdf/ur10_robot.urdf"),
        arms=(Arm("base_link", "tool0"),),
        control_hz=50,
        license="BSD (variant and copyright holder not stated in the package)",
        license_declared_in=_erd("ur_description/README.md"),
        license_texts=(ERD_PACKAGE_LICENSE,),
        upstream="https://github.com/ros-industrial/universal_robot/tree/kinetic-devel/ur_description",
        choices=(
            "Joint limits: ur10_robot.urdf (pinned), NOT ur10_joint_limited_robot.urdf, for the same reason as "
            "ur5: it carries the controller's +-2pi range (elbow +-pi); the joint_limited file clamps to +-pi.",
            "Tip: tool0 (ROS-Industrial tool flange frame). Base: base_link.",
            "Gripper: none (the model has no end effector).",
        ),
        license_notes=(
            "The package declares only 'BSD' for ur_description and ships no license text or copyright line "
            "for it; LICENSE therefore holds the example-robot-data package license (BSD-2-Clause) only.",
        ),
    ),
    Robot(
        name="xarm7",
        title="UFACTORY xArm 7 (no gripper)",
        dist=ERD,
        path=_erd("xarm_description/urdf/xarm7.urdf"),
        arms=(Arm("link_base", "link_eef"),),
        control_hz=50,
        license="BSD-3-Clause",
        license_declared_in=_erd("xarm_description/README.md"),
        license_texts=(ERD_PACKAGE_LICENSE,),
        upstream="https://github.com/xArm-Developer/xarm_ros2",
        choices=(
            "Tip: link_eef, the xArm end-effector (flange) frame. Base: link_base (the `world` link above it is "
            "a fixed placeholder).",
            "Gripper: none (this model has no gripper; the xArm gripper is only in the pybullet xarm6 file).",
            "Stripped also: <ros2_control> block.",
        ),
        license_notes=(
            "BSD-3-Clause is declared by the packager's README; the package ships no BSD-3-Clause text with "
            "UFACTORY's copyright line, so LICENSE holds the example-robot-data package license only.",
        ),
    ),
    Robot(
        name="so100",
        title="TheRobotStudio SO-ARM100 (SO-100) with its single-jaw gripper",
        dist=ERD,
        path=_erd("so_arm_description/urdf/so100.urdf"),
        arms=(Arm("base", "gripper", "gripper", "upper"),),
        control_hz=30,
        control_hz_note="30 Hz: LeRobot SO-100 datasets and policies run at 30 fps.",
        license="Apache-2.0",
        license_declared_in=_erd("so_arm_description/README.md"),
        license_texts=(APACHE_TEXT,),
        upstream="https://github.com/TheRobotStudio/SO-ARM100",
        choices=(
            "Tip: gripper, the wrist-roll link carrying the fixed jaw (this file has no TCP frame). Base: base.",
            "Gripper: joint `gripper` (revolute -0.2..2.0 rad, moves `jaw`). Open = upper: at the upper limit "
            "the moving jaw tip is ~69 mm from the fixed jaw, at the lower limit ~3.5 mm (checked on the "
            "upstream meshes); matches LeRobot's convention (larger = more open).",
        ),
    ),
    Robot(
        name="so101",
        title="TheRobotStudio SO-101 (so101_new_calib) with its single-jaw gripper",
        dist=ERD,
        path=_erd("so_arm_description/urdf/so101.urdf"),
        arms=(Arm("base_link", "gripper_frame_link", "gripper", "upper"),),
        control_hz=30,
        control_hz_note="30 Hz: LeRobot SO-101 datasets and policies run at 30 fps.",
        license="Apache-2.0",
        license_declared_in=_erd("so_arm_description/README.md"),
        license_texts=(APACHE_TEXT,),
        upstream="https://github.com/TheRobotStudio/SO-ARM100",
        choices=(
            "Tip: gripper_frame_link, the TCP frame defined upstream between the jaws (LeRobot's IK target "
            "frame for SO-101). Base: base_link.",
            "Gripper: joint `gripper` (revolute -0.1745..1.7453 rad). Open = upper: at the upper limit the "
            "moving jaw tip is ~73 mm from the fixed jaw, at the lower limit ~4 mm (checked on the meshes).",
            "Stripped also: a non-standard <origin> child of link gripper_frame_link (identity; URDF parsers "
            "ignore it).",
        ),
    ),
    Robot(
        name="kinova_jaco2",
        title="Kinova JACO2 6-DoF spherical wrist, 2 fingers (j2s6s200)",
        dist=ERD,
        path=_erd("kinova_description/robots/kinova.urdf"),
        arms=(Arm("j2s6s200_link_base", "j2s6s200_end_effector"),),
        control_hz=50,
        license="BSD (variant and copyright holder not stated in the package)",
        license_declared_in=_erd("kinova_description/README.md"),
        license_texts=(ERD_PACKAGE_LICENSE,),
        upstream="https://github.com/Kinovarobotics/kinova-ros/tree/melodic-devel/kinova_description",
        choices=(
            "Tip: j2s6s200_end_effector, Kinova's tool frame (fixed on link 6). Base: j2s6s200_link_base (the "
            "root `base` is the mounting block below it).",
            "Joints 1, 4 and 6 are `continuous` (unlimited); the chain passes through them (allowed).",
            "Gripper: none. In this file the finger joints (j2s6s200_joint_finger_1/2, ..._tip_1/2) are "
            "`fixed`, so there is no actuated gripper joint to use.",
        ),
        license_notes=(
            "The package declares only 'BSD' for kinova_description and ships no license text or copyright "
            "line for it; LICENSE therefore holds the example-robot-data package license (BSD-2-Clause) only.",
        ),
    ),
    Robot(
        name="g1",
        title="Unitree G1, 29 DoF, without dexterous hands (rubber hands)",
        dist=ERD,
        path=_erd("g1_description/urdf/g1_29dof_rev_1_0.urdf"),
        arms=(
            Arm("torso_link", "left_rubber_hand"),
            Arm("torso_link", "right_rubber_hand"),
        ),
        control_hz=50,
        license="BSD-3-Clause",
        license_declared_in=_erd("g1_description/README.md"),
        license_texts=(ERD_PACKAGE_LICENSE,),
        upstream="https://github.com/unitreerobotics/unitree_ros/tree/master/robots/g1_description",
        choices=(
            "Source file: g1_29dof_rev_1_0.urdf (29 DoF, no hand joints). The file has no floating base joint "
            "(pelvis is the root), so nothing floating is in the model.",
            "Arms: left then right, each torso_link -> <side>_rubber_hand (the hand/palm frame fixed 0.0415 m "
            "past the wrist-yaw link). Starting at torso_link keeps the waist (and legs) out of the arm chains; "
            "each arm has 7 joints (shoulder pitch/roll/yaw, elbow, wrist roll/pitch/yaw).",
            "Grippers: None, None (the rubber hands have no joints; the Dex3-1 variant "
            "g1_29dof_with_hand_rev_1_0.urdf has 7 joints per hand, which no single gripper joint represents).",
            "Stripped also: non-standard attribute dont_collapse on the two hand-palm joints.",
        ),
        license_notes=(
            "BSD-3-Clause is declared by the packager's README; the package ships no BSD-3-Clause text with "
            "Unitree's copyright line, so LICENSE holds the example-robot-data package license only.",
        ),
    ),
    Robot(
        name="baxter",
        title="Rethink Robotics Baxter with electric parallel grippers",
        dist=ERD,
        path=_erd("baxter_description/urdf/baxter.urdf"),
        arms=(
            Arm("base", "left_gripper", "l_gripper_l_finger_joint", "upper"),
            Arm("base", "right_gripper", "r_gripper_l_finger_joint", "upper"),
        ),
        control_hz=50,
        license="BSD-3-Clause",
        license_declared_in=_erd("baxter_description/LICENSE") + " (README says BSD)",
        license_texts=(
            TextSource("BSD 3-Clause (baxter_description/LICENSE)", ERD, _erd("baxter_description/LICENSE")),
        ),
        upstream="https://github.com/RethinkRobotics/baxter_common/tree/master/baxter_description",
        choices=(
            "Arms: left then right, each base -> <side>_gripper (Baxter SDK's endpoint frame, 0.1327 m past "
            "the gripper base). `base` is the frame the Baxter SDK reports endpoint poses in; torso is fixed "
            "to it. Each arm has 7 joints (s0, s1, e0, e1, w0, w1, w2); head_pan is not on either chain.",
            "Grippers: l_gripper_l_finger_joint / r_gripper_l_finger_joint (prismatic 0..0.020833 m; the "
            "*_r_finger_joint mimics with multiplier -1). Open = upper: the finger frames are 3 mm apart at 0 "
            "and 38.7 mm apart at the upper limit.",
        ),
    ),
    Robot(
        name="kuka_iiwa",
        title="KUKA LBR iiwa 14 R820 (no tool)",
        dist=PYBULLET,
        path="pybullet_data/kuka_iiwa/model.urdf",
        arms=(Arm("lbr_iiwa_link_0", "lbr_iiwa_link_7"),),
        control_hz=50,
        license="BSD-2-Clause",
        license_declared_in="header comment of pybullet_data/kuka_iiwa/model.urdf",
        license_texts=(
            TextSource(
                "BSD 2-Clause, from the header comment of the original model.urdf "
                "(Robert Krug & Todor Stoyanov, AASS Research Center, Orebro University)",
                PYBULLET,
                "pybullet_data/kuka_iiwa/model.urdf",
                xml_comments=True,
            ),
            PYBULLET_PACKAGE_LICENSE,
        ),
        upstream="https://github.com/rtkg/lbr_iiwa (via bullet3/data/kuka_iiwa)",
        choices=(
            "Source file: model.urdf (fixed base, no gripper). model_free_base.urdf adds a free base, "
            "model_vr_limits.urdf narrows limits for a VR demo; kuka_with_gripper*.sdf are SDF.",
            "Tip: lbr_iiwa_link_7 (the media flange link; the file has no separate flange/EE frame). "
            "Base: lbr_iiwa_link_0.",
            "Gripper: none.",
        ),
        license_notes=(
            "The model's BSD-2-Clause notice is in the original file's header comment (kept in LICENSE); the "
            "pybullet edits (Google) are under pybullet's zlib license, also included.",
        ),
    ),
)


# --------------------------------------------------------------------------------------
# Locating files inside installed distributions
# --------------------------------------------------------------------------------------


def _dist_files(dist: metadata.Distribution) -> list[metadata.PackagePath]:
    files = dist.files
    if files is None:
        raise RuntimeError(f"{dist.metadata['Name']} has no RECORD; cannot locate its files")
    return list(files)


def locate(dist_name: str, rel: str) -> tuple[Path, metadata.PackagePath, metadata.Distribution]:
    """Find ``rel`` among the files of the installed distribution ``dist_name``."""
    dist = metadata.distribution(dist_name)
    files = _dist_files(dist)
    if rel.startswith("@dist-info/"):
        tail = rel.removeprefix("@dist-info/")
        hits = [
            f
            for f in files
            if f.parts and f.parts[0].endswith(".dist-info") and PurePosixPath(*f.parts[1:]).as_posix() == tail
        ]
    else:
        hits = [f for f in files if PurePosixPath(*f.parts).as_posix() == rel]
    if len(hits) != 1:
        raise FileNotFoundError(f"{rel!r} not found (exactly once) in distribution {dist_name}")
    path = Path(str(dist.locate_file(hits[0])))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is listed in {dist_name}'s RECORD but missing on disk")
    return path, hits[0], dist


def sha256_of(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_record_hash(entry: metadata.PackagePath, data: bytes) -> None:
    """Compare ``data`` against the sha256 recorded in the wheel's RECORD, if any."""
    if entry.hash is None or entry.hash.mode != "sha256":
        return
    got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    if got != entry.hash.value:
        raise RuntimeError(f"{entry} does not match the hash in its distribution's RECORD (modified install?)")


# --------------------------------------------------------------------------------------
# Stripping
# --------------------------------------------------------------------------------------


def parse_with_comments(data: bytes) -> ET.Element:
    """Parse XML keeping comments (so they can be counted); refuse DTDs/entities."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise ValueError("original URDF contains a DOCTYPE/ENTITY declaration; refusing to parse")
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    parser.feed(data)
    return parser.close()


def _copy(el: ET.Element) -> ET.Element:
    """Deep copy of an element without comments."""
    new = ET.Element(el.tag, dict(el.attrib))
    for ch in el:
        if isinstance(ch.tag, str):
            new.append(_copy(ch))
    return new


def strip_urdf(data: bytes) -> tuple[ET.Element, Counter[str]]:
    """Return a kinematics-only copy of the URDF root and a tally of what was removed."""
    root = parse_with_comments(data)
    if root.tag != "robot":
        raise ValueError(f"root element is <{root.tag}>, expected <robot>")
    removed: Counter[str] = Counter()
    out = ET.Element("robot", {k: v for k, v in root.attrib.items() if k in ROBOT_ATTRS})
    for k in root.attrib:
        if k not in ROBOT_ATTRS:
            removed[f"robot@{k}"] += 1

    def tally_comments(el: ET.Element) -> None:
        for sub in el.iter():
            if sub.tag is ET.Comment:
                removed["comment (inside <robot>)"] += 1

    for el in root:
        if el.tag is ET.Comment:
            removed["comment (inside <robot>)"] += 1
            continue
        if el.tag == "link":
            keep_children, keep_attrs = LINK_CHILDREN, LINK_ATTRS
        elif el.tag == "joint":
            keep_children, keep_attrs = JOINT_CHILDREN, JOINT_ATTRS
        else:
            removed[f"<{el.tag}>"] += 1
            tally_comments(el)
            continue
        new = ET.SubElement(out, el.tag, {k: v for k, v in el.attrib.items() if k in keep_attrs})
        for k in el.attrib:
            if k not in keep_attrs:
                removed[f"{el.tag}@{k}"] += 1
        for ch in el:
            if ch.tag is ET.Comment:
                removed["comment (inside <robot>)"] += 1
            elif el.tag == "joint" and ch.tag == "axis" and el.get("type") == "fixed":
                # ignored by the URDF spec for fixed joints; some files carry "0 0 0" here,
                # which strict parsers reject when normalizing the axis
                removed["joint(fixed)/<axis>"] += 1
            elif ch.tag in keep_children:
                new.append(_copy(ch))
                tally_comments(ch)
            else:
                removed[f"{el.tag}/<{ch.tag}>"] += 1
                tally_comments(ch)
    return out, removed


def render_urdf(root: ET.Element, header: str) -> str:
    """Serialize the stripped tree with an XML declaration and a provenance comment."""
    root = _copy(root)
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    safe_header = header.replace("--", "-")
    return f'<?xml version="1.0" encoding="utf-8"?>\n<!-- {safe_header} -->\n{body}\n'


def check_no_geometry_refs(text: str, where: str) -> None:
    """Fail if any geometry/file reference or DTD survived."""
    low = text.lower()
    for s in FORBIDDEN_SUBSTRINGS:
        if s in low:
            raise AssertionError(f"{where}: forbidden substring {s!r} present")


# --------------------------------------------------------------------------------------
# Kinematic checks on the stripped tree (standard library only)
# --------------------------------------------------------------------------------------


@dataclass
class JointInfo:
    """The few joint fields the checks need."""

    name: str
    type: str
    parent: str
    child: str
    lower: float | None
    upper: float | None
    mimic: str | None


@dataclass
class Tree:
    """Link/joint tree of a URDF."""

    name: str
    links: list[str]
    joints: dict[str, JointInfo]
    joint_to_child: dict[str, JointInfo] = field(default_factory=dict)  # child link -> joint

    @classmethod
    def from_root(cls, root: ET.Element) -> Tree:
        """Build from a parsed ``<robot>`` element."""
        joints: dict[str, JointInfo] = {}
        for j in root.findall("joint"):
            lim = j.find("limit")
            mim = j.find("mimic")
            par, chi = j.find("parent"), j.find("child")
            if par is None or chi is None:
                raise ValueError(f"joint {j.get('name')} lacks parent/child")

            def num(key: str) -> float | None:
                if lim is None or lim.get(key) is None:
                    return None
                return float(lim.get(key))  # type: ignore[arg-type]

            joints[j.get("name", "")] = JointInfo(
                name=j.get("name", ""),
                type=j.get("type", ""),
                parent=par.get("link", ""),
                child=chi.get("link", ""),
                lower=num("lower"),
                upper=num("upper"),
                mimic=None if mim is None else mim.get("joint"),
            )
        tree = cls(root.get("name", ""), [l.get("name", "") for l in root.findall("link")], joints)
        for j in joints.values():
            if j.child in tree.joint_to_child:
                raise ValueError(f"link {j.child} has two parent joints")
            tree.joint_to_child[j.child] = j
        return tree

    @property
    def roots(self) -> list[str]:
        """Links without a parent joint."""
        return [l for l in self.links if l not in self.joint_to_child]

    def path(self, base: str, tip: str) -> list[JointInfo]:
        """Joints from ``base`` down to ``tip`` (base must be an ancestor of tip)."""
        for link in (base, tip):
            if link not in self.links:
                raise KeyError(f"link {link!r} not in {self.name}")
        out: list[JointInfo] = []
        link = tip
        while link != base:
            j = self.joint_to_child.get(link)
            if j is None:
                raise ValueError(f"{base!r} is not an ancestor of {tip!r}")
            out.append(j)
            link = j.parent
        return out[::-1]

    def actuated(self) -> list[JointInfo]:
        """Movable, non-mimic joints in file order."""
        return [j for j in self.joints.values() if j.type != "fixed" and j.mimic is None]

    def is_descendant(self, link: str, ancestor: str) -> bool:
        """True when ``ancestor`` is ``link`` or above it."""
        while True:
            if link == ancestor:
                return True
            j = self.joint_to_child.get(link)
            if j is None:
                return False
            link = j.parent


def check_arms(robot: Robot, tree: Tree) -> list[dict[str, Any]]:
    """Validate the table's arms/grippers against the stripped tree; return a summary per arm."""
    summaries = []
    for arm in robot.arms:
        chain = tree.path(arm.base, arm.tip)
        bad = [j.name for j in chain if j.type in NON_CHAIN_TYPES]
        if bad:
            raise ValueError(f"{robot.name}: chain {arm.base}->{arm.tip} passes through {bad}")
        moving = [j for j in chain if j.type != "fixed"]
        if not moving:
            raise ValueError(f"{robot.name}: chain {arm.base}->{arm.tip} has no movable joint")
        q_joints = [j.name for j in moving if j.mimic is None]
        summary: dict[str, Any] = {
            "base": arm.base,
            "tip": arm.tip,
            "joints": q_joints,
            "continuous": [j.name for j in moving if j.type == "continuous"],
            "gripper": arm.gripper,
            "open": arm.open,
        }
        if arm.gripper is not None:
            g = tree.joints.get(arm.gripper)
            if g is None:
                raise KeyError(f"{robot.name}: gripper joint {arm.gripper!r} not found")
            if g.type not in ("revolute", "prismatic"):
                raise ValueError(f"{robot.name}: gripper {g.name} is {g.type}, need a limited revolute/prismatic")
            if g.mimic is not None:
                raise ValueError(f"{robot.name}: gripper {g.name} mimics {g.mimic}; use the source joint")
            if g.lower is None or g.upper is None or not g.lower < g.upper:
                raise ValueError(f"{robot.name}: gripper {g.name} has no usable limits")
            if arm.open not in ("upper", "lower"):
                raise ValueError(f"{robot.name}: gripper {g.name}: open must be 'upper' or 'lower'")
            if g.name in q_joints:
                raise ValueError(f"{robot.name}: gripper {g.name} lies on the arm chain")
            last_child = moving[-1].child
            if not tree.is_descendant(g.parent, last_child):
                raise ValueError(f"{robot.name}: gripper {g.name} is not mounted after the arm's last joint")
            summary["gripper_limits"] = (g.lower, g.upper)
            summary["followers"] = [j.name for j in tree.joints.values() if j.mimic == g.name]
        summaries.append(summary)
    return summaries


# --------------------------------------------------------------------------------------
# Optional pinocchio cross-check
# --------------------------------------------------------------------------------------


def pinocchio_check(original: bytes, stripped: str, n_samples: int = 8) -> dict[str, Any]:
    """Load both files with pinocchio and compare joint structure, limits, inertias and FK."""
    import numpy as np
    import pinocchio as pin

    m0 = pin.buildModelFromXML(original.decode("utf-8"))
    m1 = pin.buildModelFromXML(stripped)
    assert (m0.nq, m0.nv) == (m1.nq, m1.nv), f"nq/nv differ: {(m0.nq, m0.nv)} vs {(m1.nq, m1.nv)}"
    assert list(m0.names) == list(m1.names), "joint names differ"
    assert [j.shortname() for j in m0.joints] == [j.shortname() for j in m1.joints], "joint types differ"
    for attr in ("lowerPositionLimit", "upperPositionLimit", "velocityLimit", "effortLimit"):
        a, b = getattr(m0, attr), getattr(m1, attr)
        assert np.array_equal(a, b), f"{attr} differs"
    for i0, i1 in zip(m0.inertias, m1.inertias):
        assert np.allclose(i0.toDynamicParameters(), i1.toDynamicParameters()), "inertias differ"
    f0 = {f.name: i for i, f in enumerate(m0.frames) if f.type == pin.FrameType.BODY}
    f1 = {f.name: i for i, f in enumerate(m1.frames) if f.type == pin.FrameType.BODY}
    assert set(f0) == set(f1), "body frames differ"
    d0, d1 = m0.createData(), m1.createData()
    np.random.seed(0)  # pin.randomConfiguration draws from numpy's global generator
    lo = np.where(np.isfinite(m0.lowerPositionLimit), m0.lowerPositionLimit, -np.pi)
    hi = np.where(np.isfinite(m0.upperPositionLimit), m0.upperPositionLimit, np.pi)
    max_err = 0.0
    for _ in range(n_samples):
        q = pin.randomConfiguration(m0, lo, hi) if m0.nq else np.zeros(0)
        pin.framesForwardKinematics(m0, d0, q)
        pin.framesForwardKinematics(m1, d1, q)
        for name, i in f0.items():
            err = np.abs(d0.oMf[i].homogeneous - d1.oMf[f1[name]].homogeneous).max()
            max_err = max(max_err, float(err))
    assert max_err < 1e-12, f"frame placements differ by {max_err}"
    return {"nq": m1.nq, "nv": m1.nv, "njoints": m1.njoints - 1, "max_fk_err": max_err}


# --------------------------------------------------------------------------------------
# LICENSE and SOURCE.md
# --------------------------------------------------------------------------------------


def _leading_xml_comments(data: bytes) -> str:
    """Text of the XML comments that precede the root element, with comment markers removed."""
    text = data.decode("utf-8")
    end = text.find("<robot")
    lines = []
    for raw in text[:end].splitlines():
        s = raw.strip()
        if s.startswith("<?xml"):
            continue
        if s.startswith("<!--"):
            s = s[4:]
        if s.endswith("-->"):
            s = s[:-3]
        lines.append(s.rstrip())
    # keep from the LICENSE marker on
    for i, line in enumerate(lines):
        if "LICENSE" in line:
            return "\n".join(l for l in lines[i:]).strip() + "\n"
    raise ValueError("no LICENSE block in the leading comments")


def license_text(src: TextSource) -> tuple[str, str]:
    """Return (text, provenance line) for one license text source."""
    try:
        path, entry, dist = locate(src.dist, src.path)
    except (metadata.PackageNotFoundError, FileNotFoundError):
        if src.fallback is None:
            raise
        return src.fallback, f"{src.dist} not installed: fallback notice used instead of the full text"
    data = path.read_bytes()
    check_record_hash(entry, data)
    if src.xml_comments:
        text = _leading_xml_comments(data)
    else:
        text = data.decode("utf-8")
        if src.start is not None:
            idx = text.find(src.start)
            if idx < 0:
                raise ValueError(f"marker {src.start!r} not in {path}")
            text = text[idx:]
    where = f"{src.dist}=={dist.version}: {PurePosixPath(*entry.parts).as_posix()}"
    return text.rstrip() + "\n", where


def write_license(robot: Robot, out_dir: Path) -> list[str]:
    """Write LICENSE; return the provenance lines of the texts used."""
    parts = [
        f"License of the {robot.title} robot description bundled in this folder.\n"
        f"Declared license: {robot.license}\n"
        f"Declared in: {robot.license_declared_in}\n"
        f"Upstream: {robot.upstream}\n"
        "robot.urdf is a modified (kinematics-only) version of the original file; see SOURCE.md.\n"
    ]
    provenance = []
    for src in robot.license_texts:
        text, where = license_text(src)
        provenance.append(f"{src.title} <- {where}")
        bar = "=" * 78
        parts.append(f"{bar}\n{src.title}\n[{where}]\n{bar}\n\n{text}")
    (out_dir / "LICENSE").write_text("\n".join(parts), encoding="utf-8")
    return provenance


def _fmt_removed(removed: Counter[str]) -> str:
    return "\n".join(f"| `{k}` | {v} |" for k, v in sorted(removed.items()))


def write_source_md(
    robot: Robot,
    out_dir: Path,
    *,
    version: str,
    rel_path: str,
    sha_original: str,
    sha_stripped: str,
    removed: Counter[str],
    tree: Tree,
    arms: list[dict[str, Any]],
    license_provenance: list[str],
    pin_report: dict[str, Any] | None,
) -> None:
    """Write SOURCE.md (provenance, stripping, choices, license)."""
    movable = [j for j in tree.joints.values() if j.type != "fixed"]
    actuated = tree.actuated()
    lines = [
        f"# {robot.name}: {robot.title}",
        "",
        "Generated by `adapters/build_adapters.py`; edit the table there, not this file.",
        "",
        "## Source",
        "",
        f"- PyPI package: `{robot.dist}` version `{version}`",
        f"- Original file inside the package: `{rel_path}`",
        f"- sha256 of the original file: `{sha_original}` (matches the package's RECORD)",
        f"- sha256 of the generated robot.urdf: `{sha_stripped}`",
        f"- Upstream description: {robot.upstream}",
        f"- Robot name in the URDF: `{tree.name}`; root link: `{', '.join(tree.roots)}`",
        f"- {len(tree.links)} links, {len(tree.joints)} joints, {len(movable)} movable "
        f"({len(actuated)} actuated, {len(movable) - len(actuated)} mimic)",
        "",
        "## What was stripped",
        "",
        "Kept: `<robot name>`, every `<link name>` with its `<inertial>`, every `<joint name type>` with "
        "`parent`, `child`, `origin`, `axis` (not on fixed joints, where URDF ignores it), `limit`, `mimic`, "
        "`dynamics`, `calibration`, `safety_controller`. Link and joint names and all numeric values are unchanged (attribute strings "
        "copied verbatim). Everything else was removed:",
        "",
        "| removed | count |",
        "|---|---|",
        _fmt_removed(removed),
        "",
        "No geometry file references remain; the file has no DOCTYPE.",
        "",
    ]
    if pin_report is not None:
        lines += [
            "Checked with pinocchio: original and stripped models have the same nq/nv "
            f"({pin_report['nq']}/{pin_report['nv']}), joint names and types, position/velocity/effort limits, "
            f"inertias, and body-frame placements at random configurations (max error {pin_report['max_fk_err']:.1e}).",
            "",
        ]
    lines += ["## Embodiment choices", ""]
    for i, a in enumerate(arms):
        g = "none" if a["gripper"] is None else f"`{a['gripper']}`, open = `{a['open']}` limit"
        if a["gripper"] is not None:
            lo, hi = a["gripper_limits"]
            g += f" (limits {lo:g} .. {hi:g})"
            if a["followers"]:
                g += f"; mimic followers: {', '.join(f'`{f}`' for f in a['followers'])}"
        lines += [
            f"- Arm {i}: `{a['base']}` -> `{a['tip']}`, {len(a['joints'])} joints: "
            + ", ".join(f"`{j}`" for j in a["joints"])
            + (f" (continuous: {', '.join(a['continuous'])})" if a["continuous"] else ""),
            f"  - Gripper: {g}",
        ]
    hz_note = robot.control_hz_note or (
        f"{robot.control_hz:g} Hz: a typical rate at which learned policies command this class of arm "
        "(low-level servo loops run faster; the card describes the action rate)."
    )
    lines += ["", f"- control_hz: {robot.control_hz:g}. {hz_note}", "", "Why:", ""]
    lines += [f"- {c}" for c in robot.choices]
    lines += [
        "",
        "## License",
        "",
        f"- License: **{robot.license}**",
        f"- Declared in: {robot.license_declared_in}",
        "- Texts copied into LICENSE:",
    ]
    lines += [f"  - {p}" for p in license_provenance]
    if robot.license_notes:
        lines += ["- Caveats:"]
        lines += [f"  - {n}" for n in robot.license_notes]
    lines.append("")
    (out_dir / "SOURCE.md").write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def build_one(robot: Robot, *, verify: bool, cards: bool) -> dict[str, Any]:
    """Build adapters/<robot.name>/; return a summary row."""
    out_dir = ADAPTERS_DIR / robot.name
    out_dir.mkdir(parents=True, exist_ok=True)

    src, entry, dist = locate(robot.dist, robot.path)
    original = src.read_bytes()
    check_record_hash(entry, original)
    sha_original = sha256_of(original)
    version = dist.version
    rel_path = PurePosixPath(*entry.parts).as_posix()

    stripped_root, removed = strip_urdf(original)
    header = (
        f"Kinematics-only URDF of {robot.title}, generated by adapters/build_adapters.py from "
        f"{robot.dist}=={version}: {rel_path} (sha256 {sha_original}). "
        f"License: {robot.license}; see LICENSE and SOURCE.md in this folder. Do not edit by hand."
    )
    text = render_urdf(stripped_root, header)
    check_no_geometry_refs(text, f"{robot.name}/robot.urdf")
    tree = Tree.from_root(ET.fromstring(text))
    if len(tree.roots) != 1:
        raise ValueError(f"{robot.name}: expected one root link, got {tree.roots}")
    arms = check_arms(robot, tree)
    pin_report = pinocchio_check(original, text) if verify else None

    urdf_path = out_dir / "robot.urdf"
    urdf_path.write_text(text, encoding="utf-8")
    provenance = write_license(robot, out_dir)
    write_source_md(
        robot,
        out_dir,
        version=version,
        rel_path=rel_path,
        sha_original=sha_original,
        sha_stripped=sha256_of(text.encode("utf-8")),
        removed=removed,
        tree=tree,
        arms=arms,
        license_provenance=provenance,
        pin_report=pin_report,
    )
    row: dict[str, Any] = {
        "name": robot.name,
        "source": f"{robot.dist}=={version}:{rel_path}",
        "dof": len(tree.actuated()),
        "arms": [f"{a['base']}->{a['tip']} ({len(a['joints'])})" for a in arms],
        "grippers": [a["gripper"] for a in arms],
        "open": [a["open"] for a in arms],
        "control_hz": robot.control_hz,
        "license": robot.license,
        "pin": pin_report,
        "card": None,
    }
    if cards:
        row["card"] = build_card(robot, out_dir, original if verify else None)
    return row


def build_card(robot: Robot, out_dir: Path, original: bytes | None) -> str:
    """Generate embodiment.json with the embodyhub library (which may rewrite robot.urdf)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from embodyhub.embodiment import Embodiment

    emb = Embodiment.from_urdf(
        out_dir / "robot.urdf",
        arms=[(a.base, a.tip) for a in robot.arms],
        grippers=[a.gripper_entry() for a in robot.arms],
        control_hz=robot.control_hz,
        name=robot.name,
    )
    emb.save_pretrained(out_dir)
    card = out_dir / "embodiment.json"
    if not card.is_file():
        raise RuntimeError(f"{robot.name}: save_pretrained wrote no embodiment.json")
    json.loads(card.read_text(encoding="utf-8"))
    # save_pretrained also writes robot.urdf: make sure it is still clean and equivalent.
    text = (out_dir / "robot.urdf").read_text(encoding="utf-8")
    check_no_geometry_refs(text, f"{robot.name}/robot.urdf (after save_pretrained)")
    if original is not None:
        pinocchio_check(original, text)
    return str(card.relative_to(REPO_ROOT))


def write_index(rows: list[dict[str, Any]]) -> None:
    """Write adapters/README.md, a table of all bundled robots (full builds only)."""
    lines = [
        "# Bundled robots",
        "",
        "Generated by `adapters/build_adapters.py` (run `.venv/bin/python adapters/build_adapters.py` from the",
        "repository root after editing its `ROBOTS` table). Each folder holds `robot.urdf` (kinematics only),",
        "`LICENSE`, `SOURCE.md` (provenance and choices) and `embodiment.json` (the card).",
        "",
        "| folder | source | DoF | arms (base -> tip, joints) | grippers | open | control_hz | license |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        grippers = ", ".join("none" if g is None else f"`{g}`" for g in r["grippers"])
        opens = ", ".join("-" if o is None else o for o in r["open"])
        lines.append(
            f"| `{r['name']}` | `{r['source']}` | {r['dof']} | {'; '.join(r['arms'])} | {grippers} | {opens} "
            f"| {r['control_hz']:g} | {r['license']} |"
        )
    lines.append("")
    (ADAPTERS_DIR / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-cards", action="store_true", help="skip embodiment.json (no embodyhub needed)")
    ap.add_argument("--no-verify", action="store_true", help="skip the pinocchio cross-check")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="build only these robots")
    args = ap.parse_args(argv)

    names = [r.name for r in ROBOTS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate robot names in the table")
    selected = [r for r in ROBOTS if not args.only or r.name in args.only]
    unknown = set(args.only or ()) - set(names)
    if unknown:
        raise SystemExit(f"unknown robot(s): {sorted(unknown)}; known: {names}")

    failures = 0
    rows: list[dict[str, Any]] = []
    for robot in selected:
        try:
            row = build_one(robot, verify=not args.no_verify, cards=not args.no_cards)
        except Exception as exc:  # report every robot, then fail
            failures += 1
            print(f"FAIL {robot.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        rows.append(row)
        pin_s = "" if row["pin"] is None else f" nq={row['pin']['nq']} fk_err={row['pin']['max_fk_err']:.0e}"
        card_s = "" if row["card"] is None else f" card={row['card']}"
        print(
            f"ok   {row['name']:13s} dof={row['dof']:<3d} arms={row['arms']} grippers={row['grippers']} "
            f"open={row['open']} hz={row['control_hz']:g}{pin_s}{card_s}"
        )
    if failures:
        print(f"{failures} robot(s) failed", file=sys.stderr)
        return 1
    if not args.only:
        write_index(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
