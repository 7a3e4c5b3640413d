"""`embodyhub train` and `embodyhub eval` end to end at toy size (the real numbers come from the recipe)."""

from __future__ import annotations

import json

import yaml

from embodyhub.cli import main
from embodyhub.data import load_dataset


def test_train_then_eval_from_saved_folder(tmp_path, capsys, check_saved_figures):
    recipe = {
        "robots": ["panda", "so100"],
        "held_out": ["ur5"],
        "episodes_per_robot": 6,
        "steps_per_episode": 12,
        "model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        "processor": {"chunk_length": 2},
        "train_steps": 6,
        "batch_size": 8,
        "warmup_steps": 2,
        "eval_episodes": 2,
        "eval_max_steps": 4,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["train", "--recipe", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model:" in printed and "eval:" in printed
    assert load_dataset(out / "data" / "panda").info["codebase_version"] == "v3.0"
    summary = json.loads((out / "eval.json").read_text())
    assert set(summary) == {"panda", "so100", "ur5"}
    assert all(0.0 <= r["success_rate"] <= 1.0 and r["episodes"] == 2 for r in summary.values())
    assert (out / "eval.png").stat().st_size > 1000
    log = json.loads((out / "train_log.json").read_text())
    assert len(log) == 7 and "seconds" in log[-1]

    again = tmp_path / "again"
    assert main(["eval", "--model", str(out / "model"), "--robot", "so100", "--episodes", "2", "--max-steps", "4", "--out", str(again)]) == 0
    assert set(json.loads((again / "eval.json").read_text())) == {"so100"}
    assert check_saved_figures() == [out / "eval.png", again / "eval.png"]
