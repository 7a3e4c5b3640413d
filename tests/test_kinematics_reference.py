"""Reference tests: embodyhub FK / Jacobian / IK against pinocchio (float64, max abs error <= 1e-10).

Robots come straight from the installed PyPI packages (example-robot-data, pybullet_data; located through
``importlib.metadata``), from every bundled ``adapters/<name>/robot.urdf`` (globbed at collection time) and
from small hand-written URDFs (mimic joints in the middle of a chain, floating/planar joints).

The reference is independent of embodyhub's parser: the URDF is read with ``xml.etree`` for the tree,
limits and mimic tags, and with ``pinocchio.buildModelFromXML`` (mimic support OFF: a mimic joint is an
ordinary joint whose value this file sets to ``multiplier * q_leader + offset``; its Jacobian column, times
the multiplier, is added to the leader's column).

Conventions checked (notes/API.md): ``chain.forward_kinematics(q)`` is the tip pose in the base-link frame,
``T_ref = inv(oMf[base]) @ oMf[tip]``; ``chain.jacobian(q)`` is geometric, rows 0:3 the linear velocity of
the tip origin, rows 3:6 the angular velocity, both in the base-link frame:
``J_ref = blockdiag(R_base^T, R_base^T) @ J_tip(LOCAL_WORLD_ALIGNED)[:, chain joints]``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import math
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

pin = pytest.importorskip("pinocchio")

from embodyhub.errors import KinematicsError  # noqa: E402
from embodyhub.kinematics import RobotModel  # noqa: E402

TOL = 1e-10
SMALL_BATCH, WIDE_BATCH = 7, 100  # the implementation switches evaluation strategy above 64 (flattened)
MAX_LEAVES = 6
ADAPTERS_DIR = Path(__file__).resolve().parents[1] / "adapters"


# ----------------------------------------------------------------------------------------------
# Hand-written URDFs
# ----------------------------------------------------------------------------------------------
_LIM = '<limit lower="{lo}" upper="{hi}" effort="10" velocity="2"/>'

# A chain base -> tip with mimic joints in the middle: a revolute follower of an on-path revolute leader
# (negative multiplier + offset), a prismatic follower of an on-path prismatic leader, a revolute follower
# of a continuous leader, and a follower whose leader sits on a side branch (off the path). Axes are
# non-unit and not axis aligned, origins carry rpy.
MIMIC_URDF = f"""<?xml version="1.0"?>
<robot name="mimic_middle">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/><link name="l4"/>
  <link name="l5"/><link name="l6"/><link name="l7"/><link name="tip"/><link name="side"/>
  <joint name="j1" type="revolute">
    <parent link="base"/><child link="l1"/><origin xyz="0.1 0 0.3" rpy="0.1 -0.2 0.3"/>
    <axis xyz="0 0 1"/>{_LIM.format(lo=-2.5, hi=2.5)}
  </joint>
  <joint name="j2_mimic" type="revolute">
    <parent link="l1"/><child link="l2"/><origin xyz="0 0.2 0.1" rpy="0.5 0 0"/>
    <axis xyz="1 2 2"/>{_LIM.format(lo=-3, hi=3)}<mimic joint="j1" multiplier="-0.7" offset="0.3"/>
  </joint>
  <joint name="j3" type="prismatic">
    <parent link="l2"/><child link="l3"/><origin xyz="0.05 0.05 0.2" rpy="0 0.4 0"/>
    <axis xyz="0.6 0 0.8"/>{_LIM.format(lo=-0.2, hi=0.4)}
  </joint>
  <joint name="j4" type="continuous">
    <parent link="l3"/><child link="l4"/><origin xyz="0 0 0.15" rpy="-0.3 0.2 1.0"/>
    <axis xyz="0 1 0"/>
  </joint>
  <joint name="j5_mimic" type="prismatic">
    <parent link="l4"/><child link="l5"/><origin xyz="0.1 0 0" rpy="0 0 0"/>
    <axis xyz="1 0 0"/>{_LIM.format(lo=-1, hi=1)}<mimic joint="j3" multiplier="2.0" offset="0.1"/>
  </joint>
  <joint name="j6_mimic" type="revolute">
    <parent link="l5"/><child link="l6"/><origin xyz="0 0.1 0.1" rpy="0 0 -0.5"/>
    <axis xyz="-1 1 0"/>{_LIM.format(lo=-4, hi=4)}<mimic joint="j4" multiplier="1.5" offset="-0.2"/>
  </joint>
  <joint name="side_joint" type="revolute">
    <parent link="base"/><child link="side"/><origin xyz="0 -0.3 0"/>
    <axis xyz="0 0 1"/>{_LIM.format(lo=-1.2, hi=0.9)}
  </joint>
  <joint name="j7_mimic" type="revolute">
    <parent link="l6"/><child link="l7"/><origin xyz="0.2 0 0.05" rpy="0.2 0.1 0"/>
    <axis xyz="0 0 1"/>{_LIM.format(lo=-3, hi=3)}<mimic joint="side_joint" multiplier="-1.3" offset="0.05"/>
  </joint>
  <joint name="tip_joint" type="fixed">
    <parent link="l7"/><child link="tip"/><origin xyz="0 0 0.12" rpy="1.0 0.5 -0.25"/>
  </joint>
