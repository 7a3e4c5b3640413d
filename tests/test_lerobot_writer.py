"""A dataset written by LeRobot's own writer, video camera included, read and trained on.

tests/data/lerobot_v30_video was written by lerobot 0.4.4's ``LeRobotDataset.create / add_frame / save_episode /
finalize`` with ``use_videos=True`` (its default: AV1 MP4 through PyAV) from two Lift demos of the simulator's
xArm7 (``python benchmarks/lerobot_compat.py --video-fixture DIR``): ``expected.npz`` holds the values given to
``add_frame``, ``read_by_lerobot.npz`` the camera frames as LeRobot's own reader decodes them, and
``meta/embodiment`` the arm's embodiment card and URDF (an embodyhub extra LeRobot ignores)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from embodyhub.cli import main
from embodyhub.data import DatasetError, load_dataset
from embodyhub.data.features import camera_feature

FIXTURE = Path(__file__).parent / "data" / "lerobot_v30_video"
CAMERA = "observation.images.agentview"
VECTORS = ("observation.state", "action", "observation.environment_state")


def test_reads_a_video_dataset_written_by_lerobot():
    ds = load_dataset(FIXTURE)
    assert (ds.num_episodes, len(ds), ds.fps, ds.info["robot_type"]) == (2, 102, 20, "xarm7")
    assert ds.features[CAMERA]["dtype"] == "video" and ds.features[CAMERA]["info"]["video.codec"] == "av1"
    assert ds.tasks == {"lift the cube": 0}
    with np.load(FIXTURE / "expected.npz") as given, np.load(FIXTURE / "read_by_lerobot.npz") as lerobot:
        frames = torch.cat([ds.episode(k)[CAMERA] for k in range(ds.num_episodes)])
        assert frames.shape == (102, 3, 32, 32) and frames.dtype == torch.float32
        assert 0 <= frames.min() and frames.max() <= 1
        # the same frames as LeRobot decodes them (up to a colour-conversion rounding step): the same timestamps
        # of the same file, episode 1 from its from_timestamp on; neighbouring frames differ by up to 123/255
        theirs = torch.from_numpy(lerobot[CAMERA]).permute(0, 3, 1, 2).float() / 255
        assert (frames - theirs).abs().max() <= 2 / 255
        # lossy against what was recorded (AV1, crf 30, 4:2:0 chroma on 32 px frames): mean error 2.9/255
        original = torch.from_numpy(given[CAMERA]).permute(0, 3, 1, 2).float() / 255
        assert (frames - original).abs().mean() < 6 / 255
        for i in (0, 51, 52, 101):  # frame access decodes the frame's episode: the same values
            frame = ds[i]
            assert torch.equal(frame[CAMERA], frames[i]) and frame["task"] == given["task"][i]
            for k in VECTORS:
                assert torch.equal(frame[k], torch.from_numpy(given[k][i]))
    assert ds.episode(1, ["action"]).keys() == {"action", "task"}
    with pytest.raises(KeyError, match="observation.goal"):
        ds.episode(0, ["observation.goal"])
    assert camera_feature(ds.features, 32, ds.root) == CAMERA  # what a model with 32 px image input reads
    with pytest.raises(DatasetError, match=r"'observation.images.agentview' holds frames of shape \[32, 32, 3\]; the model reads 64x64"):
        camera_feature(ds.features, 64, ds.root)


def test_video_frames_are_decoded_only_when_read(monkeypatch):
    """PyAV is imported on a video frame's first access: without it the dataset loads and its other features read."""
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    ds = load_dataset(FIXTURE)
    assert ds.episode(0, VECTORS)["action"].shape == (52, 8)
    with pytest.raises(DatasetError, match=r"'observation.images.agentview' episode 0: video features are decoded with PyAV"):
        ds[0]


def test_a_video_dataset_is_validated(tmp_path):
    root = shutil.copytree(FIXTURE, tmp_path / "ds")
    video = next((root / "videos").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[:500])
    with pytest.raises(DatasetError, match="episode 0: cannot decode"):
        load_dataset(root).episode(0)
    video.unlink()
    with pytest.raises(DatasetError, match=r"episode 0 'observation.images.agentview': video file missing"):
        load_dataset(root)


def _v2_base(folder: Path, image_size: int) -> Path:
    """A tiny untrained v2 base (keypoints of one object, task words, images when ``image_size``), saved."""
    from embodyhub.models.wam import WamProcessor
    from embodyhub.training import PretrainRecipe, build

    recipe = PretrainRecipe(
        robots=["panda"],
        processor={"chunk_length": 4, "max_keypoints": 4, "keypoints_per_object": 4,
                   "task_vocab": WamProcessor.task_words(["lift the cube"])},
        model={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": image_size},
    )
    model, processor = build(recipe)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def adapt_args(tmp_path):
    """``embodyhub adapt`` arguments for a copy of the fixture, its arm and a 2-step recipe without evaluation."""
    data = shutil.copytree(FIXTURE, tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"train_steps": 2, "batch_size": 8, "warmup_steps": 1, "eval_episodes": 0,
                                      "lora": {"r": 2, "alpha": 4}}))
    return data, ["adapt", "--robot", str(data / "meta" / "embodiment"), "--data", str(data), "--recipe", str(recipe)]


@pytest.mark.parametrize("image_size", [0, 32])
def test_adapt_trains_an_adapter_on_a_lerobot_video_dataset(adapt_args, tmp_path, monkeypatch, image_size):
    """State, action, keypoints (``environment_state``) and task train the adapter; a base with image input
    also reads the camera's decoded frames, a base without one leaves the video undecoded."""
    from transformers import AutoModel

    import embodyhub.data.lerobot as lerobot
    from embodyhub.training import load_adapter

    decoded = []
    decode = lerobot._decode_video
    monkeypatch.setattr(lerobot, "_decode_video", lambda *a: decoded.append(a[0]) or decode(*a))
    base = _v2_base(tmp_path / "base", image_size)
    _, args = adapt_args
    out = tmp_path / "out"
    assert main([*args, "--base", str(base), "--out", str(out)]) == 0
    assert len(decoded) == (2 if image_size else 0)  # each episode once
    folder = out / "adapter" / "xarm7"
    assert (folder / "adapter_config.json").is_file() and (folder / "embodiment.json").is_file()
    steps = [e for e in json.loads((out / "adapt_log.json").read_text()) if "loss" in e]
    assert len(steps) == 2 and all(np.isfinite(e["loss"]) for e in steps)
    model, robot = load_adapter(AutoModel.from_pretrained(base), folder)
    assert robot.name == "xarm7" and robot.dof == 8


def test_adapt_refuses_a_lerobot_dataset_without_a_needed_feature(adapt_args, tmp_path, capsys):
    """Checked from info.json before the model loads: a v2 base needs state and action, one with image
    input a camera too."""
    data, args = adapt_args
    info = json.loads((data / "meta" / "info.json").read_text())
    for image_size, dropped, named in [(0, "action", "'action'"), (32, CAMERA, "'observation.images.*'")]:
        features = {k: v for k, v in info["features"].items() if k != dropped}
        (data / "meta" / "info.json").write_text(json.dumps({**info, "features": features}))
        base = _v2_base(tmp_path / f"base{image_size}", image_size)
        assert main(["--debug", *args, "--base", str(base), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "embodyhub.errors.DatasetError" in err
        assert f"lacks {named}, which the model needs" in err.splitlines()[-1]
    assert not (tmp_path / "out").exists()
