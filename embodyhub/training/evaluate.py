"""Closed-loop evaluation of a WAM in the kinematic reach environment, with a PNG summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..embodiment import Embodiment
from ..envs import Policy, ReachEnv
from ..models.wam import WamForActionPrediction, WamProcessor


def wam_policy(model: WamForActionPrediction, processor: WamProcessor, embodiment: Embodiment, execute: int | None = None) -> Policy:
    """Environment policy: predict a chunk from ``obs`` and execute its first ``execute`` steps (all if None)."""

    def policy(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        chunk = model.predict_action(**processor({"state": obs["q"], "goal": obs["goal"]}, embodiment))
        return chunk[:, :execute] if execute else chunk

    return policy


def evaluate_reach(
    model: WamForActionPrediction,
    processor: WamProcessor,
    embodiments: list[Embodiment],
    episodes: int = 50,
    max_steps: int = 60,
    seed: int = 1234,
    execute: int | None = None,
    goal_distance: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Closed-loop reach success per robot on held-out random targets (``seed`` differs from the data's)."""
    results = {}
    for emb in embodiments:
        env = ReachEnv(emb, batch_size=episodes, max_steps=max_steps, seed=seed, goal_distance=goal_distance)
        results[emb.name] = env.evaluate(wam_policy(model, processor, emb, execute), episodes, seed=seed)
    return results


def plot_results(results: dict[str, dict[str, Any]], path: str | Path, title: str = "closed-loop reach") -> Path:
    """Bar chart of success per robot, and the first episodes' end-effector paths (x-y) per robot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    cols = min(4, 1 + len(names))
    rows = -(-(1 + len(names)) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    axes = grid.flatten()
    for ax in axes[1 + len(names) :]:
        ax.axis("off")
    axes[0].bar(names, [100 * results[n]["success_rate"] for n in names], color="tab:blue")
    axes[0].set_ylim(0, 100)
    axes[0].set_ylabel("success (%)")
    axes[0].set_title(title)
    axes[0].tick_params(axis="x", rotation=45)
    for ax, name in zip(axes[1:], names):
        r = results[name]
        for i, path_xyz in enumerate(r["ee_trajectories"][:5]):
            xy = path_xyz[:, 0, :2].numpy()
            ok = bool(r["success"][i])
            ax.plot(xy[:, 0], xy[:, 1], "-", color="tab:green" if ok else "tab:red", lw=1)
            goal = r["waypoints"][i][-1, 0, :2].numpy()
            ax.plot(goal[0], goal[1], "k*", ms=8)
            ax.plot(xy[0, 0], xy[0, 1], "o", color="gray", ms=4)
        ax.set_title(f"{name}: {100 * r['success_rate']:.0f}%")
        ax.set_xlabel("x (m, arm base)")
        ax.set_ylabel("y (m)")
        ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, save at 90 dpi (creating the folder) and close ``fig`` (pyplot keeps open figures alive)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
