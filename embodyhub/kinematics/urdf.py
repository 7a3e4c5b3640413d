"""Hardened URDF reader: XML text -> ``RobotModel`` (links, joints, limits, mimic).

Standard library only. The parser refuses DTDs and entities outright (no XXE, no entity
bombs), never resolves or loads meshes, caps the input size and the element nesting, bounds every
number by ``MAX_URDF_VALUE`` (so no kinematic intermediate overflows), and validates the kinematic
tree iteratively so that hostile or malformed files fail fast with an ``URDFError`` that
names the offending element instead of crashing deep inside FK later.
"""

from __future__ import annotations

import math
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from xml.etree import ElementTree as ET
from xml.parsers import expat

from ..errors import URDFError

if TYPE_CHECKING:
    from torch import Tensor

    from .chain import KinematicChain

MAX_URDF_BYTES = 16 * 1024 * 1024
MAX_XML_DEPTH = 64  # element nesting; real URDFs (example-robot-data, pybullet, robosuite) nest 7 deep at most
# Largest magnitude of any number in a URDF (origins, axes, limits, mimic terms): 1e16 is what SDF/Gazebo
# write for "unbounded" (example-robot-data's iris uses it), and it keeps every FK, limit-normalization and
# clamping intermediate (axis norm, upper - lower, q * multiplier) far inside float64's range.
MAX_URDF_VALUE = 1e16
JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed", "floating", "planar")
_XACRO_NS = "http://www.ros.org/wiki/xacro"
_XACRO_SUBST = re.compile(r"\$\{|\$\(")


@dataclass(frozen=True)
class JointLimit:
    lower: float
    upper: float
    effort: float = 0.0
    velocity: float = 0.0


@dataclass(frozen=True)
class Mimic:
    joint: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Joint:
    name: str
    type: str
    parent: str
    child: str
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    origin_rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    limit: JointLimit | None = None
    mimic: Mimic | None = None

    @property
    def actuated(self) -> bool:
        """True for joints with their own coordinate (not fixed, not a mimic follower)."""
        return self.type != "fixed" and self.mimic is None


@dataclass(frozen=True)
class Link:
    name: str


@dataclass
class RobotModel:
    """A validated kinematic tree. Build it with ``RobotModel.from_urdf``."""

    name: str
    links: dict[str, Link]
    joints: dict[str, Joint]
    root_link: str
    source_text: str | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_urdf(cls, source: str | bytes | os.PathLike | Any) -> "RobotModel":
        """Read a URDF from a path, an XML string, bytes, or a urdfpy/urchin/yourdfpy-shaped object."""
        if hasattr(source, "links") and hasattr(source, "joints") and not isinstance(source, (str, bytes)):
            return _from_object(source)
        data = _read_source(source)
        root = _parse_xml(data)
        robot = _from_element(root)
        robot.source_text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        return robot

    # ------------------------------------------------------------------ queries
    def parent_joint(self, link: str) -> Joint | None:
        """The joint whose child is ``link`` (None for the root)."""
        return self._parent_of.get(link)

    @property
    def leaf_links(self) -> list[str]:
        """Links that no joint leaves from (tips of the tree), sorted."""
        return sorted(set(self.links) - {j.parent for j in self.joints.values()})

    def children(self, link: str) -> list[Joint]:
        """Joints whose parent is ``link``."""
        return [j for j in self.joints.values() if j.parent == link]

    def path(self, base_link: str, tip_link: str) -> list[Joint]:
        """Joints from ``base_link`` down to ``tip_link`` (base must be an ancestor of tip)."""
        from ..errors import KinematicsError

        for link in (base_link, tip_link):
            if link not in self.links:
                raise KinematicsError(
                    f"link '{link}' is not in robot '{self.name}' (root link '{self.root_link}'; "
                    f"leaf links: {', '.join(self.leaf_links)})"
                )
        joints: list[Joint] = []
        link = tip_link
        while link != base_link:
            joint = self._parent_of.get(link)
            if joint is None:
                raise KinematicsError(
                    f"link '{base_link}' is not an ancestor of '{tip_link}' in robot '{self.name}'"
                )
            joints.append(joint)
            link = joint.parent
        return joints[::-1]

    def chain(self, base_link: str, tip_link: str) -> "KinematicChain":
        """Batched differentiable kinematics from ``base_link`` to ``tip_link``."""
        from .chain import KinematicChain

        return KinematicChain(self, base_link, tip_link)

    def limits(self, joint_names: list[str]) -> tuple["Tensor", "Tensor", "Tensor"]:
        """Float64 ``(lower, upper, velocity)`` for ``joint_names``: continuous joints are unbounded
        (±inf) and a missing or zero velocity limit means none (inf)."""
        import torch

        lower, upper, velocity = [], [], []
        for name in joint_names:
            joint = self.joints[name]
            limit = joint.limit
            bounded = joint.type != "continuous" and limit is not None
            lower.append(limit.lower if bounded else -math.inf)
            upper.append(limit.upper if bounded else math.inf)
            velocity.append(limit.velocity if limit is not None and limit.velocity > 0 else math.inf)
        return tuple(torch.tensor(v, dtype=torch.float64) for v in (lower, upper, velocity))  # type: ignore[return-value]

    @property
    def actuated_joint_names(self) -> list[str]:
        return [j.name for j in self.joints.values() if j.actuated]

    @property
    def _parent_of(self) -> dict[str, Joint]:
        cache = self.__dict__.get("_parent_cache")
        if cache is None:
            cache = {j.child: j for j in self.joints.values()}
            self.__dict__["_parent_cache"] = cache
        return cache


