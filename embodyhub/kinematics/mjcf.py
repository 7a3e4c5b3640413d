"""MJCF (MuJoCo) robot descriptions -> the same ``RobotModel`` the URDF reader builds.

MuJoCo's own compiler resolves the MJCF (defaults, classes, angle units, euler sequences, frames),
and the compiled model's body offsets, joint anchors, axes and ranges are written out as an
equivalent kinematics-only URDF, which the hardened URDF reader then validates. So an MJCF robot
gets exactly the FK/IK, canonical space and cards a URDF robot gets, and the derived URDF is what
an embodiment folder stores; the card keeps the MJCF's sha256 as provenance.

Before anything is compiled the XML is read with the URDF reader's parser (no DTD, no entities)
and every file it names (``<include>``, meshes, textures, asset folders) must resolve inside the
MJCF's folder (or the ``asset_root`` given for an in-memory MJCF): MuJoCo would otherwise read
whatever path the file asks for.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import quoteattr

from ..errors import URDFError
from .urdf import MAX_URDF_BYTES, RobotModel, _matrix_to_xyz_rpy, _parse_xml

_DIR_ATTRS = ("meshdir", "texturedir", "assetdir")
_MAX_INCLUDES = 256


class MJCFError(URDFError):
    """An MJCF was rejected (escaping file reference, unsupported joint, unknown body or site)."""


@dataclass(frozen=True)
class MJCFRobot:
    """A robot read from MJCF: the kinematic ``RobotModel`` and where it came from."""

    robot: RobotModel
    mjcf_sha256: str
    source: str  # the MJCF's path, or a caller's label for an in-memory MJCF


def _mujoco() -> Any:
    try:
        import mujoco
    except ImportError:
        raise MJCFError("reading MJCF needs MuJoCo: pip install 'embodyhub[sim]'") from None
    return mujoco


def _inside(path: Path, root: Path, what: str) -> Path:
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise MJCFError(f"MJCF {what} '{path}' is outside its folder {root}; refused")
    return resolved


def check_file_references(xml: str | bytes, folder: Path, root: Path, _depth: int = 0) -> None:
    """Refuse DTDs/entities and any ``include``/asset file of ``xml`` (read from ``folder``) outside ``root``."""
    if _depth > _MAX_INCLUDES:
        raise MJCFError(f"MJCF includes nest deeper than {_MAX_INCLUDES}")
    try:
        tree = _parse_xml(xml)
    except MJCFError:
        raise
    except URDFError as exc:
        raise MJCFError(str(exc).replace("URDF", "MJCF")) from None
    dirs: dict[str, Path] = {}
    for compiler in tree.iter("compiler"):
        for attr in _DIR_ATTRS:
            if compiler.get(attr):
                dirs[attr] = _inside(folder / compiler.get(attr), root, attr)
    for el in tree.iter():
        for attr, value in el.attrib.items():
            if not attr.startswith("file"):
                continue
            own = {"mesh": "meshdir", "skin": "meshdir", "texture": "texturedir"}.get(el.tag)
            base = dirs.get(own or "", dirs.get("assetdir", folder)) if el.tag != "include" else folder
            target = _inside(base / value, root, f"<{el.tag} {attr}>")
            if el.tag == "include":
                if not target.is_file():
                    raise MJCFError(f"MJCF <include file='{value}'>: no such file")
                check_file_references(target.read_bytes(), target.parent, root, _depth + 1)


def _unit_quat_matrix(q: Sequence[float]) -> list[list[float]]:
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y), 0.0],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x), 0.0],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]


def _pose(pos: Sequence[float], quat: Sequence[float] = (1.0, 0.0, 0.0, 0.0)) -> list[list[float]]:
    T = _unit_quat_matrix(quat)
    for i in range(3):
        T[i][3] = float(pos[i])
    return T


def _matmul(A: list[list[float]], B: list[list[float]]) -> list[list[float]]:
    return [[sum(A[i][k] * B[k][j] for k in range(4)) for j in range(4)] for i in range(4)]


def _origin_tag(T: list[list[float]]) -> str:
    xyz, rpy = _matrix_to_xyz_rpy(T)
    return f'<origin xyz="{" ".join(repr(v) for v in xyz)}" rpy="{" ".join(repr(v) for v in rpy)}"/>'


def compiled_to_urdf(
    model: Any,
    base_body: str,
    sites: Sequence[str] = (),
    name: str = "robot",
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> str:
    """Kinematics-only URDF text of the subtree of ``base_body`` in a compiled ``mujoco.MjModel``.

    Each body becomes a link of the same name; its hinge/slide joints become revolute (continuous
    when unlimited) or prismatic joints about their anchors; each of ``sites`` becomes a link fixed
    to its body. ``ranges`` gives limits to joints the MJCF leaves unlimited (a gripper driver whose
    range sits in a default class that never applies, say). Ball and free joints are refused: they
    have no single-axis URDF equivalent.
    """
    mujoco = _mujoco()
    obj = mujoco.mjtObj

    def body_name(b: int) -> str:
        return mujoco.mj_id2name(model, obj.mjOBJ_BODY, b) or f"body{b}"

    base = mujoco.mj_name2id(model, obj.mjOBJ_BODY, base_body)
    if base < 0:
        bodies = [body_name(b) for b in range(1, model.nbody)]
        raise MJCFError(f"MJCF has no body '{base_body}'; bodies: {', '.join(bodies[:30])}")
    subtree = {base}
    for b in range(base + 1, model.nbody):  # MuJoCo numbers bodies depth-first: children follow parents
        if int(model.body_parentid[b]) in subtree:
            subtree.add(b)
    links, joints, used = [body_name(base)], [], set()

    def joint_name(wanted: str) -> str:
        name_, k = wanted, 1
        while name_ in used:
            name_, k = f"{wanted}_{k}", k + 1
        used.add(name_)
        return name_

    def fixed(parent: str, child: str, T: list[list[float]], jname: str) -> None:
        joints.append(f'<joint name={quoteattr(joint_name(jname))} type="fixed"><parent link={quoteattr(parent)}/>'
                      f'<child link={quoteattr(child)}/>{_origin_tag(T)}</joint>')

    for b in sorted(subtree - {base}):
        child, parent = body_name(b), body_name(int(model.body_parentid[b]))
        T = _pose(model.body_pos[b], model.body_quat[b])
        current = parent
        first, count = int(model.body_jntadr[b]), int(model.body_jntnum[b])
        for k, j in enumerate(range(first, first + count)):
            jname = mujoco.mj_id2name(model, obj.mjOBJ_JOINT, j) or f"joint{j}"
            jtype = int(model.jnt_type[j])
            if jtype not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                raise MJCFError(f"MJCF joint '{jname}' is a ball or free joint; only hinge and slide joints can be arm joints")
            anchor = [float(v) for v in model.jnt_pos[j]]
            origin = _matmul(T, _pose(anchor))
            last_here = k == count - 1 and not any(anchor)
            link = child if last_here else f"{child}__{jname}"
            limited = bool(model.jnt_limited[j])
            lo, hi = (float(v) for v in model.jnt_range[j])
            if not limited and jname in (ranges or {}):
                limited, (lo, hi) = True, (float(v) for v in ranges[jname])  # type: ignore[index]
            hinge = jtype == int(mujoco.mjtJoint.mjJNT_HINGE)
            if not hinge and not limited:
                raise MJCFError(f"MJCF slide joint '{jname}' has no range; a prismatic joint needs limits")
            kind = ("revolute" if limited else "continuous") if hinge else "prismatic"
            limit = f'<limit lower="{lo!r}" upper="{hi!r}" effort="0" velocity="0"/>' if limited else ""
            axis = " ".join(repr(float(v)) for v in model.jnt_axis[j])
            joints.append(f'<joint name={quoteattr(joint_name(jname))} type="{kind}"><parent link={quoteattr(current)}/>'
                          f'<child link={quoteattr(link)}/>{_origin_tag(origin)}<axis xyz="{axis}"/>{limit}</joint>')
            if link != child:
                links.append(link)
            current, T = link, _pose([-a for a in anchor])
        if current != child or count == 0:
            fixed(current, child, T, f"{child}_fixed")
        links.append(child)
    for site in sites:
        s = mujoco.mj_name2id(model, obj.mjOBJ_SITE, site)
        if s < 0 or int(model.site_bodyid[s]) not in subtree:
            raise MJCFError(f"MJCF has no site '{site}' on the robot below '{base_body}'")
        fixed(body_name(int(model.site_bodyid[s])), site, _pose(model.site_pos[s], model.site_quat[s]), f"{site}_site")
        links.append(site)
    body = "".join(f"<link name={quoteattr(link)}/>" for link in links) + "".join(joints)
    return f"<robot name={quoteattr(name)}>{body}</robot>\n"



def read_mjcf(
    source: str | os.PathLike,
    base_body: str,
    sites: Sequence[str] = (),
    asset_root: str | os.PathLike | None = None,
    name: str | None = None,
    label: str | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> MJCFRobot:
    """Compile an MJCF (a file path, or XML text with ``asset_root``) and read the robot below ``base_body``.

    Every file the MJCF references must lie inside its folder (or ``asset_root``); ``ranges`` limits
    joints the MJCF leaves unlimited (see ``compiled_to_urdf``).
    """
    mujoco = _mujoco()
    text_given = isinstance(source, str) and source.lstrip().startswith("<")
    if text_given:
        xml = source.encode("utf-8")  # type: ignore[union-attr]
        folder = Path(asset_root).resolve() if asset_root is not None else Path.cwd().resolve()
        where = label or "<MJCF text>"
    else:
        path = Path(source)
        if not path.is_file():
            raise MJCFError(f"MJCF file not found: {str(path)[:200]}")
        if path.stat().st_size > MAX_URDF_BYTES:
            raise MJCFError(f"MJCF file {path} is over the {MAX_URDF_BYTES}-byte cap")
        xml = path.read_bytes()
        folder = path.resolve().parent
        where = label or str(path)
    root = Path(asset_root).resolve() if asset_root is not None else folder
    check_file_references(xml, folder, root)
    try:
        if text_given:
            model = mujoco.MjModel.from_xml_string(xml.decode("utf-8"))
        else:
            model = mujoco.MjModel.from_xml_path(str(Path(source)))
    except ValueError as exc:
        raise MJCFError(f"MuJoCo could not compile {where}: {str(exc).splitlines()[0]}") from None
    robot_name = name or Path(where).stem
    urdf = compiled_to_urdf(model, base_body, sites, robot_name, ranges)
    return MJCFRobot(RobotModel.from_urdf(urdf), hashlib.sha256(xml).hexdigest(), where)
