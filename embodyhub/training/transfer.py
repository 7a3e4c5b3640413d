"""Transfer to a robot held out from pretraining: zero-shot vs LoRA vs full fine-tuning on N demos.

Every method starts from the same base checkpoint, trains on the first N episodes of one
synthetic dataset and is scored on the same held-out reach targets, so the rows are comparable.
An ``expert`` row scores the demonstrator itself on those targets within the same step budget:
the ceiling imitation can reach (a slow arm may need more steps than the budget allows).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoModel, AutoProcessor

from ..embodiment import Embodiment
from ..envs import Policy, ReachEnv, plan_reach
from .evaluate import evaluate_reach
from .lora import AdaptRecipe, adapt, save_adapter, trainable_share
from .pretrain import prepare_data

EVAL_SEED = 1234  # reach targets of every row (the demonstrations use the recipe's seed)


def folder_bytes(folder: Path) -> int:
    """Bytes on disk of every file under ``folder`` (an adapter, a saved model)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def expert_policy(embodiment: Embodiment, recipe: AdaptRecipe) -> Policy:
    """The demonstrator as a policy: its whole reach plan from the current state, as one chunk."""
    generator = torch.Generator().manual_seed(recipe.seed)

    def policy(obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return plan_reach(embodiment, obs["q"], obs["goal"], recipe.steps_per_episode, generator, profile=recipe.reach_profile).q

    return policy


def transfer_benchmark(
    base: str | os.PathLike,
    embodiment: Embodiment,
    recipe: AdaptRecipe,
    data_dir: str | os.PathLike,
    demo_counts: Sequence[int] = (10, 50, 200),
    methods: Sequence[str] = ("lora", "full"),
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rows (method, demos, success, trainable share, bytes on disk, train seconds) and the raw results.

    ``base`` is a saved model+processor folder; the same ``recipe`` (steps, learning rate, LoRA rank)
    is used for every row, only the number of demonstrations and what trains change.
    """
    dataset = prepare_data(recipe, Path(data_dir), progress, robots=[embodiment], episodes=max(demo_counts))[embodiment.name]

    def evaluate(model: Any, processor: Any) -> dict[str, Any]:
        return evaluate_reach(
            model, processor, [embodiment], recipe.eval_episodes, recipe.eval_max_steps, EVAL_SEED, goal_distance=recipe.goal_distance
        )[embodiment.name]

    processor = AutoProcessor.from_pretrained(base)
    # The environment ``evaluate_reach`` builds, so the expert meets the same targets.
    env = ReachEnv(embodiment, recipe.eval_episodes, max_steps=recipe.eval_max_steps, seed=EVAL_SEED, goal_distance=recipe.goal_distance)
    results = {
        "expert": env.evaluate(expert_policy(embodiment, recipe), recipe.eval_episodes, seed=EVAL_SEED),
        "zero-shot": evaluate(AutoModel.from_pretrained(base).eval(), processor),
    }
    rows = [
        dict(method=m, demos=0, success=results[m]["success_rate"], trainable=0.0, bytes=0, seconds=0.0)
        for m in ("expert", "zero-shot")
    ]
    with tempfile.TemporaryDirectory(prefix="embodyhub-transfer-") as tmp:
        for n in demo_counts:
            for method in methods:
                model = AutoModel.from_pretrained(base)
                model, log = adapt(
                    model, processor, embodiment, dataset, dataclasses.replace(recipe, episodes=n),
                    full_finetune=method == "full", progress=progress,
                )
                share = trainable_share(model)
                saved = Path(tmp) / f"{method}-{n}"
                if method == "full":
                    model.save_pretrained(saved)
                else:
                    saved = save_adapter(model, embodiment, saved)
                key = f"{method} N={n}"
                results[key] = evaluate(model, processor)
                rows.append(dict(
                    method=method, demos=n, success=results[key]["success_rate"], trainable=share,
                    bytes=folder_bytes(saved), seconds=log[-1]["seconds"],
                ))
    return rows, results


def format_table(rows: list[dict[str, Any]], robot: str) -> str:
    """The benchmark table plus LoRA's success as a share of full fine-tuning's at each N."""
    lines = [
        f"transfer to {robot} (held out from pretraining), closed-loop reach",
        f"{'method':<10} {'demos':>5} {'success':>8} {'trainable':>10} {'on disk':>10} {'train s':>8}",
    ]
    for r in rows:
        lines.append(
            f"{r['method']:<10} {r['demos']:>5} {r['success']:>8.1%} {r['trainable']:>10.2%} "
            f"{r['bytes'] / 1e6:>8.2f}MB {r['seconds']:>8.1f}"
        )
    full = {r["demos"]: r for r in rows if r["method"] == "full"}
    for r in rows:
        if r["method"] == "lora" and r["demos"] in full:
            f = full[r["demos"]]
            ratio = r["success"] / f["success"] if f["success"] > 0 else float("nan")
            lines.append(f"LoRA / full at N={r['demos']}: success {ratio:.2f}x, on disk {r['bytes'] / f['bytes']:.3f}x")
    return "\n".join(lines)

