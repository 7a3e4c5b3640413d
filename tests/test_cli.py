"""The ``embodyhub`` console script, and the bundled robots shipping inside a built wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from embodyhub.cli import main
from embodyhub.embodiment import list_robots

REPO = Path(__file__).resolve().parents[1]


def test_robots_list(capsys):
    assert main(["robots", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_robots():
        assert name in out
    assert main(["robots", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(list_robots()) >= 8


def test_robots_show(capsys):
    assert main(["robots", "show", "panda"]) == 0
    out = capsys.readouterr().out
    assert "panda_joint1" in out and "arm0.ee_pos" in out and "DoF" in out
    assert main(["robots", "show", "baxter", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["arms"]) == 2 and "arm1.joints" in info["canonical_slots"]
    assert main(["robots", "show", "no-such-robot"]) == 2
    assert "no bundled robot" in capsys.readouterr().err


def test_urdf_check_good_and_bad(tmp_path, capsys):
    good = REPO / "adapters" / "panda" / "robot.urdf"
    assert main(["urdf", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["urdf", "check", str(good), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["root_link"] == "panda_link0"

    bad = tmp_path / "bad.urdf"
    bad.write_text('<robot name="r"><link name="a"/><link name="b"/>'
                   '<joint name="j" type="revolute"><parent link="a"/><child link="b"/></joint></robot>')
    assert main(["urdf", "check", str(bad)]) == 1
    assert "joint 'j'" in capsys.readouterr().err
    assert main(["urdf", "check", str(bad), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False and "requires <limit" in result["error"]


def test_console_script_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "embodyhub.cli", "robots", "list"], capture_output=True, text=True, check=True
    )
    assert "panda" in proc.stdout


def test_wheel_ships_bundled_robots(tmp_path):
    """Build the wheel, unpack it alone on sys.path, and list robots from it (not from the checkout)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("embodyhub-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert any(n.startswith("embodyhub/adapters/panda/robot.urdf") for n in names)
    for template in ("base_model.md.j2", "robot_adapter.md.j2", "thor_export.md.j2", "_robots.md.j2", "_eval.md.j2"):
        assert f"embodyhub/model_cards/{template}" in names, template
    assert "embodyhub/hub/publish.py" in names
    for name in ("config.json", "model.safetensors", "processor_config.json", "eval.json", "embodiments/panda/robot.urdf"):
        assert f"embodyhub/pretrained/wam_tiny/{name}" in names, name
    assert "embodyhub/recipes/demo.yaml" in names
    env = dict(os.environ, PYTHONPATH=str(site))
    code = "import embodyhub, sys; print(embodyhub.__file__); from embodyhub.cli import main; sys.exit(main(['robots', 'list', '--json']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    first, rest = proc.stdout.split("\n", 1)
    assert first.startswith(str(site)), f"imported {first}, not the wheel"
    assert len(json.loads(rest)) >= 8


@pytest.mark.parametrize("argv", [["robots"], ["urdf"], []])
def test_usage_errors_exit_nonzero(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code != 0
