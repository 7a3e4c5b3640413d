"""WAM success on the manipulation benchmark, several models and control modes side by side in one run.

    python benchmarks/wam_sim.py --model multi-arm=runs/sim/model --model panda-only=runs/panda/model \
        --robots panda --tasks lift,stack,can --controls joint,osc --episodes 50 --workers 2

Issue #21's baselines: the multi-arm base against the same model trained on one arm's data only (does
multi-arm pretraining help that arm?), and joint control through embodyhub's IK against robosuite's OSC
driven by the same decoded commands (as end-effector targets). Every cell runs the same evaluation seeds
(from 1000000, disjoint from collection). The last columns give the first model's lead over each other
model with its 95% noise band (normal approximation for two independent success rates over the episodes):
a lead larger than the band is more than evaluation noise.
"""

from __future__ import annotations

import argparse
import math

import torch


def noise_band(a: float, b: float, episodes: int) -> float:
    """Half-width of the 95% interval of the difference of two independent success rates over ``episodes``."""
    return 1.96 * math.sqrt((a * (1 - a) + b * (1 - b)) / episodes)


def main() -> None:
    from embodyhub.envs.sim import ModelPolicy, evaluate_policy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=DIR", help="a model folder (repeatable)")
    parser.add_argument("--robots", default="panda")
    parser.add_argument("--tasks", default="lift,stack,can")
    parser.add_argument("--controls", default="joint", help="joint and/or osc, comma-separated")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = dict(m.split("=", 1) for m in args.model)
    labels = list(models)
    n = args.episodes
    print(f"\n## WAM success, {n} evaluation episodes per cell (seeds from 1000000)\n")
    head = ["robot", "task", "control", *labels, *[f"{labels[0]} - {other} (95% band)" for other in labels[1:]]]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|")
    for robot in args.robots.split(","):
        for task in args.tasks.split(","):
            for control in args.controls.split(","):
                rates = [evaluate_policy(task, robot, n, workers=args.workers, control=control, progress=False,
                                         policy=ModelPolicy(models[label]))["success_rate"] for label in labels]
                leads = [f"{rates[0] - r:+.0%} (±{noise_band(rates[0], r, n):.0%})" for r in rates[1:]]
                print("| " + " | ".join([robot, task, control, *[f"{r:.0%}" for r in rates], *leads]) + " |", flush=True)


if __name__ == "__main__":
    main()