</robot>
"""

# world -floating-> base_link -revolute-> link1 -planar-> link2 -revolute-> link3 -prismatic-> link4
FLOATING_URDF = f"""<?xml version="1.0"?>
<robot name="floating_and_planar">
  <link name="world"/><link name="base_link"/><link name="link1"/><link name="link2"/>
  <link name="link3"/><link name="link4"/>
  <joint name="float" type="floating"><parent link="world"/><child link="base_link"/></joint>
  <joint name="r1" type="revolute">
    <parent link="base_link"/><child link="link1"/><origin xyz="0 0 0.2" rpy="0.3 0 0"/>
    <axis xyz="0 1 0"/>{_LIM.format(lo=-1.5, hi=1.5)}
  </joint>
  <joint name="plane" type="planar">
    <parent link="link1"/><child link="link2"/><origin xyz="0.1 0 0.1"/><axis xyz="0 0 1"/>
  </joint>
  <joint name="r2" type="revolute">
    <parent link="link2"/><child link="link3"/><origin xyz="0 0.1 0.3" rpy="0 0.2 0.1"/>
    <axis xyz="1 0 1"/>{_LIM.format(lo=-2, hi=2)}
  </joint>
  <joint name="p1" type="prismatic">
    <parent link="link3"/><child link="link4"/><origin xyz="0.05 0 0.1"/>
    <axis xyz="0 0 1"/>{_LIM.format(lo=0, hi=0.3)}
  </joint>