# ---------------------------------------------------------------------- input
def _read_source(source: Any) -> str | bytes:
    if isinstance(source, bytes):
        data: str | bytes = source
    elif isinstance(source, os.PathLike) or (isinstance(source, str) and not source.lstrip().startswith("<")):
        if isinstance(source, str) and (not source.strip() or "\n" in source):
            raise URDFError("URDF source is empty or not XML (expected a path, XML text, or bytes)")
        path = Path(source)
        try:
            if not path.is_file():
                raise URDFError(f"URDF file not found: {str(path)[:200]}")
            size = path.stat().st_size
            if size > MAX_URDF_BYTES:
                raise URDFError(f"URDF file {path} is {size} bytes, over the {MAX_URDF_BYTES}-byte cap")
            with path.open("rb") as fh:  # read at most cap + 1 bytes: the file may grow or be special
                data = fh.read(MAX_URDF_BYTES + 1)
        except OSError as exc:
            raise URDFError(f"cannot read URDF file {str(path)[:200]}: {exc.strerror}") from None
    elif isinstance(source, str):
        data = source
    else:
        raise URDFError(f"cannot read a URDF from {type(source).__name__}")
    if len(data) > MAX_URDF_BYTES:
        raise URDFError(f"URDF is {len(data)} bytes/characters, over the {MAX_URDF_BYTES} cap")
    if not (data.strip() if isinstance(data, str) else data.strip(b" \t\r\n\x00")):
        raise URDFError("URDF is empty")
    return data


def _refuse(what: str):
    def handler(*args: Any) -> None:
        raise URDFError(f"URDF contains a {what}; DTDs and entities are refused (XXE / entity-bomb protection)")

    return handler


