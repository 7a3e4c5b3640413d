"""Plots of benchmark results: success per robot and task, titled, with values on the bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def row_label(row: dict[str, Any]) -> str:
    """A row's robot, with its ``method`` where it has one (``embodyhub adapt``: zero-shot, LoRA, full fine-tuning)."""
    return f"{row['robot']} {row['method']}" if row.get("method") else row["robot"]


def plot_success(rows: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Grouped bars of ``success_rate`` per robot (groups; robot and method for ``embodyhub adapt``'s rows) and task
    (bars); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    robots = list(dict.fromkeys(row_label(r) for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    width = 0.8 / len(tasks)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(robots) * len(tasks) ** 0.5 + 2), 3.8))
    for k, task in enumerate(tasks):
        values = [next((100 * r["success_rate"] for r in rows if row_label(r) == rb and r["task"] == task), np.nan) for rb in robots]
        x = np.arange(len(robots)) + (k - (len(tasks) - 1) / 2) * width
        bars = ax.bar(x, values, width, label=task)
        ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
    ax.set_xticks(np.arange(len(robots)), robots, rotation=20 if len(robots) > 4 else 0)
    ax.set_ylim(0, 112)
    ax.set_xlabel("robot")
    ax.set_ylabel("success (%)")
    ax.set_title(title)
    ax.legend(title="task", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