</robot>
"""


# ----------------------------------------------------------------------------------------------
# Robot sources
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    dist: str | None  # PyPI distribution holding the file (None: adapters / inline)
    rel: str  # suffix of the file path inside the distribution, or an adapters path, or "<inline>"
    text: str | None = None


ERD_ROBOTS = "cmeel.prefix/share/example-robot-data/robots/"
PACKAGE_ROBOTS = {
    "erd-panda": Source("example-robot-data", ERD_ROBOTS + "panda_description/urdf/panda.urdf"),
    "erd-ur5": Source("example-robot-data", ERD_ROBOTS + "ur_description/urdf/ur5_robot.urdf"),
    "erd-ur10": Source("example-robot-data", ERD_ROBOTS + "ur_description/urdf/ur10_robot.urdf"),
    "erd-xarm7": Source("example-robot-data", ERD_ROBOTS + "xarm_description/urdf/xarm7.urdf"),
    "erd-so100": Source("example-robot-data", ERD_ROBOTS + "so_arm_description/urdf/so100.urdf"),
    "erd-so101": Source("example-robot-data", ERD_ROBOTS + "so_arm_description/urdf/so101.urdf"),
    "erd-kinova": Source("example-robot-data", ERD_ROBOTS + "kinova_description/robots/kinova.urdf"),
    "erd-z1": Source("example-robot-data", ERD_ROBOTS + "z1_description/urdf/z1.urdf"),
    "erd-g1_29dof": Source("example-robot-data", ERD_ROBOTS + "g1_description/urdf/g1_29dof_rev_1_0.urdf"),
    "erd-baxter": Source("example-robot-data", ERD_ROBOTS + "baxter_description/urdf/baxter.urdf"),
    "erd-talos_reduced": Source("example-robot-data", ERD_ROBOTS + "talos_data/robots/talos_reduced.urdf"),
    "erd-tiago": Source("example-robot-data", ERD_ROBOTS + "tiago_description/robots/tiago.urdf"),
    "erd-tiago_pro": Source("example-robot-data", ERD_ROBOTS + "tiago_pro_description/robots/tiago_pro.urdf"),
    "erd-pr2": Source("example-robot-data", ERD_ROBOTS + "pr2_description/urdf/pr2.urdf"),
    "erd-romeo": Source("example-robot-data", ERD_ROBOTS + "romeo_description/urdf/romeo.urdf"),
    "erd-double_pendulum_continuous": Source(
        "example-robot-data", ERD_ROBOTS + "double_pendulum_description/urdf/double_pendulum_continuous.urdf"
    ),
    "pb-kuka_iiwa": Source("pybullet", "pybullet_data/kuka_iiwa/model.urdf"),
    "pb-xarm6": Source("pybullet", "pybullet_data/xarm/xarm6_robot.urdf"),
    "pb-xarm6_with_gripper": Source("pybullet", "pybullet_data/xarm/xarm6_with_gripper.urdf"),
}
INLINE_ROBOTS = {
    "inline-mimic_middle": Source(None, "<inline>", MIMIC_URDF),
    "inline-floating_planar": Source(None, "<inline>", FLOATING_URDF),
}
INLINE_CHAINS = {"inline-floating_planar": [("base_link", "link1")]}  # below the floating joint
ADAPTER_ROBOTS = {
    f"adapter-{p.parent.name}": Source(None, str(p)) for p in sorted(ADAPTERS_DIR.glob("*/robot.urdf"))
}
ALL_ROBOTS = {**PACKAGE_ROBOTS, **INLINE_ROBOTS, **ADAPTER_ROBOTS}


def _package_file(dist: str, rel: str) -> Path:
    try:
        files = metadata.files(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"PyPI package {dist!r} is not installed")
    for f in files or ():
        if str(f).replace("\\", "/").endswith(rel):
            path = Path(f.locate())
            assert path.is_file(), f"{dist} lists {rel} but {path} is missing"
            return path
    pytest.fail(f"{dist} {metadata.version(dist)} is installed but does not ship {rel}")


def _source_text(source: Source) -> tuple[str, str]:
    """(URDF text, what to pass to RobotModel.from_urdf) -- a path for files, the XML for inline."""
    if source.text is not None:
        return source.text, source.text
    if source.dist is not None:
        path = _package_file(source.dist, source.rel)
    else:
        path = Path(source.rel)
    return path.read_text(encoding="utf-8"), str(path)


# ----------------------------------------------------------------------------------------------
# Independent reference (xml.etree + pinocchio)
# ----------------------------------------------------------------------------------------------
@dataclass
class UJoint:
    name: str
    type: str
    parent: str
    child: str
    lower: float
    upper: float
    mimic: tuple[str, float, float] | None  # (leader, multiplier, offset)


class Reference:
    """Tree, limits and mimic tags from xml.etree; FK/Jacobian from pinocchio (mimic support off)."""

    def __init__(self, text: str, embodiment_arms: list[tuple[str, str]] | None = None):
        root = ET.fromstring(text.encode("utf-8"))
        self.links = [el.get("name") for el in root.findall("link")]
        self.joints: dict[str, UJoint] = {}
        for el in root.findall("joint"):
            jtype = el.get("type")
            lim = el.find("limit")
            lower = float(lim.get("lower", 0.0)) if lim is not None else 0.0
            upper = float(lim.get("upper", 0.0)) if lim is not None else 0.0
            if jtype == "continuous":
                lower, upper = -math.inf, math.inf
            mim = el.find("mimic")
            mimic = None
            if mim is not None and jtype != "fixed":
                mimic = (mim.get("joint"), float(mim.get("multiplier", 1.0)), float(mim.get("offset", 0.0)))
            name = el.get("name")
            self.joints[name] = UJoint(
                name, jtype, el.find("parent").get("link"), el.find("child").get("link"), lower, upper, mimic
            )
        self.parent_of = {j.child: j for j in self.joints.values()}
        self.children: dict[str, list[UJoint]] = {link: [] for link in self.links}
        for j in self.joints.values():
            self.children[j.parent].append(j)
        roots = [link for link in self.links if link not in self.parent_of]
        assert len(roots) == 1, roots
        self.root = roots[0]
        self.embodiment_arms = embodiment_arms or []

        try:
            self.model = pin.buildModelFromXML(text, mimic=False)
        except TypeError:  # pinocchio < 3.4 has no mimic support at all (same behaviour)
            self.model = pin.buildModelFromXML(text)
        self.data = self.model.createData()

    # ---------------------------------------------------------------- tree helpers
    def path(self, base: str, tip: str) -> list[UJoint]:
        out, link = [], tip
        while link != base:
            j = self.parent_of[link]
            out.append(j)
            link = j.parent
        return out[::-1]

    def moving(self, base: str, tip: str) -> list[UJoint]:
        return [j for j in self.path(base, tip) if j.type != "fixed"]

    def expected_joint_names(self, base: str, tip: str) -> list[str]:
        """Actuated joints on the path in order, then the off-path leaders of on-path mimic joints."""
        moving = self.moving(base, tip)
        names = [j.name for j in moving if j.mimic is None]
        for j in moving:
            if j.mimic is not None and j.mimic[0] not in names:
                names.append(j.mimic[0])
        return names

    def bounds(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Sampling box: URDF limits, continuous joints in [-pi, pi]."""
        lo = np.array([self.joints[n].lower for n in names], dtype=np.float64)
        hi = np.array([self.joints[n].upper for n in names], dtype=np.float64)
        lo = np.where(np.isfinite(lo), lo, -math.pi)
        hi = np.where(np.isfinite(hi), hi, math.pi)
        return lo, hi

    def pick_chains(self) -> list[tuple[str, str]]:
        """root -> up to MAX_LEAVES leaves (deepest first, then leaves whose path holds a mimic joint, then
        evenly spaced), the embodiment arms, and chains whose base is an intermediate link."""

        def start(tip: str) -> str:  # below the last floating/planar joint on root -> tip
            base = self.root
            for j in self.path(self.root, tip):
                if j.type in ("floating", "planar"):
                    base = j.child
            return base

        leaves = [l for l in self.links if not self.children[l] and self.moving(start(l), l)]
        chosen: list[str] = []

        def take(leaf: str) -> None:
            if leaf not in chosen and len(chosen) < MAX_LEAVES:
                chosen.append(leaf)

        if leaves:
            take(max(leaves, key=lambda l: len(self.moving(start(l), l))))
            mimic_leaves = [l for l in leaves if any(j.mimic for j in self.moving(start(l), l))]
            off_path = [
                l for l in mimic_leaves
                if any(j.mimic and j.mimic[0] not in {k.name for k in self.path(start(l), l)}
                       for j in self.moving(start(l), l))
            ]
            for l in (off_path[:1] + mimic_leaves)[:2]:
                take(l)
            for i in np.linspace(0, len(leaves) - 1, min(len(leaves), MAX_LEAVES)).round().astype(int):
                take(leaves[int(i)])
        chains = [(start(l), l) for l in chosen]
        chains += [arm for arm in self.embodiment_arms if arm not in chains]

        # intermediate bases (not the root): the middle and the first moving joint of the deepest chain
        extra = []
        for base, tip in chains[:1] + [c for c in chains if any(j.mimic for j in self.moving(*c))][:1]:
            moving = self.moving(base, tip)
            if len(moving) >= 2:
                for k in sorted({0, len(moving) // 2 - 1}):
                    extra.append((moving[k].child, tip))
                extra.append((base, moving[len(moving) // 2].child))  # a tip that is not a leaf
        chains += [c for c in dict.fromkeys(extra) if c not in chains]
        return chains

    # ---------------------------------------------------------------- pinocchio evaluation
    def configurations(self, names: list[str], q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Full pinocchio configurations [B, nq]: chain joints from q, every other joint random (so the
        base link moves in the world), mimic joints = multiplier * leader + offset."""
        B = q.shape[0]
        model = self.model
        values: dict[str, np.ndarray] = {}
        for j in self.joints.values():
            if j.type in ("revolute", "continuous", "prismatic") and j.mimic is None:
                if j.name in names:
                    values[j.name] = q[:, names.index(j.name)]
                else:
                    lo, hi = self.bounds([j.name])
                    values[j.name] = rng.uniform(lo[0], hi[0], B)
        for j in self.joints.values():
            if j.mimic is not None:
                leader, mult, offset = j.mimic
                values[j.name] = mult * values[leader] + offset
        Q = np.tile(pin.neutral(model), (B, 1))
        for name, v in values.items():
            jm = model.joints[model.getJointId(name)]
            iq = jm.idx_q
            if jm.nq == 1:
                Q[:, iq] = v
            elif jm.nq == 2 and jm.nv == 1:  # continuous: (cos, sin)
                Q[:, iq], Q[:, iq + 1] = np.cos(v), np.sin(v)
            else:  # pragma: no cover
                raise AssertionError(f"unexpected pinocchio joint for {name}: {jm.shortname()}")
        for j in self.joints.values():
            if j.type not in ("floating", "planar"):
                continue
            jm = model.joints[model.getJointId(j.name)]
            iq = jm.idx_q
            if jm.nq == 7:  # free flyer: xyz + unit quaternion (x, y, z, w)
                quat = rng.normal(size=(B, 4))
                Q[:, iq : iq + 3] = rng.uniform(-1, 1, (B, 3))
                Q[:, iq + 3 : iq + 7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
            elif jm.nq == 4:  # planar: x, y, cos, sin
                th = rng.uniform(-math.pi, math.pi, B)
                Q[:, iq : iq + 2] = rng.uniform(-1, 1, (B, 2))
                Q[:, iq + 2], Q[:, iq + 3] = np.cos(th), np.sin(th)
        return Q

    def fk_jacobian(self, base: str, tip: str, names: list[str], Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model, data = self.model, self.data
        fb, ft = model.getFrameId(base, pin.BODY), model.getFrameId(tip, pin.BODY)
        assert fb < model.nframes and ft < model.nframes, (base, tip)
        columns = []  # (pinocchio idx_v, column in the chain's Jacobian, multiplier)
        for j in self.moving(base, tip):
            leader, mult = (j.mimic[0], j.mimic[1]) if j.mimic else (j.name, 1.0)
            columns.append((model.joints[model.getJointId(j.name)].idx_v, names.index(leader), mult))
        B = Q.shape[0]
        T = np.empty((B, 4, 4))
        J = np.zeros((B, 6, len(names)))
        for b in range(B):
            pin.computeJointJacobians(model, data, Q[b])
            pin.updateFramePlacements(model, data)
            oMb, oMt = data.oMf[fb], data.oMf[ft]
            T[b] = (oMb.inverse() * oMt).homogeneous
            Jw = pin.getFrameJacobian(model, data, ft, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)
            for iv, col, mult in columns:
                J[b, :, col] += mult * Jw[:, iv]
            Rt = oMb.rotation.T
            J[b, :3], J[b, 3:] = Rt @ J[b, :3], Rt @ J[b, 3:]
        return T, J


def _embodiment_arms(urdf_path: str) -> list[tuple[str, str]]:
    card = Path(urdf_path).parent / "embodiment.json"
    if not card.is_file():
        return []
    arms = json.loads(card.read_text(encoding="utf-8")).get("arms") or []
    return [(a["base"], a["tip"]) for a in arms if isinstance(a, dict) and "base" in a and "tip" in a]


@dataclass
class Loaded:
    robot: RobotModel
    ref: Reference
    chains: list[tuple[str, str]]


@lru_cache(maxsize=None)
def _load(robot_id: str) -> Loaded:
    source = ALL_ROBOTS[robot_id]
    text, arg = _source_text(source)
    arms = _embodiment_arms(arg) if robot_id.startswith("adapter-") else INLINE_CHAINS.get(robot_id, [])
    ref = Reference(text, arms)
    return Loaded(RobotModel.from_urdf(arg), ref, ref.pick_chains())


def load(robot_id: str) -> Loaded:
    source = ALL_ROBOTS[robot_id]
    if source.dist is not None:
        _package_file(source.dist, source.rel)  # skips (outside the cache) when the package is missing
    return _load(robot_id)


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _limit_rows(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """All joints at the lower limit, at the upper limit, and the two alternating corners."""
    alt = np.arange(lo.size) % 2 == 0
    return np.stack([lo, hi, np.where(alt, lo, hi), np.where(alt, hi, lo)])


def _joint_configs(ref: Reference, names: list[str], mode: str, rng: np.random.Generator) -> np.ndarray:
    lo, hi = ref.bounds(names)
    if mode == "limits":
        return _limit_rows(lo, hi)
    batch = SMALL_BATCH if mode == "batch7" else WIDE_BATCH
    q = rng.uniform(lo, hi, (batch, len(names)))
    if mode == "batch100":  # the wide path sees the limits too
        q[:4] = _limit_rows(lo, hi)
    return q


# ----------------------------------------------------------------------------------------------
# FK / Jacobian against pinocchio
# ----------------------------------------------------------------------------------------------
ROBOT_IDS = list(ALL_ROBOTS)


@pytest.mark.parametrize("mode", ["batch7", "batch100", "limits"])
@pytest.mark.parametrize("robot_id", ROBOT_IDS)
def test_fk_and_jacobian_match_pinocchio(robot_id: str, mode: str):
    loaded = load(robot_id)
    ref, robot = loaded.ref, loaded.robot
    assert any(base != ref.root for base, _ in loaded.chains), "no chain with an intermediate base"
    failures = []
    for base, tip in loaded.chains:
        chain = robot.chain(base, tip)
        names = chain.joint_names
        assert names == ref.expected_joint_names(base, tip), (base, tip)
        q = _joint_configs(ref, names, mode, _rng(robot_id, base, tip, mode))
        Q = ref.configurations(names, q, _rng(robot_id, base, tip, mode, "background"))
        T_ref, J_ref = ref.fk_jacobian(base, tip, names, Q)

        qt = torch.from_numpy(q)
        T = chain.forward_kinematics(qt)
        T2, J = chain.forward_kinematics_with_jacobian(qt)
        J1 = chain.jacobian(qt)
        assert T.dtype == J.dtype == torch.float64
        assert T.shape == (q.shape[0], 4, 4) and J.shape == (q.shape[0], 6, len(names))
        where = f"{robot_id} chain {base}->{tip} (n={len(names)}) {mode} (batch {q.shape[0]})"
        errs = {
            "FK": np.abs(T.numpy() - T_ref).max(),
            "FK(with_jacobian)": np.abs(T2.numpy() - T_ref).max(),
            "J": np.abs(J.numpy() - J_ref).max() if names else 0.0,
            "jacobian()": np.abs(J1.numpy() - J_ref).max() if names else 0.0,
        }
        for what, err in errs.items():
            if not err <= TOL:
                failures.append(f"{where}: {what} max abs error {err:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("robot_id", ROBOT_IDS)
def test_chain_joint_limits_match_urdf(robot_id: str):
    loaded = load(robot_id)
    ref = loaded.ref
    for base, tip in loaded.chains:
        chain = loaded.robot.chain(base, tip)
        lo = torch.tensor([ref.joints[n].lower for n in chain.joint_names], dtype=torch.float64)
        hi = torch.tensor([ref.joints[n].upper for n in chain.joint_names], dtype=torch.float64)
        assert torch.equal(chain.lower, lo) and torch.equal(chain.upper, hi), (base, tip)
        # bounded joints agree with pinocchio's limits too
        for i, name in enumerate(chain.joint_names):
            jm = ref.model.joints[ref.model.getJointId(name)]
            if jm.nq == 1 and ref.joints[name].type != "continuous":
                assert ref.model.lowerPositionLimit[jm.idx_q] == pytest.approx(float(lo[i]), abs=1e-12)
                assert ref.model.upperPositionLimit[jm.idx_q] == pytest.approx(float(hi[i]), abs=1e-12)


def test_reference_covers_required_joint_kinds():
    """Guard against a silently weaker suite: the loaded robots include mimic (on and off the path),
    continuous and prismatic joints inside tested chains, and intermediate bases."""
    seen = set()
    for robot_id in ("inline-mimic_middle", "inline-floating_planar"):
        loaded = load(robot_id)
        for base, tip in loaded.chains:
            for j in loaded.ref.moving(base, tip):
                seen.add(j.type)
                if j.mimic:
                    on_path = j.mimic[0] in {k.name for k in loaded.ref.path(base, tip)}
                    seen.add("mimic-on-path" if on_path else "mimic-off-path")
    assert {"revolute", "prismatic", "continuous", "mimic-on-path", "mimic-off-path"} <= seen, seen


# ----------------------------------------------------------------------------------------------
# float32, autograd, shapes
# ----------------------------------------------------------------------------------------------
GRAD_ROBOTS = ["erd-panda", "erd-pr2", "erd-baxter", "erd-kinova", "inline-mimic_middle"]


def _two_chains(loaded: Loaded) -> list[tuple[str, str]]:
    """The deepest root chain and one intermediate-base chain (mimic chains preferred)."""
    chains = loaded.chains
    mimic = [c for c in chains if any(j.mimic for j in loaded.ref.moving(*c))]
    inner = [c for c in chains if c[0] != loaded.ref.root]
    return list(dict.fromkeys([chains[0], *(mimic[:1] or inner[:1]), *inner[-1:]]))


@pytest.mark.parametrize("batch", [SMALL_BATCH, WIDE_BATCH])
@pytest.mark.parametrize("robot_id", GRAD_ROBOTS)
def test_float32_matches_float64(robot_id: str, batch: int):
    loaded = load(robot_id)
    for base, tip in _two_chains(loaded):
        chain = loaded.robot.chain(base, tip)
        lo, hi = loaded.ref.bounds(chain.joint_names)
        q64 = torch.from_numpy(_rng(robot_id, base, tip, "f32").uniform(lo, hi, (batch, len(lo))))
        q32 = q64.to(torch.float32)
        T32, J32 = chain.forward_kinematics_with_jacobian(q32)
        assert chain.forward_kinematics(q32).dtype == T32.dtype == J32.dtype == torch.float32
        T64, J64 = chain.forward_kinematics_with_jacobian(q32.to(torch.float64))  # same q, float64
        err_T = (T32.double() - T64).abs().max().item()
        err_J = (J32.double() - J64).abs().max().item()
        assert err_T <= 1e-5, f"{robot_id} {base}->{tip} batch {batch}: float32 FK error {err_T:.2e}"
        assert err_J <= 1e-4, f"{robot_id} {base}->{tip} batch {batch}: float32 Jacobian error {err_J:.2e}"


@pytest.mark.parametrize("batch", [SMALL_BATCH, WIDE_BATCH])
@pytest.mark.parametrize("robot_id", GRAD_ROBOTS)
def test_autograd_of_fk_matches_jacobian(robot_id: str, batch: int):
    """d p / d q (autograd) == J[:3]; (d R / d q_k) R^T == skew(J[3:, k])."""
    loaded = load(robot_id)
    for base, tip in _two_chains(loaded):
        chain = loaded.robot.chain(base, tip)
        lo, hi = loaded.ref.bounds(chain.joint_names)
        q = torch.from_numpy(_rng(robot_id, base, tip, "grad").uniform(lo, hi, (batch, len(lo))))
        q.requires_grad_(True)
        T = chain.forward_kinematics(q)
        J = chain.jacobian(q.detach())
        # samples are independent, so the gradient of a batch sum gives every sample's row
        dT = torch.stack(
            [
                torch.stack([torch.autograd.grad(T[:, r, c].sum(), q, retain_graph=True)[0] for c in range(4)], 1)
                for r in range(3)
            ],
            1,
        )  # [B, 3, 4, n]: d T[r, c] / d q
        lin = dT[:, :, 3, :]
        R = T.detach()[:, :3, :3]
        S = torch.einsum("brcn,bsc->bnrs", dT[:, :, :3, :], R)  # (dR/dq_k) R^T, [B, n, 3, 3]
        ang = torch.stack([S[..., 2, 1], S[..., 0, 2], S[..., 1, 0]], -1).transpose(1, 2)  # [B, 3, n]
        err_lin = (lin - J[:, :3]).abs().max().item()
        err_ang = (ang - J[:, 3:]).abs().max().item()
        skew_err = (S + S.transpose(-1, -2)).abs().max().item()
        where = f"{robot_id} {base}->{tip} batch {batch}"
        assert err_lin <= 1e-10, f"{where}: autograd dp/dq vs J[:3] error {err_lin:.2e}"
        assert err_ang <= 1e-10, f"{where}: autograd dR/dq R^T vs J[3:] error {err_ang:.2e}"
        assert skew_err <= 1e-10, where


@pytest.mark.parametrize("shape", [(2, 3), (4, 25), (1,), (), (0,), (2, 0, 3)])
def test_batched_shapes_with_leading_dims(shape):
    loaded = load("erd-panda")
    mimic_tip = [c for c in loaded.chains if any(j.mimic for j in loaded.ref.moving(*c))]
    for base, tip in [loaded.chains[0], *mimic_tip[:1]]:
        chain = loaded.robot.chain(base, tip)
        n = chain.dof
        lo, hi = loaded.ref.bounds(chain.joint_names)
        flat = _rng("shapes", base, tip, shape).uniform(lo, hi, (int(np.prod(shape)), n))
        q = torch.from_numpy(flat).reshape(*shape, n)
        T, J = chain.forward_kinematics(q), chain.jacobian(q)
        assert T.shape == (*shape, 4, 4) and J.shape == (*shape, 6, n)
        if flat.shape[0] == 0:
            continue
        Q = loaded.ref.configurations(chain.joint_names, flat, _rng("shapes-bg", shape))
        T_ref, J_ref = loaded.ref.fk_jacobian(base, tip, chain.joint_names, Q)
        assert np.abs(T.reshape(-1, 4, 4).numpy() - T_ref).max() <= TOL
        assert np.abs(J.reshape(-1, 6, n).numpy() - J_ref).max() <= TOL
        # a non-contiguous view gives the same answer
        qv = torch.from_numpy(np.ascontiguousarray(flat.T)).T.reshape(*shape, n)
        assert torch.equal(chain.forward_kinematics(qv), T)


@pytest.mark.parametrize("batch", [(), (SMALL_BATCH,), (WIDE_BATCH,), (2, 3)], ids=["unbatched", "7", "100", "2x3"])
def test_zero_dof_chain(batch):
    """A chain with no moving joint (fixed joints only, or base == tip) is a constant transform:
    q has shape [..., 0], T matches pinocchio, J is [..., 6, 0]."""
    loaded = load("erd-panda")
    for base, tip in [("panda_link8", "panda_hand"), ("panda_link7", "panda_link7")]:
        chain = loaded.robot.chain(base, tip)
        assert chain.joint_names == []
        q = torch.zeros(*batch, 0, dtype=torch.float64)
        T = chain.forward_kinematics(q)
        J = chain.jacobian(q)
        assert T.shape == (*batch, 4, 4) and J.shape == (*batch, 6, 0)
        Q = loaded.ref.configurations([], np.zeros((1, 0)), _rng("zero-dof"))
        T_ref, _ = loaded.ref.fk_jacobian(base, tip, [], Q)
        assert np.abs(T.reshape(-1, 4, 4).numpy() - T_ref[0]).max() <= TOL


# ----------------------------------------------------------------------------------------------
# Chain construction errors
# ----------------------------------------------------------------------------------------------
def test_chain_errors_base_not_ancestor():
    robot = load("erd-panda").robot
    with pytest.raises(KinematicsError):
        robot.chain("panda_hand", "panda_link0")  # reversed
    with pytest.raises(KinematicsError):
        robot.chain("panda_leftfinger", "panda_rightfinger")  # siblings
    with pytest.raises(KinematicsError):
        robot.chain("panda_link0", "no_such_link")
    with pytest.raises(KinematicsError):
        robot.chain("no_such_link", "panda_hand")


def test_chain_errors_through_floating_or_planar_joint():
    robot = RobotModel.from_urdf(FLOATING_URDF)
    with pytest.raises(KinematicsError, match="float"):
        robot.chain("world", "link1")
    with pytest.raises(KinematicsError, match="planar|plane"):
        robot.chain("link1", "link3")
    with pytest.raises(KinematicsError):
        robot.chain("world", "link4")
    assert robot.chain("base_link", "link1").joint_names == ["r1"]
    assert robot.chain("link2", "link4").joint_names == ["r2", "p1"]


def test_mimic_chain_joint_names():
    robot = RobotModel.from_urdf(MIMIC_URDF)
    chain = robot.chain("base", "tip")
    assert chain.joint_names == ["j1", "j3", "j4", "side_joint"]
    assert robot.chain("l2", "tip").joint_names == ["j3", "j4", "side_joint"]  # j6 leader j4 on path
    assert robot.chain("l3", "l7").joint_names == ["j4", "j3", "side_joint"]  # j5's leader j3 is above l3


# ----------------------------------------------------------------------------------------------
# Inverse kinematics (Panda)
# ----------------------------------------------------------------------------------------------
IK_TARGET_SEED = 20240611  # NOT 0: chain.sample(seed=0) would reproduce the targets' own q as IK seeds


def _panda_ik_chain():
    loaded = load("erd-panda")
    tip = "panda_hand_tcp" if "panda_hand_tcp" in loaded.robot.links else "panda_hand"
    chain = loaded.robot.chain("panda_link0", tip)
    assert chain.dof == 7
    return loaded.ref, chain


def _pin_pose_errors(ref: Reference, chain, q: np.ndarray, T_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position error norm and rotation angle of FK(q) vs the targets, FK from pinocchio."""
    Q = ref.configurations(chain.joint_names, q, _rng("ik-bg"))
    T, _ = ref.fk_jacobian(chain.base_link, chain.tip_link, chain.joint_names, Q)
    pos = np.linalg.norm(T[:, :3, 3] - T_target[:, :3, 3], axis=-1)
    cos = (np.einsum("bij,bij->b", T_target[:, :3, :3], T[:, :3, :3]) - 1.0) / 2.0  # trace(Rt^T R)
    return pos, np.arccos(np.clip(cos, -1.0, 1.0))


def _targets(ref: Reference, chain, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = ref.bounds(chain.joint_names)
    q = np.random.default_rng(seed).uniform(lo, hi, (count, chain.dof))
    Q = ref.configurations(chain.joint_names, q, _rng("ik-targets-bg"))
    T, _ = ref.fk_jacobian(chain.base_link, chain.tip_link, chain.joint_names, Q)
    return q, T


def _check_ik_result(ref, chain, res, T_target: np.ndarray, batch: tuple[int, ...], min_rate: float):
    n = chain.dof
    assert res.q.shape == (*batch, n)
    assert res.success.shape == res.pos_err.shape == res.rot_err.shape == batch
    assert res.success.dtype == torch.bool
    q = res.q.detach().reshape(-1, n).double()
    assert torch.isfinite(q).all()
    assert (q >= chain.lower - 1e-12).all() and (q <= chain.upper + 1e-12).all(), "IK q outside limits"
    pos, rot = _pin_pose_errors(ref, chain, q.numpy(), T_target.reshape(-1, 4, 4))
    mine = (pos <= 1e-3) & (rot <= 1e-3)
    flags = res.success.reshape(-1).numpy()
    # the reported errors are those of the returned q
    np.testing.assert_allclose(res.pos_err.reshape(-1).double().numpy(), pos, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.rot_err.reshape(-1).double().numpy(), rot, rtol=0, atol=1e-6)
    # honest flags (up to a hair's width band around the tolerances)
    band = (np.abs(pos - 1e-3) < 1e-9) | (np.abs(rot - 1e-3) < 1e-6)
    lying = np.flatnonzero((flags != mine) & ~band)
    assert lying.size == 0, f"success flags disagree with recomputed errors at {lying[:10]}"
    rate = mine.mean()
    assert rate >= min_rate, f"IK success {rate:.4f} < {min_rate} ({(~mine).sum()} failures)"
    return pos, rot


def test_ik_panda_1000_random_reachable_poses():
    ref, chain = _panda_ik_chain()
    _, T_target = _targets(ref, chain, 1000, IK_TARGET_SEED)
    res = chain.inverse_kinematics(torch.from_numpy(T_target), seed=0)
    _check_ik_result(ref, chain, res, T_target, (1000,), min_rate=0.99)


def test_ik_panda_with_q0_near_solution():
    ref, chain = _panda_ik_chain()
    q_true, T_target = _targets(ref, chain, 50, IK_TARGET_SEED + 1)
    lo, hi = ref.bounds(chain.joint_names)
    q0 = np.clip(q_true + np.random.default_rng(1).normal(0, 0.05, q_true.shape), lo, hi)
    res = chain.inverse_kinematics(torch.from_numpy(T_target), q0=torch.from_numpy(q0), seed=0)
    _check_ik_result(ref, chain, res, T_target, (50,), min_rate=1.0)
    # started next to a solution, a local solver stays in that solution's neighbourhood
    assert np.abs(res.q.numpy() - q_true).max() < 0.5


def test_ik_panda_with_broadcast_q0_and_leading_batch_dims():
    ref, chain = _panda_ik_chain()
    _, T_target = _targets(ref, chain, 12, IK_TARGET_SEED + 2)
    T_target = T_target.reshape(3, 4, 4, 4)
    q0 = torch.from_numpy(np.mean(ref.bounds(chain.joint_names), axis=0))  # one q0 (mid-range) for all
    res = chain.inverse_kinematics(torch.from_numpy(T_target), q0=q0, seed=0)
    _check_ik_result(ref, chain, res, T_target, (3, 4), min_rate=1.0)
    # q0 with the same leading dims as the targets
    q0_full = q0.expand(3, 4, chain.dof).clone()
    res2 = chain.inverse_kinematics(torch.from_numpy(T_target), q0=q0_full, seed=0)
    _check_ik_result(ref, chain, res2, T_target, (3, 4), min_rate=1.0)
    # no q0 at all with leading dims
    res3 = chain.inverse_kinematics(torch.from_numpy(T_target), seed=0)
    _check_ik_result(ref, chain, res3, T_target, (3, 4), min_rate=1.0)