def _parse_xml(data: str | bytes) -> ET.Element:
    """Parse with expat directly so DTDs, entities and external references can be refused."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    builder = ET.TreeBuilder()
    depth = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            raise URDFError(f"URDF nests elements over {MAX_XML_DEPTH} deep (at <{tag[:50]}>)")
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(tag)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = _refuse("DOCTYPE declaration")
    parser.EntityDeclHandler = _refuse("ENTITY declaration")
    parser.UnparsedEntityDeclHandler = _refuse("unparsed ENTITY declaration")
    parser.ExternalEntityRefHandler = _refuse("external entity reference")
    try:
        parser.Parse(data, True)
        return builder.close()
    except URDFError:
        raise
    except expat.ExpatError as exc:
        raise URDFError(f"URDF is not well-formed XML: {exc}") from None
    except (ValueError, LookupError, AssertionError) as exc:
        raise URDFError(f"URDF could not be parsed: {exc}") from None


# ---------------------------------------------------------------------- parsing
def _floats(text: str | None, where: str, attr: str, default: tuple[float, ...] | None) -> tuple[float, ...]:
    if text is None:
        if default is None:
            raise URDFError(f"{where}: missing '{attr}'")
        return default
    parts = text.split()
    if len(parts) != 3:
        raise URDFError(f"{where}: '{attr}' needs exactly 3 numbers, got {text!r}")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise URDFError(f"{where}: '{attr}' is not numeric: {text!r}") from None
    return _check3(values, where, attr)


def _check3(values: tuple[float, ...], where: str, attr: str) -> tuple[float, ...]:
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise URDFError(f"{where}: '{attr}' must be 3 finite numbers, got {values}")
    for value in values:
        _bounded(value, where, attr)
    return values


def _bounded(value: float, where: str, attr: str) -> float:
    """``value`` if its magnitude is within ``MAX_URDF_VALUE`` (no physical joint or link is larger)."""
    if not abs(value) <= MAX_URDF_VALUE:
        raise URDFError(f"{where}: '{attr}' is {value:g}, not a finite number within the physical bound ±{MAX_URDF_VALUE:g}")
    return value


def _scalar(el: ET.Element, attr: str, where: str, default: float | None) -> float:
    text = el.get(attr)
    if text is None:
        if default is None:
            raise URDFError(f"{where}: missing attribute '{attr}'")
        return default
    try:
        value = float(text)
    except ValueError:
        raise URDFError(f"{where}: '{attr}' is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise URDFError(f"{where}: '{attr}' is not finite: {text!r}")
    return _bounded(value, where, attr)


def _check_no_xacro(root: ET.Element) -> None:
    prefixes = {"xacro"} | {
        key.split(":", 1)[1]
        for el in root.iter()
        for key, value in el.attrib.items()
        if key.startswith("xmlns:") and value.strip().rstrip("#/") == _XACRO_NS
    }
    for el in root.iter():
        tag = el.tag
        if ":" in tag and tag.split(":", 1)[0] in prefixes:
            raise URDFError(f"unexpanded xacro element <{tag}>: run xacro first")
        for key, value in el.attrib.items():
            if _XACRO_SUBST.search(value):
                raise URDFError(
                    f"unexpanded xacro substitution in <{tag} {key}={value!r}>: run xacro first"
                )


def _unit_axis(axis: tuple[float, ...], where: str) -> tuple[float, float, float]:
    norm = math.sqrt(sum(a * a for a in axis))
    if norm < 1e-12:
        raise URDFError(f"{where}: axis is zero")
    return (axis[0] / norm, axis[1] / norm, axis[2] / norm)


def _parse_joint(el: ET.Element) -> Joint:
    name = el.get("name")
    if not name:
        raise URDFError("<joint> without a name")
    where = f"joint '{name}'"
    jtype = el.get("type")
    if jtype not in JOINT_TYPES:
        raise URDFError(f"{where}: unknown joint type {jtype!r} (expected one of {', '.join(JOINT_TYPES)})")
    parent_el, child_el = el.find("parent"), el.find("child")
    parent = parent_el.get("link") if parent_el is not None else None
    child = child_el.get("link") if child_el is not None else None
    if not parent or not child:
        raise URDFError(f"{where}: needs <parent link=...> and <child link=...>")
    origin = el.find("origin")
    xyz = _floats(origin.get("xyz") if origin is not None else None, where, "origin xyz", (0.0, 0.0, 0.0))
    rpy = _floats(origin.get("rpy") if origin is not None else None, where, "origin rpy", (0.0, 0.0, 0.0))
    axis_el = el.find("axis")
    axis = _floats(axis_el.get("xyz") if axis_el is not None else None, where, "axis xyz", (1.0, 0.0, 0.0))
    # urdfdom ignores <axis> on fixed and floating joints; real files put "0 0 0" there.
    axis = _unit_axis(axis, where) if jtype not in ("fixed", "floating") else (1.0, 0.0, 0.0)

    limit = None
    limit_el = el.find("limit")
    if jtype in ("revolute", "prismatic") and limit_el is None:
        raise URDFError(f"{where}: a {jtype} joint requires <limit lower upper effort velocity>")
    if limit_el is not None and jtype != "fixed":
        lwhere = f"{where} <limit>"
        bounded = jtype in ("revolute", "prismatic")
        lower = _scalar(limit_el, "lower", lwhere, 0.0 if bounded else -math.inf)
        upper = _scalar(limit_el, "upper", lwhere, 0.0 if bounded else math.inf)
        if jtype == "continuous":
            lower, upper = -math.inf, math.inf  # the URDF spec ignores lower/upper on continuous joints
        if lower > upper:
            raise URDFError(f"{lwhere}: lower {lower} > upper {upper}")
        effort = _scalar(limit_el, "effort", lwhere, 0.0)
        velocity = _scalar(limit_el, "velocity", lwhere, 0.0)
        if effort < 0 or velocity < 0:
            raise URDFError(f"{lwhere}: effort and velocity must be >= 0")
        limit = JointLimit(lower, upper, effort, velocity)

    mimic = None
    mimic_el = el.find("mimic")
    if mimic_el is not None and jtype != "fixed":
        target = mimic_el.get("joint")
        if not target:
            raise URDFError(f"{where} <mimic>: missing 'joint'")
        mwhere = f"{where} <mimic>"
        mimic = Mimic(target, _scalar(mimic_el, "multiplier", mwhere, 1.0), _scalar(mimic_el, "offset", mwhere, 0.0))
    return Joint(name, jtype, parent, child, xyz, rpy, axis, limit, mimic)  # type: ignore[arg-type]


def _from_element(root: ET.Element) -> RobotModel:
    if root.tag != "robot":
        raise URDFError(f"root element is <{root.tag}>, expected <robot>")
    _check_no_xacro(root)
    links: dict[str, Link] = {}
    for el in root.findall("link"):
        name = el.get("name")
        if not name:
            raise URDFError("<link> without a name")
        if name in links:
            raise URDFError(f"duplicate link name '{name}'")
        links[name] = Link(name)
    joints: dict[str, Joint] = {}
    for el in root.findall("joint"):
        joint = _parse_joint(el)
        if joint.name in joints:
            raise URDFError(f"duplicate joint name '{joint.name}'")
        joints[joint.name] = joint
    return _validated(root.get("name") or "robot", links, joints.values())


def _validated(name: str, links: dict[str, Link], joints: Iterable[Joint]) -> RobotModel:
    """Check the tree: known links, no self loops, one parent each, one root, all reachable, valid mimics."""
    if not links:
        raise URDFError(f"robot '{name}' has no <link>")
    joint_map: dict[str, Joint] = {}
    parent_of: dict[str, Joint] = {}
    for joint in joints:
        if joint.name in joint_map:
            raise URDFError(f"duplicate joint name '{joint.name}'")
        joint_map[joint.name] = joint
        for role, link in (("parent", joint.parent), ("child", joint.child)):
            if link not in links:
                raise URDFError(f"joint '{joint.name}': {role} link '{link}' is not defined")
        if joint.parent == joint.child:
            raise URDFError(f"joint '{joint.name}': self loop on link '{joint.child}'")
        if joint.child in parent_of:
            raise URDFError(
                f"link '{joint.child}' has two parents (joints '{parent_of[joint.child].name}' and '{joint.name}')"
            )
        parent_of[joint.child] = joint
    roots = [link for link in links if link not in parent_of]
    if not roots:
        raise URDFError(f"robot '{name}' has no root link: the joints form a cycle")
    if len(roots) > 1:
        shown = ", ".join(f"'{r}'" for r in roots[:5])
        raise URDFError(f"robot '{name}' has {len(roots)} root links ({shown}); a URDF must be one tree")
    children: dict[str, list[str]] = {}
    for joint in joint_map.values():
        children.setdefault(joint.parent, []).append(joint.child)
    seen = {roots[0]}
    queue = deque([roots[0]])
    while queue:
        for child in children.get(queue.popleft(), ()):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    if len(seen) != len(links):
        cyclic = sorted(set(links) - seen)[:5]
        raise URDFError(f"links {cyclic} are not reachable from root '{roots[0]}': the joints form a cycle")
    for joint in joint_map.values():
        if joint.mimic is None:
            continue
        target = joint_map.get(joint.mimic.joint)
        where = f"joint '{joint.name}' <mimic joint='{joint.mimic.joint}'>"
        if target is None:
            raise URDFError(f"{where}: no such joint")
        if target.name == joint.name:
            raise URDFError(f"{where}: a joint cannot mimic itself")
        if target.type in ("fixed", "floating", "planar"):
            raise URDFError(f"{where}: cannot mimic a {target.type} joint")
        if target.mimic is not None:
            raise URDFError(f"{where}: target is itself a mimic joint (mimic chains are not supported)")
    return RobotModel(name, links, joint_map, roots[0])


# ---------------------------------------------------------------------- other libraries
def _matrix_to_xyz_rpy(T: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    m = [[float(T[i][j]) for j in range(4)] for i in range(4)]
    xyz = (m[0][3], m[1][3], m[2][3])
    pitch = math.asin(max(-1.0, min(1.0, -m[2][0])))
    if abs(math.cos(pitch)) > 1e-9:
        roll = math.atan2(m[2][1], m[2][2])
        yaw = math.atan2(m[1][0], m[0][0])
    else:  # gimbal lock: put all rotation on yaw
        roll = 0.0
        yaw = math.atan2(-m[0][1], m[1][1])
    return xyz, (roll, pitch, yaw)


def _from_object(obj: Any) -> RobotModel:
    """Convert a urdfpy/urchin/yourdfpy-shaped robot (``.links``, ``.joints``) and validate it."""

    def items(seq: Any) -> list[Any]:
        return list(seq.values()) if isinstance(seq, dict) else list(seq)

    try:
        link_objs, joint_objs = items(obj.links), items(obj.joints)
    except (TypeError, AttributeError) as exc:
        raise URDFError(f"robot object {type(obj).__name__}: .links/.joints are not sequences ({exc})") from None
    links: dict[str, Link] = {}
    for link in link_objs:
        name = getattr(link, "name", None)
        if not name or not isinstance(name, str):
            raise URDFError("link object without a name")
        if name in links:
            raise URDFError(f"duplicate link name '{name}'")
        links[name] = Link(name)
    joints = []
    for j in joint_objs:
        where = f"joint '{getattr(j, 'name', None)}'"
        try:
            joints.append(_convert_joint(j, where))
        except URDFError:
            raise
        except (TypeError, ValueError, IndexError, AttributeError, KeyError) as exc:
            raise URDFError(f"{where}: malformed field ({type(exc).__name__}: {exc})") from None
    return _validated(getattr(obj, "name", None) or "robot", links, joints)


def _convert_joint(j: Any, where: str) -> Joint:
    """One urdfpy/yourdfpy-shaped joint object -> ``Joint`` with the same checks as the XML path."""
    name = j.name
    if not name or not isinstance(name, str):
        raise URDFError("joint object without a name")
    jtype = getattr(j, "type", getattr(j, "joint_type", None))
    if jtype not in JOINT_TYPES:
        raise URDFError(f"{where}: unknown joint type {jtype!r}")
    origin = getattr(j, "origin", None)
    xyz, rpy = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)) if origin is None else _matrix_to_xyz_rpy(origin)
    axis_raw = getattr(j, "axis", None)
    axis = (1.0, 0.0, 0.0) if axis_raw is None else tuple(float(a) for a in axis_raw)
    for label, vec in (("origin xyz", xyz), ("origin rpy", rpy), ("axis xyz", axis)):
        _check3(vec, where, label)
    axis = _unit_axis(axis, where) if jtype not in ("fixed", "floating") else (1.0, 0.0, 0.0)
    lim = getattr(j, "limit", None)
    limit = None
    if jtype in ("revolute", "prismatic") and lim is None:
        raise URDFError(f"{where}: a {jtype} joint requires a limit")
    if lim is not None and jtype != "fixed":
        vals = {}
        for key in ("lower", "upper", "effort", "velocity"):
            v = getattr(lim, key, None)
            vals[key] = 0.0 if v is None else float(v)
            if not math.isfinite(vals[key]):
                raise URDFError(f"{where} limit: '{key}' is not finite")
            _bounded(vals[key], f"{where} limit", key)
        if jtype == "continuous":
            vals["lower"], vals["upper"] = -math.inf, math.inf
        if vals["lower"] > vals["upper"]:
            raise URDFError(f"{where} limit: lower {vals['lower']} > upper {vals['upper']}")
        limit = JointLimit(**vals)
    mim = getattr(j, "mimic", None)
    mimic = None
    if mim is not None:
        mult = getattr(mim, "multiplier", 1.0)
        off = getattr(mim, "offset", 0.0)
        mult = _bounded(1.0 if mult is None else float(mult), f"{where} mimic", "multiplier")
        mimic = Mimic(mim.joint, mult, _bounded(0.0 if off is None else float(off), f"{where} mimic", "offset"))
    return Joint(name, jtype, j.parent, j.child, xyz, rpy, axis, limit, mimic)  # type: ignore[arg-type]
