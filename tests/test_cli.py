"""The ``embodyhub`` console script, and the bundled robots shipping inside a built wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import embodyhub
from embodyhub import cli
from embodyhub.cli import main
from embodyhub.console import available_cpus, choose_threads, using_threads
from embodyhub.embodiment import list_robots
from embodyhub.errors import EmbodyHubError

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


BAD_URDF = ('<robot name="r"><link name="a"/><link name="b"/>'
            '<joint name="j" type="revolute"><parent link="a"/><child link="b"/></joint></robot>')
PANDA = str(REPO / "adapters" / "panda" / "robot.urdf")

# (arguments, a phrase the one error line must hold): user errors a newcomer hits, each with what to do.
BAD_INPUTS = [
    (["export", "--model", "notamodel", "--out", "o"], "Hub is unreachable"),
    (["eval", "--model", "notamodel"], "Hub is unreachable"),
    (["export", "--model", "someorg/nomodel", "--out", "o"], "Hub is unreachable"),
    (["eval", "--model", "/nonexistent/model"], "no model folder"),
    (["eval", "--model", "emptydir"], "no config.json"),
    (["grpo", "--adapter", "emptydir", "--out", "o"], "no adapter_config.json"),
    (["export", "--adapter", "/nonexistent/adapter", "--out", "o"], "no adapter folder"),
    (["bench", "--bundle", "notamodel"], "not an export bundle"),
    (["demo", "--out", "afile"], "is a file"),
    (["demo", "--skip", "training", "--out", "o"], "unknown stages"),
    (["adapt", "--robot", "missing.urdf", "--out", "o"], "no URDF file"),
    (["adapt", "--robot", PANDA, "--arm", "panda_link0:nolink", "--out", "o"], "leaf links: panda_hand_tcp"),
    (["adapt", "--robot", PANDA, "--out", "o"], "--arm BASE:TIP"),
    (["adapt", "--robot", "panda", "--data", "/nonexistent", "--out", "o"], "no dataset folder"),
    (["robots", "show", "no-such-robot"], "bundled: baxter"),
    (["urdf", "check", "/nonexistent.urdf"], "no URDF file"),
    (["urdf", "check", "bad.urdf"], "requires <limit"),
    (["train", "--recipe", "nosuchrecipe", "--out", "o"], "bundled: adapt_lora"),
    (["train", "--recipe", "bad.yaml", "--out", "o"], "not valid YAML"),
    (["grpo", "--out", "o"], "give --robot"),
    (["eval", "--threads", "0"], "--threads"),
    (["bench", "--bundle", "b", "--repeats", "many"], "--repeats"),
    (["fly"], "invalid choice"),
    (["push", str(REPO / "embodyhub" / "pretrained" / "wam_tiny"), "--repo", "org/x"], "run the same command again"),
]


@pytest.fixture(scope="module")
def bad_inputs_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "afile").write_text("not a folder")
    (folder / "emptydir").mkdir()
    (folder / "bad.yaml").write_text("robots: [1\n")
    (folder / "bad.urdf").write_text(BAD_URDF)
    return folder


@pytest.mark.parametrize("argv, phrase", BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in BAD_INPUTS])
def test_user_errors_are_one_line_without_traceback(argv, phrase, bad_inputs_dir):
    """Offline (HF_HUB_OFFLINE) and with an endpoint nobody listens on: each ends at once, non-zero, in one line."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_test")
    proc = subprocess.run([sys.executable, "-m", "embodyhub.cli", *argv], capture_output=True, text=True, env=env, cwd=bad_inputs_dir)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and len(lines) <= 2, proc.stderr
    assert phrase in lines[-1], proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "embodyhub.cli", "eval", "--model", str(tmp_path / "none"), "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("embodyhub: error: no model folder")


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_robots_list", interrupted)
    assert main(["robots", "list"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerun the same command to resume" in err[0]


def test_unexpected_errors_are_reported_as_bugs_in_one_line(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_robots_list", broken)
    assert main(["robots", "list"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["embodyhub: error: unexpected ZeroDivisionError: division by zero (a bug: rerun with --debug and report the traceback)"]


LIGHT = """
import json, sys
from embodyhub.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "heavy": [m for m in ("torch", "transformers", "matplotlib") if m in sys.modules]}))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["robots", "list"], ["urdf", "check", PANDA], ["eval", "--help"]])
def test_quick_commands_do_not_import_torch(argv):
    proc = subprocess.run([sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"status": 0, "heavy": []}


def test_version():
    proc = subprocess.run([sys.executable, "-m", "embodyhub.cli", "--version"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"embodyhub {embodyhub.__version__}"


def test_wam_registered_when_transformers_was_imported_first():
    code = ("import transformers, sys; assert 'embodyhub.models.wam' not in sys.modules; import embodyhub; "
            "from transformers import AutoConfig; print(type(AutoConfig.for_model('wam')).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "WamConfig"


def test_thread_count_precedence(monkeypatch):
    monkeypatch.delenv("EMBODYHUB_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n, source = choose_threads()
    assert 1 <= n <= 4 and n <= max(1, available_cpus() // 2) and "default" in source
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("EMBODYHUB_THREADS", "2")
    assert choose_threads() == (2, "EMBODYHUB_THREADS")
    assert choose_threads(5) == (5, "--threads")
    monkeypatch.setenv("EMBODYHUB_THREADS", "zero")
    with pytest.raises(EmbodyHubError, match="EMBODYHUB_THREADS"):
        choose_threads()


def test_thread_setting_reaches_a_loaded_torch_and_is_restored(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with using_threads(before + 1):
        assert torch.get_num_threads() == before + 1 and os.environ["OMP_NUM_THREADS"] == str(before + 1)
    assert torch.get_num_threads() == before and os.environ["OMP_NUM_THREADS"] == "1"


def test_warnings_print_as_one_line():
    code = ("import sys, warnings; from embodyhub import cli\n"
            "def warn(args):\n    warnings.warn('over budget\\nsecond line'); warnings.warn('old', FutureWarning); return 0\n"
            "cli._cmd_robots_list = warn; sys.exit(cli.main(['robots', 'list']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.splitlines() == ["embodyhub: warning: over budget"]
    proc = subprocess.run([sys.executable, "-c", code.replace("'list']", "'list', '--verbose']")], capture_output=True, text=True, check=True)
    assert proc.stderr.splitlines() == ["embodyhub: warning: over budget", "embodyhub: warning: old"]


def test_a_cached_hub_model_loads_while_the_hub_is_unreachable(tmp_path):
    """Offline, a Hub id is refused only when its files are not in the local cache."""
    import shutil

    from embodyhub.pretrained import tiny_base

    repo = tmp_path / "cache" / "models--org--wam"
    shutil.copytree(tiny_base(), repo / "snapshots" / "abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "cache"), HF_ENDPOINT="http://127.0.0.1:9")
    env.pop("HF_HUB_OFFLINE", None)
    argv = ["eval", "--robot", "panda", "--episodes", "1", "--max-steps", "1", "--out", str(tmp_path / "eval")]
    proc = subprocess.run([sys.executable, "-m", "embodyhub.cli", *argv, "--model", "org/wam"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads((tmp_path / "eval" / "eval.json").read_text())) == {"panda"}
    proc = subprocess.run([sys.executable, "-m", "embodyhub.cli", *argv, "--model", "org/other"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Hub is unreachable (no connection to http://127.0.0.1:9" in proc.stderr
