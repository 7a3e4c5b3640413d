"""LeRobot v3.0 dataset writer/reader and the synthetic demonstration generator."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from embodyhub.data import DatasetError, generate, load_dataset, write_dataset
from embodyhub.embodiment import load_robot
from embodyhub.envs import ReachEnv, goal_poses
from embodyhub.errors import EmbodyHubError


def toy_episodes(lengths=(5, 3, 7, 4), seed=0):
    rng = np.random.default_rng(seed)
    episodes = []
    for e, n in enumerate(lengths):
        episodes.append(
            {
                "observation.state": torch.from_numpy(rng.normal(size=(n, 3))),  # float64 torch: stored as float32
                "action": rng.normal(size=(n, 3)).astype(np.float32),
                "next.reward": rng.normal(size=n),  # scalar feature
                "next.done": np.arange(n) == n - 1,
                "task": f"task {e % 2}",
            }
        )
    return episodes


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "ds"
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
        "action": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
    }
    # tiny files and chunks: episodes spread over several data files and chunk folders
    write_dataset(root, toy_episodes(), fps=10, robot_type="toy", features=features,
                  extra_info={"embodyhub": {"note": 1}}, data_files_size_in_mb=1e-4, chunks_size=2)
    return root


def test_round_trip_is_exact(toy):
    ds = load_dataset(toy)
    episodes = toy_episodes()
    assert len(ds) == sum(len(e["action"]) for e in episodes) == 19 and ds.num_episodes == 4
    start = 0
    for k, src in enumerate(episodes):
        ep = ds.episode(k)
        n = len(src["action"])
        assert torch.equal(ep["observation.state"], src["observation.state"].float())
        assert torch.equal(ep["action"], torch.from_numpy(src["action"]))
        assert torch.equal(ep["next.reward"], torch.from_numpy(src["next.reward"]).float())
        assert torch.equal(ep["next.done"], torch.from_numpy(src["next.done"]))
        assert ep["task"] == src["task"] and torch.equal(ep["frame_index"], torch.arange(n))
        assert torch.equal(ep["index"], torch.arange(start, start + n)) and (ep["episode_index"] == k).all()
        assert torch.allclose(ep["timestamp"], torch.arange(n) / 10.0)
        start += n
    frame = ds[6]  # episode 1, frame 1
    assert frame["task"] == "task 1" and int(frame["episode_index"]) == 1 and int(frame["frame_index"]) == 1
    assert frame["action"].shape == (3,) and frame["next.reward"].shape == ()
    assert torch.equal(frame["action"], torch.from_numpy(episodes[1]["action"][1]))
    with pytest.raises(IndexError):
        ds[19]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["action"].shape == (8, 3) and len(batch["task"]) == 8


def test_metadata_follows_lerobot_v3(toy):
    ds = load_dataset(toy)
    info = json.loads((toy / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["robot_type"] == "toy" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, 19, 2)
    assert info["splits"] == {"train": "0:4"} and info["chunks_size"] == 2
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["action"] == {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]}
    assert info["features"]["index"] == {"dtype": "int64", "shape": [1], "names": None}
    assert info["embodyhub"] == {"note": 1}
    files = sorted(p.relative_to(toy).as_posix() for p in (toy / "data").rglob("*.parquet"))
    assert files == ["data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet",
                     "data/chunk-001/file-000.parquet", "data/chunk-001/file-001.parquet"]
    assert pq.read_schema(toy / files[0]).field("action").type.list_size == 3  # fixed-size list, as LeRobot writes

    import pandas as pd

    tasks = pd.read_parquet(toy / "meta/tasks.parquet")  # LeRobot reads it with the task string as index
    assert tasks.loc["task 1"].task_index == 1 and ds.tasks == {"task 0": 0, "task 1": 1}

    rows = ds.episodes
    assert [r["length"] for r in rows] == [5, 3, 7, 4] and [r["tasks"] for r in rows][1] == ["task 1"]
    assert [(r["dataset_from_index"], r["dataset_to_index"]) for r in rows] == [(0, 5), (5, 8), (8, 15), (15, 19)]
    assert [(r["data/chunk_index"], r["data/file_index"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert rows[2]["stats/action/count"] == [7]

    action = np.concatenate([e["action"] for e in toy_episodes()]).astype(np.float64)
    stats = ds.stats["action"]
    assert set(stats) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert torch.allclose(stats["mean"], torch.from_numpy(action.mean(0)))
    assert torch.allclose(stats["std"], torch.from_numpy(action.std(0)))
    assert torch.equal(stats["max"], torch.from_numpy(action.max(0))) and stats["count"].tolist() == [19]
    assert torch.allclose(stats["q50"], torch.from_numpy(np.median(action, 0)))
    assert ds.stats["next.reward"]["mean"].shape == (1,)


def test_writer_rejects_bad_input(tmp_path):
    good = toy_episodes((2, 2))
    cases = [
        ([], "at least one episode"),
        ([{**good[0], "task": ""}], "task"),
        ([good[0], {k: v for k, v in good[1].items() if k != "action"}], "keys"),
        ([{**good[0], "action": good[0]["action"][:1]}], "same number"),
        ([{**good[0], "action": np.full((2, 3), np.nan)}], "NaN"),
        ([{**good[0], "index": np.arange(2)}], "written by the writer"),
        ([{**good[0], "action": np.zeros((2, 2, 2))}], "scalars or vectors"),
    ]
    for episodes, message in cases:
        with pytest.raises(DatasetError, match=message):
            write_dataset(tmp_path / "bad", episodes, fps=10, robot_type=None)
    with pytest.raises(DatasetError, match="do not match"):
        write_dataset(tmp_path / "bad", good, 10, None, features={"action": {"dtype": "float32", "shape": [3]}})
    with pytest.raises(DatasetError, match="override"):
        write_dataset(tmp_path / "bad", good, 10, None, extra_info={"fps": 3})
    write_dataset(tmp_path / "ok", good, 10, None)
    with pytest.raises(DatasetError, match="overwrite"):
        write_dataset(tmp_path / "ok", good, 10, None)
    write_dataset(tmp_path / "ok", toy_episodes((1,)), 10, None, overwrite=True)
    assert len(load_dataset(tmp_path / "ok")) == 1


def test_malformed_datasets_raise_clear_errors(tmp_path):
    def fresh(name):
        return write_dataset(tmp_path / name, toy_episodes((3, 2)), fps=10, robot_type="toy")

    with pytest.raises(DatasetError, match="info.json is missing"):
        load_dataset(tmp_path / "nothing")

    root = fresh("v21")
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="codebase_version 'v2.1'"):
        load_dataset(root)

    root = fresh("truncated")
    data = root / "data/chunk-000/file-000.parquet"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot read data file"):
        load_dataset(root)

    root = fresh("missing")
    data = root / "data/chunk-000/file-000.parquet"
    data.unlink()
    with pytest.raises(DatasetError, match="data file missing"):
        load_dataset(root)

    root = fresh("frames")
    (root / "meta/info.json").write_text(json.dumps({**info, "total_frames": 6}))
    with pytest.raises(DatasetError, match="total_frames=6"):
        load_dataset(root)

    root = fresh("json")
    (root / "meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(root)
    assert issubclass(DatasetError, EmbodyHubError) and issubclass(DatasetError, ValueError)


def test_synthetic_panda_episodes_replay_to_their_goals(tmp_path):
    (root,) = generate(["panda"], tmp_path, episodes_per_robot=8, seed=0, progress=False)
    ds = load_dataset(root)
    panda = load_robot("panda")
    assert root.name == "panda" and ds.num_episodes == 8 and ds.fps == 50
    assert ds.tasks == {"reach the target pose": 0, "trace the path": 1}
    card = ds.embodiment_card
    assert card["name"] == "panda" and card["urdf_sha256"] == panda.urdf_sha256
    assert ds.load_embodiment().joint_names == panda.joint_names == ds.info["features"]["action"]["names"]
    assert ds.info["features"]["observation.goal"]["shape"] == [9]

    for k in range(ds.num_episodes):
        ep = ds.episode(k)
        n = ep["action"].shape[0]
        assert n >= 30 and ep["observation.state"].shape == (n, panda.dof)
        assert torch.equal(ep["observation.state"][1:], ep["action"][:-1])  # action = next state
        # replay the recorded commands from the recorded start towards the episode's final goal
        env = ReachEnv(panda, batch_size=1, max_steps=n)
        env.reset_to(ep["observation.state"][:1].double(), goal_poses(ep["observation.goal"][-1:].double()))
        for t in range(n):
            _, _, done, info = env.step(ep["action"][t : t + 1].double())
        assert info["success"].all() and info["pos_err"].max() < 2e-3, (k, ep["task"], info)


def test_synthetic_two_arm_robot_is_deterministic(tmp_path):
    a = generate(["baxter"], tmp_path / "a", episodes_per_robot=3, tasks=("reach",), seed=5, progress=False)[0]
    b = generate(["baxter"], tmp_path / "b", episodes_per_robot=3, tasks=("reach",), seed=5, progress=False)[0]
    da, db = load_dataset(a), load_dataset(b)
    assert da.info["features"]["observation.goal"]["shape"] == [18]
    assert da.info["features"]["observation.goal"]["names"][9] == "arm1.x"
    for k in range(3):
        ea, eb = da.episode(k), db.episode(k)
        assert all(torch.equal(ea[key], eb[key]) for key in ea if key != "task")


def test_fps_must_be_finite_and_data_path_stays_inside_the_dataset(tmp_path):
    """info.json fps of Infinity or true, and a data_path leading outside the dataset, were accepted."""
    outside = write_dataset(tmp_path / "outside", toy_episodes((3, 2)), fps=10, robot_type="toy")
    root = write_dataset(tmp_path / "ds", toy_episodes((3, 2)), fps=10, robot_type="toy")
    info = json.loads((root / "meta/info.json").read_text())
    for fps in ("Infinity", "true", "NaN", "0"):
        (root / "meta/info.json").write_text(json.dumps(info)[:-1] + f', "fps": {fps}}}')
        with pytest.raises(DatasetError, match="fps must be a positive finite number"):
            load_dataset(root)
    for fps in (float("inf"), True):
        with pytest.raises(DatasetError, match="fps must be a positive finite number"):
            write_dataset(tmp_path / "bad", toy_episodes((2,)), fps=fps, robot_type=None)
    escape = "../outside/" + info["data_path"]
    for data_path in (escape, str(outside / info["data_path"])):
        (root / "meta/info.json").write_text(json.dumps({**info, "data_path": data_path}))
        with pytest.raises(DatasetError, match="leads outside the dataset"):
            load_dataset(root)


def image_episodes(lengths=(4, 6), size=(10, 7), seed=1):
    rng = np.random.default_rng(seed)
    return [
        {
            "observation.state": rng.normal(size=(n, 2)).astype(np.float32),
            "observation.images.front": rng.integers(0, 256, (n, *size, 3), dtype=np.uint8),
            "task": "look",
        }
        for n in lengths
    ]


def test_image_features_round_trip_exactly_with_lerobots_layout_and_stats(tmp_path):
    episodes = image_episodes()
    # tiny data files: each episode lands in its own file
    root = write_dataset(tmp_path / "img", episodes, fps=10, robot_type="toy", data_files_size_in_mb=1e-4)
    ds = load_dataset(root)
    key = "observation.images.front"
    assert ds.info["features"][key] == {"dtype": "image", "shape": [10, 7, 3], "names": ["height", "width", "channels"]}
    assert len(list((root / "data").rglob("*.parquet"))) == 2
    for k, src in enumerate(episodes):
        ep = ds.episode(k)
        expected = torch.from_numpy(src[key]).permute(0, 3, 1, 2).float() / 255  # LeRobot's float32 CHW in [0, 1]
        assert ep[key].dtype == torch.float32 and torch.equal(ep[key], expected)
        assert torch.equal((ep[key] * 255).round().to(torch.uint8).permute(0, 2, 3, 1), torch.from_numpy(src[key]))
    assert torch.equal(ds[5][key], ds.episode(1)[key][1]) and ds[5][key].shape == (3, 10, 7)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[key].shape == (4, 3, 10, 7)

    column = pq.read_table(root / "data/chunk-000/file-000.parquet")[key]  # Hugging Face Image struct of PNG bytes
    assert column.type.names == ["bytes", "path"] and column[0]["bytes"].as_py().startswith(b"\x89PNG")

    pixels = np.concatenate([e[key] for e in episodes]).reshape(-1, 3) / 255.0
    stats = ds.stats[key]
    assert stats["mean"].shape == (3, 1, 1) and stats["count"].tolist() == [10]
    for name, reference in [("min", pixels.min(0)), ("max", pixels.max(0)), ("mean", pixels.mean(0)), ("std", pixels.std(0)),
                            ("q01", np.quantile(pixels, 0.01, 0)), ("q50", np.quantile(pixels, 0.5, 0)),
                            ("q99", np.quantile(pixels, 0.99, 0))]:
        assert np.allclose(stats[name].numpy()[:, 0, 0], reference, rtol=0, atol=1e-12), name
    first = episodes[0][key].reshape(-1, 3) / 255.0
    assert np.allclose(np.asarray(ds.episodes[0][f"stats/{key}/q90"])[:, 0, 0], np.quantile(first, 0.9, 0), atol=1e-12)


def test_image_features_are_checked(tmp_path):
    good = image_episodes((2,))
    key = "observation.images.front"
    with pytest.raises(DatasetError, match="images must be uint8"):
        write_dataset(tmp_path / "bad", [{**good[0], key: good[0][key].astype(np.float32)}], 10, None)
    with pytest.raises(DatasetError, match=r"images \[10, 7, 3\]; feature shape is \[7, 10, 3\]"):
        write_dataset(tmp_path / "bad", good, 10, None, features={
            key: {"dtype": "image", "shape": [7, 10, 3]}, "observation.state": {"dtype": "float32", "shape": [2]}})

    root = write_dataset(tmp_path / "ok", good, 10, None)
    info = json.loads((root / "meta/info.json").read_text())
    video = {**info["features"][key], "dtype": "video"}
    (root / "meta/info.json").write_text(json.dumps({**info, "features": {**info["features"], key: video}}))
    with pytest.raises(DatasetError, match="video features need a 'video_path' template, got None"):
        load_dataset(root)
    with pytest.raises(DatasetError, match="video features are only read"):
        write_dataset(tmp_path / "video", good, 10, None, features={"observation.state": info["features"]["observation.state"], key: video})
    wrong = {**info["features"][key], "shape": [12, 7, 3]}
    (root / "meta/info.json").write_text(json.dumps({**info, "features": {**info["features"], key: wrong}}))
    with pytest.raises(DatasetError, match=r"\[10, 7, 3\] does not match the feature shape \[12, 7, 3\]"):
        load_dataset(root)


def test_reads_a_dataset_written_by_lerobot():
    """tests/data/lerobot_v30_images was written by lerobot 0.6.1's own LeRobotDataset.create / add_frame /
    save_episode (benchmarks/lerobot_compat.py --fixture); expected.npz holds the values given to add_frame."""
    from pathlib import Path

    root = Path(__file__).parent / "data" / "lerobot_v30_images"
    ds = load_dataset(root)
    key = "observation.images.agentview"
    assert (ds.num_episodes, len(ds), ds.fps, ds.info["robot_type"]) == (2, 6, 20, "panda")
    assert ds.stats[key]["mean"].shape == (3, 1, 1)
    with np.load(root / "expected.npz") as expected:
        for i in range(len(ds)):
            frame = ds[i]
            assert frame["task"] == expected["task"][i]
            assert torch.equal(frame[key], torch.from_numpy(expected[key][i]).permute(2, 0, 1).float() / 255)
            for k in ("observation.state", "action", "observation.environment_state"):
                assert torch.equal(frame[k], torch.from_numpy(expected[k][i]))
