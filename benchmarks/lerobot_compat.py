"""Both directions against the real LeRobot (``lerobot`` 0.6, ``LeRobotDataset``), image features included.

    python benchmarks/lerobot_compat.py --lerobot-python /tmp/lrvenv/bin/python [--episodes 2] [--image-size 84]

LeRobot 0.6 needs Python >= 3.12 and torch < 2.12, so it lives in its own venv
(``python3.12 -m venv /tmp/lrvenv && /tmp/lrvenv/bin/pip install "lerobot[dataset]==0.6.1"``); this
script runs in embodyhub's environment and calls that interpreter on itself for the LeRobot side
(``--lerobot-side``), exchanging plain ``.npz`` files.

(a) ``embodyhub collect --camera agentview`` writes a dataset; LeRobot's ``LeRobotDataset`` loads it
    and every feature of every frame is compared with embodyhub's reader (exact equality).
(b) LeRobot's own ``LeRobotDataset.create / add_frame / save_episode`` writes a dataset of the same
    features (state, action, environment_state, task, an RGB image, ``use_videos=False``); embodyhub
    loads it and is compared with the values that went in and with LeRobot's own reading.

``--fixture DIR`` only runs (b) small (2 episodes of 3 frames, 16 px) into ``DIR``, with the values
that went in saved as ``DIR/expected.npz``: that is how ``tests/data/lerobot_v30_images`` was made.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

IMAGE = "observation.images.agentview"
DIMS = {"observation.state": 8, "action": 8, "observation.environment_state": 12}
TASKS = ["lift the cube", "stack the red cube on the green cube"]


# ------------------------------------------------------------------------------- LeRobot side (its venv)
def lerobot_dump(root: str, out: str) -> None:
    """Load ``root`` with LeRobot's ``LeRobotDataset`` and save every frame's values to ``out`` (npz)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/compat", root=root)
    frames = [ds[i] for i in range(len(ds))]
    values = {k: np.stack([f[k].numpy() for f in frames]) for k in frames[0] if k != "task"}
    values["task"] = np.array([f["task"] for f in frames])
    np.savez(out, **values)


def lerobot_write(root: str, episodes: int, frames: int, size: int, expected: str) -> None:
    """Write a dataset with LeRobot's own writer (random values, image features) and save what went in."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {k: {"dtype": "float32", "shape": (n,), "names": None} for k, n in DIMS.items()}
    features[IMAGE] = {"dtype": "image", "shape": (size, size, 3), "names": ["height", "width", "channels"]}
    ds = LeRobotDataset.create("local/compat", fps=20, root=root, robot_type="panda", features=features, use_videos=False)
    rng = np.random.default_rng(0)
    values: dict[str, list[np.ndarray]] = {}
    for e in range(episodes):
        for _ in range(frames):
            frame = {k: rng.normal(size=n).astype(np.float32) for k, n in DIMS.items()}
            frame[IMAGE] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            frame["task"] = TASKS[e % len(TASKS)]
            for k, v in frame.items():
                values.setdefault(k, []).append(v)
            ds.add_frame(dict(frame))  # add_frame takes the task out of the dict it is given
        ds.save_episode()
    ds.finalize()
    np.savez(expected, **{k: np.stack(v) for k, v in values.items()})


# ------------------------------------------------------------------------------- embodyhub side
def run_lerobot(python: str, *args: str) -> None:
    """This script's LeRobot side in LeRobot's interpreter (without embodyhub's PYTHONPATH); output passes through."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, __file__, "--lerobot-side", *args], check=True, env=env)


def embodyhub_frames(root: Path) -> dict[str, np.ndarray]:
    """Every frame of ``root`` as read by embodyhub, stacked per feature (images float32 CHW in [0, 1])."""
    from embodyhub.data import load_dataset

    ds = load_dataset(root)
    frames = [ds[i] for i in range(len(ds))]
    values = {k: np.stack([f[k].numpy() for f in frames]) for k in frames[0] if k != "task"}
    values["task"] = np.array([f["task"] for f in frames])
    return values


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


def as_read(expected: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values given to ``add_frame`` in the layout a reader returns them (images float32 CHW in [0, 1])."""
    out = dict(expected)
    out[IMAGE] = expected[IMAGE].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lerobot-python", default="/tmp/lrvenv/bin/python", help="interpreter with lerobot 0.6 installed")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    parser.add_argument("--fixture", help="only write the small LeRobot-made test dataset into this folder")
    parser.add_argument("--lerobot-side", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lerobot_side:
        mode, *rest = args.lerobot_side
        if mode == "dump":
            lerobot_dump(*rest)
        else:
            lerobot_write(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
        return 0
    if args.fixture:
        root = Path(args.fixture)
        run_lerobot(args.lerobot_python, "write", str(root), "2", "3", "16", str(root.parent / "expected.npz"))
        (root.parent / "expected.npz").replace(root / "expected.npz")
        print(f"fixture: {root} ({sum(p.stat().st_size for p in root.rglob('*') if p.is_file()) / 1e3:.0f} kB)")
        return 0

    from embodyhub.cli import main as embodyhub_cli

    work = Path(args.out or tempfile.mkdtemp(prefix="lerobot_compat_"))
    ok = True
    # (a) embodyhub collect --camera -> LeRobot's LeRobotDataset
    collected = work / "collected"
    embodyhub_cli(["collect", "--env", "lift", "--robot", "panda", "--episodes", str(args.episodes), "--camera", "agentview",
                   "--image-size", str(args.image_size), "--out", str(collected)])
    run_lerobot(args.lerobot_python, "dump", str(collected), str(work / "collected_by_lerobot.npz"))
    with np.load(work / "collected_by_lerobot.npz") as theirs:
        ok &= compare(f"(a) `embodyhub collect --camera agentview --image-size {args.image_size}` "
                      "read by embodyhub vs by LeRobot's LeRobotDataset", embodyhub_frames(collected), dict(theirs))
    info = json.loads((collected / "meta/info.json").read_text())
    print(f"\ninfo.json: codebase_version {info['codebase_version']}, {info['total_episodes']} episodes, "
          f"{info['total_frames']} frames, {IMAGE} = {info['features'][IMAGE]}")

    # (b) LeRobot's own writer -> embodyhub
    written = work / "lerobot_written"
    run_lerobot(args.lerobot_python, "write", str(written), str(args.episodes), "20", str(args.image_size),
                str(work / "lerobot_input.npz"))
    run_lerobot(args.lerobot_python, "dump", str(written), str(work / "written_by_lerobot.npz"))
    ours = embodyhub_frames(written)
    with np.load(work / "lerobot_input.npz") as given, np.load(work / "written_by_lerobot.npz") as theirs:
        ok &= compare("(b) LeRobot-written dataset read by embodyhub vs by LeRobot", ours, dict(theirs))
        ok &= compare("(b') LeRobot-written dataset read by embodyhub vs the values given to add_frame",
                      {k: ours[k] for k in given.files}, as_read(dict(given)))
    print(f"\n{'all values equal' if ok else 'MISMATCH'} (work folder {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
