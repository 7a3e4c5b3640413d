"""Both directions against the real LeRobot (``lerobot`` 0.4 / 0.6, ``LeRobotDataset``), image and video features.

    python benchmarks/lerobot_compat.py --lerobot-python /work/lrvenv/bin/python [--episodes 2] [--image-size 84]

LeRobot lives in its own venv: its pins (torch < 2.11, av < 16) clash with embodyhub's. With lerobot
0.4.4 (Python 3.11): ``python3 -m venv /work/lrvenv && /work/lrvenv/bin/pip install lerobot==0.4.4``;
with 0.6.1 (Python >= 3.12): ``python3.12 -m venv /tmp/lrvenv && /tmp/lrvenv/bin/pip install
"lerobot[dataset]==0.6.1"``. This script runs in embodyhub's environment and calls that interpreter on
itself for the LeRobot side (``--lerobot-side``), exchanging plain ``.npz`` files.

(a) ``embodyhub collect --camera agentview`` writes a dataset; LeRobot's ``LeRobotDataset`` loads it
    and every feature of every frame is compared with embodyhub's reader (exact equality).
(b) LeRobot's own ``LeRobotDataset.create / add_frame / save_episode`` writes a dataset of the same
    features (state, action, environment_state, task, an RGB image, ``use_videos=False``); embodyhub
    loads it and is compared with the values that went in and with LeRobot's own reading.
(c) The same writer with ``use_videos=True`` (LeRobot's default: an MP4 per camera, AV1 through PyAV)
    writes the frames collected in (a); embodyhub's decoding is compared with LeRobot's own reading
    (exact) and with the frames that went in (lossy: the largest and the mean pixel error).

``--fixture DIR`` only runs (b) small (2 episodes of 3 frames, 16 px) into ``DIR``, with the values
that went in saved as ``DIR/expected.npz``: that is how ``tests/data/lerobot_v30_images`` was made.
``--video-fixture DIR`` only runs (c) small (2 Lift demos of the simulator's xArm7, 32 px camera) into
``DIR``, with ``expected.npz`` and the arm's embodiment card and URDF in ``DIR/meta/embodiment`` (an
embodyhub extra LeRobot ignores): that is how ``tests/data/lerobot_v30_video`` was made, with lerobot
0.4.4 (``--lerobot-python /work/lrvenv/bin/python``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

IMAGE = "observation.images.agentview"
DIMS = {"observation.state": 8, "action": 8, "observation.environment_state": 12}
TASKS = ["lift the cube", "stack the red cube on the green cube"]
IMAGE_NAMES = ["height", "width", "channels"]


# ------------------------------------------------------------------------------- LeRobot side (its venv)
def lerobot_dump(root: str, out: str) -> None:
    """Load ``root`` with LeRobot's ``LeRobotDataset`` and save every frame's values to ``out`` (npz). Videos go
    through LeRobot's PyAV backend (its torchcodec one needs FFmpeg's shared libraries installed system-wide)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/compat", root=root, video_backend="pyav")
    frames = [ds[i] for i in range(len(ds))]
    values = {k: np.stack([f[k].numpy() for f in frames]) for k in frames[0] if k != "task"}
    values["task"] = np.array([f["task"] for f in frames])
    np.savez(out, **values)


