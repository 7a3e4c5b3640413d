"""`embodyhub demo --smoke` runs every stage end to end, its report holds this run's numbers, and it resumes."""

from __future__ import annotations

import json

from embodyhub.cli import main
from embodyhub.demo import STAGES


def test_demo_smoke_runs_every_stage_and_resumes(tmp_path, capsys, check_saved_figures):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = out / "report.md"
    assert f"report: {report.resolve()}" in printed
    results = {s: json.loads((out / s / "result.json").read_text()) for s in STAGES}
    text = report.read_text()
    for heading in ("Kinematics from URDFs", "Success after each stage", "LoRA adaptation", "GRPO post-training",
                    "Jetson Thor bundle", "Published (local Hub-protocol server)"):
        assert f"## {heading}" in text, heading
    # the numbers in the report are the ones the stages measured
    kinova = next(r for r in results["kinematics"]["rows"] if r["name"] == "kinova_jaco2")
    assert f"| kinova_jaco2 | {kinova['dof']} |" in text
    for stage, label in (("base", "zero-shot"), ("adapt", "LoRA"), ("grpo", "LoRA+GRPO"), ("export", "int8 bundle")):
        assert f"| {label} | {results[stage]['eval']['success_rate']:.0%} |" in text
    assert (out / "adapt" / results["adapt"]["adapter"] / "adapter_model.safetensors").is_file()
    assert results["export"]["onnx_max_abs"] <= 1e-4
    assert [r["kind"] for r in results["publish"]["repos"]] == ["base", "adapter", "export"]
    assert all(r["pulled_identical"] for r in results["publish"]["repos"])
    for png in ("success.png", "latency.png", "adapt/eval.png", "grpo/grpo_curve.png"):
        assert (out / png).stat().st_size > 1000, png
    plotted = {str(p.relative_to(out)) for p in check_saved_figures()}
    assert plotted == {"success.png", "latency.png", "base/eval.png", "adapt/eval.png", "grpo/eval.png", "grpo/grpo_curve.png",
                       "export/eval.png"}

    # a second run reuses every finished stage and rewrites the same report numbers
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("finished in an earlier run") == len(STAGES)


def test_demo_skips_stages_and_refuses_unknown_ones(tmp_path, capsys):
    out = tmp_path / "demo"
    skip = ["--skip", "kinematics", "--skip", "adapt", "--skip", "grpo", "--skip", "export", "--skip", "publish"]
    assert main(["demo", "--smoke", "--out", str(out), *skip]) == 0
    text = (out / "report.md").read_text()
    assert "| zero-shot |" in text and "## LoRA adaptation" not in text
    assert "Skipped stages: kinematics, adapt, grpo, export, publish." in text
    assert main(["demo", "--smoke", "--out", str(out), "--skip", "training"]) == 2
    assert "unknown stages ['training']" in capsys.readouterr().err
