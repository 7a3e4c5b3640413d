"""`embodyhub demo --smoke` runs end to end and its report holds this run's numbers."""

from __future__ import annotations

from embodyhub.cli import main


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out), "--robot", "panda", "--robot", "ur5"]) == 0
    printed = capsys.readouterr().out
    report = out / "report.md"
    assert f"report: {report.resolve()}" in printed
    text = report.read_text()
    assert "| panda |" in text and "| ur5 |" in text
    # the ur5 row carries a measured retarget error in millimetres
    ur5_row = next(line for line in text.splitlines() if line.startswith("| ur5 |"))
    assert ur5_row.rstrip("| ").endswith("mm")
