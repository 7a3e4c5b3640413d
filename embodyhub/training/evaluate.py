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


def success_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a success rate measured on ``n`` episodes (how far the rate may move by chance)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((rate * (1 - rate) + z * z / (4 * n)) / n) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def success_bars(ax: Any, names: list[str], rates: list[float], episodes: list[int], title: str) -> None:
    """Horizontal bars of success (%) with their 95% intervals and values, one row per name."""
    lows, highs = zip(*(success_interval(r, n) for r, n in zip(rates, episodes)))
    values = [100 * r for r in rates]
    err = [[v - 100 * lo for v, lo in zip(values, lows)], [100 * hi - v for v, hi in zip(values, highs)]]
    ax.barh(names, values, xerr=err, color="tab:blue", error_kw={"ecolor": "gray", "capsize": 3})
    for i, (v, hi) in enumerate(zip(values, highs)):  # right of the interval, where nothing covers it
        ax.text(100 * hi + 2, i, f"{v:.0f}%", va="center")
    ax.set_xlim(0, 115)
    ax.set_xticks(range(0, 101, 20))
    ax.invert_yaxis()  # first name on top
    shown = f"{episodes[0]} episodes" if len(set(episodes)) == 1 else "episodes per row"
    ax.set_xlabel(f"success (%), bars: 95% interval over {shown}")
    ax.set_ylabel("robot / stage")
    ax.set_title(title)


def plot_results(results: dict[str, dict[str, Any]], path: str | Path, title: str = "closed-loop reach") -> Path:
    """Success per robot (with its 95% interval), and the first episodes' end-effector paths (x-y) per robot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(results)
    cols = min(4, 1 + len(names))
    rows = -(-(1 + len(names)) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.8 * rows), squeeze=False)
    axes = grid.flatten()
    for ax in axes[1 + len(names) :]:
        fig.delaxes(ax)  # no empty panels
    success_bars(axes[0], names, [results[n]["success_rate"] for n in names], [results[n]["episodes"] for n in names], title)
    legend = [
        Line2D([], [], color="tab:green", label="reached"),
        Line2D([], [], color="tab:red", label="missed"),
        Line2D([], [], color="gray", marker="o", ls="", label="start"),
        Line2D([], [], color="k", marker="*", ls="", ms=8, label="goal"),
    ]
    for ax, name in zip(axes[1:], names):
        r = results[name]
        shown = min(5, len(r["ee_trajectories"]))
        for i, path_xyz in enumerate(r["ee_trajectories"][:shown]):
            xy = path_xyz[:, 0, :2].numpy()
            ok = bool(r["success"][i])
            ax.plot(xy[:, 0], xy[:, 1], "-", color="tab:green" if ok else "tab:red", lw=1)
            goal = r["waypoints"][i][-1, 0, :2].numpy()
            ax.plot(goal[0], goal[1], "k*", ms=8)
            ax.plot(xy[0, 0], xy[0, 1], "o", color="gray", ms=4)
        ax.set_title(f"{name}\n{100 * r['success_rate']:.0f}% success; {shown} of {r['episodes']} paths shown", fontsize=10)
        ax.set_xlabel("x (m, arm base)")
        ax.set_ylabel("y (m, arm base)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(handles=legend, fontsize=7, loc="best")
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