def lerobot_write(root: str, given: str, robot_type: str, fps: str, video: str) -> None:
    """Write the frames of ``given`` (npz: per frame each feature, ``task`` and ``episode_index``; uint8
    ``[H, W, 3]`` frames become camera features, ``video`` ones when ``video == "1"``) with LeRobot's own writer."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    with np.load(given) as f:
        values = {k: f[k] for k in f.files}
    episode, tasks = values.pop("episode_index"), values.pop("task")
    camera = "video" if video == "1" else "image"
    features = {
        k: {"dtype": camera, "shape": v.shape[1:], "names": IMAGE_NAMES} if v.ndim == 4
        else {"dtype": "float32", "shape": v.shape[1:], "names": None}
        for k, v in values.items()
    }
    ds = LeRobotDataset.create("local/compat", fps=int(fps), root=root, robot_type=robot_type, features=features,
                               use_videos=camera == "video")
    for e in np.unique(episode):
        for i in np.flatnonzero(episode == e):
            ds.add_frame({**{k: v[i] for k, v in values.items()}, "task": str(tasks[i])})
        ds.save_episode()
    ds.finalize()


# ------------------------------------------------------------------------------- embodyhub side
def run_lerobot(python: str, *args: str) -> None:
    """This script's LeRobot side in LeRobot's interpreter (without embodyhub's PYTHONPATH); output passes through."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, __file__, "--lerobot-side", *args], check=True, env=env)


def write_with_lerobot(python: str, given: dict[str, np.ndarray], root: Path, robot_type: str, fps: int, video: bool) -> Path:
    """``given`` (``add_frame`` values per frame, with ``task`` and ``episode_index``) written by LeRobot at
    ``root``; returns the ``.npz`` beside it that holds ``given``."""
    path = root.parent / f"{root.name}_given.npz"
    np.savez_compressed(path, **given)
    run_lerobot(python, "write", str(root), str(path), robot_type, str(fps), "1" if video else "0")
    return path


def embodyhub_frames(root: Path) -> dict[str, np.ndarray]:
    """Every frame of ``root`` as read by embodyhub, stacked per feature (images float32 CHW in [0, 1])."""
    from embodyhub.data import load_dataset

    ds = load_dataset(root)
    frames = [ds[i] for i in range(len(ds))]
    values = {k: np.stack([f[k].numpy() for f in frames]) for k in frames[0] if k != "task"}
    values["task"] = np.array([f["task"] for f in frames])
    return values


def random_frames(episodes: int, frames: int, size: int) -> dict[str, np.ndarray]:
    """Random values of ``DIMS`` and a random RGB image per frame, tasks taking turns: the (b) dataset."""
    rng = np.random.default_rng(0)
    values: dict[str, list] = {}
    for e in range(episodes):
        for _ in range(frames):
            frame = {k: rng.normal(size=n).astype(np.float32) for k, n in DIMS.items()}
            frame[IMAGE] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            frame.update(task=TASKS[e % len(TASKS)], episode_index=e)
            for k, v in frame.items():
                values.setdefault(k, []).append(v)
    return {k: np.array(v) for k, v in values.items()}


def as_uint8(frames: np.ndarray) -> np.ndarray:
    """Camera frames as readers return them (float32 ``[T, C, H, W]`` in [0, 1]) as ``add_frame`` takes them
    (uint8 ``[T, H, W, C]``; exact for 8-bit sources)."""
    return np.round(frames * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def as_given(read: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Frames as a reader returns them, as ``add_frame`` takes them: the values of ``DIMS``, ``task``,
    ``episode_index`` and the camera frames."""
    return {**{k: read[k] for k in [*DIMS, "task", "episode_index"]}, IMAGE: as_uint8(read[IMAGE])}


def as_read(given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values given to ``add_frame`` in the layout a reader returns them (images float32 CHW in [0, 1])."""
    out = dict(given)
    out[IMAGE] = given[IMAGE].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return out


def compare(name: str, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> bool:
    """Print one line per feature (shape, dtypes (embodyhub's / the other side's), max |difference|);
    True when all are identical."""
    print(f"\n{name}\n")
    print(f"| {'feature':<30} | {'frames x shape':<18} | {'dtype (ours/other)':<20} | {'max abs diff':>12} | equal |")
    print(f"|{'-' * 32}|{'-' * 20}|{'-' * 22}|{'-' * 14}|-------|")
    ok = sorted(ours) == sorted(theirs)
    for k in sorted(set(ours) | set(theirs)):
        a, b = ours.get(k), theirs.get(k)
        if a is None or b is None:
            print(f"| {k:<30} | {'missing on one side':<18} | {'':<20} | {'':>12} | no    |")
            continue
        same = a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
        diff = "-" if a.dtype.kind in "US" or a.shape != b.shape else f"{np.abs(a.astype(np.float64) - b).max():.1e}"
        shape = "x".join(map(str, a.shape))
        print(f"| {k:<30} | {shape:<18} | {f'{a.dtype}/{b.dtype}':<20} | {diff:>12} | {'yes' if same else 'NO':<5} |")
        ok &= same
    return ok


def video_fixture(python: str, root: Path) -> None:
    """(c) small, as the test fixture: 2 Lift demos of the simulator's xArm7 with a 32 px camera, written by
    LeRobot as a video dataset, plus ``expected.npz`` (the values given to ``add_frame``), ``read_by_lerobot.npz``
    (the camera frames as LeRobot decodes them, uint8 ``[T, H, W, C]``) and the arm's embodiment under
    ``meta/embodiment``."""
    from embodyhub.cli import main as embodyhub_cli
    from embodyhub.data.lerobot import EMBODIMENT_DIR

    with tempfile.TemporaryDirectory() as tmp:
        collected = Path(tmp) / "collected"
        embodyhub_cli(["collect", "--env", "lift", "--robot", "xarm7", "--episodes", "2", "--camera", "agentview",
                       "--image-size", "32", "--out", str(collected)])
        given = write_with_lerobot(python, as_given(embodyhub_frames(collected)), root, "xarm7", 20, video=True)
        given.replace(root / "expected.npz")
        run_lerobot(python, "dump", str(root), str(Path(tmp) / "read.npz"))
        with np.load(Path(tmp) / "read.npz") as read:
            np.savez_compressed(root / "read_by_lerobot.npz", **{IMAGE: as_uint8(read[IMAGE])})
        shutil.copytree(collected / EMBODIMENT_DIR, root / EMBODIMENT_DIR)
    print(f"fixture: {root} ({sum(p.stat().st_size for p in root.rglob('*') if p.is_file()) / 1e3:.0f} kB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lerobot-python", default="/work/lrvenv/bin/python", help="interpreter with lerobot installed")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    parser.add_argument("--fixture", help="only write the small LeRobot-made image test dataset into this folder")
    parser.add_argument("--video-fixture", help="only write the small LeRobot-made video test dataset into this folder")
    parser.add_argument("--lerobot-side", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lerobot_side:
        mode, *rest = args.lerobot_side
        (lerobot_dump if mode == "dump" else lerobot_write)(*rest)
        return 0
    if args.fixture:
        root = Path(args.fixture)
        given = write_with_lerobot(args.lerobot_python, random_frames(2, 3, 16), root, "panda", 20, video=False)
        given.replace(root / "expected.npz")
        print(f"fixture: {root} ({sum(p.stat().st_size for p in root.rglob('*') if p.is_file()) / 1e3:.0f} kB)")
        return 0
    if args.video_fixture:
        video_fixture(args.lerobot_python, Path(args.video_fixture))
        return 0

    from embodyhub.cli import main as embodyhub_cli

    work = Path(args.out or tempfile.mkdtemp(prefix="lerobot_compat_"))
    ok = True
    # (a) embodyhub collect --camera -> LeRobot's LeRobotDataset
    collected = work / "collected"
    embodyhub_cli(["collect", "--env", "lift", "--robot", "panda", "--episodes", str(args.episodes), "--camera", "agentview",
                   "--image-size", str(args.image_size), "--out", str(collected)])
    run_lerobot(args.lerobot_python, "dump", str(collected), str(work / "collected_by_lerobot.npz"))
    ours = embodyhub_frames(collected)
    with np.load(work / "collected_by_lerobot.npz") as theirs:
        ok &= compare(f"(a) `embodyhub collect --camera agentview --image-size {args.image_size}` "
                      "read by embodyhub vs by LeRobot's LeRobotDataset", ours, dict(theirs))
    info = json.loads((collected / "meta/info.json").read_text())
    print(f"\ninfo.json: codebase_version {info['codebase_version']}, {info['total_episodes']} episodes, "
          f"{info['total_frames']} frames, {IMAGE} = {info['features'][IMAGE]}")

    # (b) LeRobot's own writer -> embodyhub
    written = work / "lerobot_written"
    given = write_with_lerobot(args.lerobot_python, random_frames(args.episodes, 20, args.image_size), written, "panda", 20,
                               video=False)
    run_lerobot(args.lerobot_python, "dump", str(written), str(work / "written_by_lerobot.npz"))
    read = embodyhub_frames(written)
    with np.load(given) as values, np.load(work / "written_by_lerobot.npz") as theirs:
        ok &= compare("(b) LeRobot-written dataset read by embodyhub vs by LeRobot", read, dict(theirs))
        ok &= compare("(b') LeRobot-written dataset read by embodyhub vs the values given to add_frame",
                      {k: read[k] for k in values.files}, as_read(dict(values)))

    # (c) LeRobot's writer, video features -> embodyhub
    videos = work / "lerobot_video"
    given = write_with_lerobot(args.lerobot_python, as_given(ours), videos, "panda", info["fps"], video=True)
    run_lerobot(args.lerobot_python, "dump", str(videos), str(work / "video_by_lerobot.npz"))
    read = embodyhub_frames(videos)
    with np.load(given) as values, np.load(work / "video_by_lerobot.npz") as theirs:
        ok &= compare("(c) LeRobot-written video dataset read by embodyhub vs by LeRobot", read, dict(theirs))
        error = np.abs(read[IMAGE].astype(np.float64) - as_read(dict(values))[IMAGE]) * 255
    video = json.loads((videos / "meta/info.json").read_text())["features"][IMAGE]["info"]
    print(f"\n(c') {IMAGE} ({video.get('video.codec')}, {video.get('video.pix_fmt')}) decoded by embodyhub vs the frames "
          f"given to add_frame: max {error.max():.0f}, mean {error.mean():.2f} (of 255)")
    print(f"\n{'all values equal' if ok else 'MISMATCH'} (work folder {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
