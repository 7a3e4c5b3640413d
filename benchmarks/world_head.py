"""World head (keypoint flow) against the "nothing moves" baseline, on held-out expert episodes.

    python benchmarks/world_head.py --model runs/sim/model --episodes 10 --out /tmp/eh_world

Held-out episodes are scripted-expert demos collected from seed 100000 on (training collects from 0;
evaluation seeds start at 1000000), on every arm, the held-out ones included, and every task. For each
frame the model predicts how far each object keypoint and each end effector will have moved after
every step of the chunk (``imagine``'s keypoint flow); the recorded episode says how far they did. The
peer is the "nothing moves" prediction (zero displacement). The table gives the mean Euclidean error
in mm over every (frame, step, point), for object keypoints and end effectors separately, and the
model's error as a fraction of the baseline's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def flow_errors(model, processor, embodiment, samples: dict, batch_size: int = 256) -> dict[str, tuple[float, float, int]]:
    """``{"objects"|"end effectors": (model error sum, baseline error sum, count)}`` in metres."""
    k = processor.max_keypoints
    sums = {"objects": [0.0, 0.0, 0], "end effectors": [0.0, 0.0, 0]}
    frames = samples["state"].shape[0]
    for start in range(0, frames, batch_size):
        rows = slice(start, min(frames, start + batch_size))
        observation = {key: (value[rows] if key != "task" else value[rows.start : rows.stop]) for key, value in samples.items() if key != "actions"}
        batch = processor(observation, embodiment, actions=samples["actions"][rows])
        batch.pop("action_decoder")
        with torch.no_grad():
            predicted = model(**batch).world
        target, mask = batch["world_targets"], batch["world_mask"]
        model_err = (predicted - target).norm(dim=-1)
        still_err = target.norm(dim=-1)
        for name, part in (("objects", slice(0, k)), ("end effectors", slice(k, None))):
            m = mask[:, :, part]
            sums[name][0] += float(model_err[:, :, part][m].sum())
            sums[name][1] += float(still_err[:, :, part][m].sum())
            sums[name][2] += int(m.sum())
    return {name: tuple(v) for name, v in sums.items()}


def main() -> None:
    from embodyhub.data import load_dataset
    from embodyhub.envs.sim import collect, sim_embodiment
    from embodyhub.models.wam import WamForActionPrediction, WamProcessor
    from embodyhub.training.pretrain import chunk_samples

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a v2 base (keypoints configured)")
    parser.add_argument("--robots", default="panda,iiwa,ur5e,kinova3,xarm7,jaco")
    parser.add_argument("--tasks", default="lift,stack,can")
    parser.add_argument("--episodes", type=int, default=10, help="held-out episodes per robot and task")
    parser.add_argument("--first-seed", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/eh_world", help="where the held-out episodes are collected (resumable)")
    args = parser.parse_args()
    model = WamForActionPrediction.from_pretrained(args.model).eval()
    processor = WamProcessor.from_pretrained(args.model)
    if not processor.max_keypoints:
        raise SystemExit(f"{args.model} has no keypoint inputs: its world head predicts no keypoint flow")
    print(f"\n## Keypoint flow vs \"nothing moves\", {args.episodes} held-out episodes per cell (seeds from {args.first_seed})\n")
    print("| robot | task | objects: model mm | objects: still mm | ratio | end effectors: model mm | still mm | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    totals = {"objects": [0.0, 0.0, 0], "end effectors": [0.0, 0.0, 0]}
    for robot in args.robots.split(","):
        for task in args.tasks.split(","):
            folder = collect([task], robot, args.episodes, Path(args.out) / f"{robot}-{task}", workers=args.workers,
                             progress=False, first_seed=args.first_seed)
            samples = chunk_samples(load_dataset(folder), processor.chunk_length)
            errors = flow_errors(model, processor, sim_embodiment(robot), samples)
            cells = []
            for name in ("objects", "end effectors"):
                m, s, n = errors[name]
                totals[name] = [totals[name][0] + m, totals[name][1] + s, totals[name][2] + n]
                cells.append(f"{1e3 * m / n:.1f} | {1e3 * s / n:.1f} | {m / s:.2f}")
            print(f"| {robot} | {task} | {' | '.join(cells)} |", flush=True)
    cells = [f"{1e3 * m / n:.1f} | {1e3 * s / n:.1f} | {m / s:.2f}" for m, s, n in totals.values()]
    print(f"| all | all | {' | '.join(cells)} |")
    print("\nmm: mean Euclidean error over every frame, chunk step and point; still: the zero-motion prediction")


if __name__ == "__main__":
    main()
