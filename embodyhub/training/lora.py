"""LoRA adaptation: one small peft adapter per robot on one WAM base.

An adapter folder holds peft's files plus the robot's ``embodiment.json`` and URDF, and a
``wam_base.json`` describing the base it was trained on, so loading it onto a base with another
shape or for another robot fails with ``EmbodimentMismatchError`` before torch sees a tensor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ..data import LeRobotDataset, check_features, needed_features
from ..data.features import DEMO_FEATURES
from ..embodiment import Embodiment
from ..errors import EmbodimentMismatchError
from ..hub.checks import BASE_FILE, base_signature, check_adapter
from ..models.wam import WamForActionPrediction, WamProcessor
from ..recipes import Recipe
from .pretrain import train

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.0, modules_to_save: list[str] | None = None) -> LoraConfig:
    """LoRA on every attention and MLP Linear of the trunk (``task_type=None``: a custom model)."""
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, modules_to_save=modules_to_save, task_type=None)


def attach_adapter(
    model: WamForActionPrediction | PeftModel, embodiment: Embodiment, config: LoraConfig | None = None
) -> PeftModel:
    """Add a LoRA adapter named after the robot (wrapping the base on first use) and make it active."""
    config = config or lora_config()
    if isinstance(model, PeftModel):
        model.add_adapter(embodiment.name, config)
    else:
        model = get_peft_model(model, config, adapter_name=embodiment.name)
    model.set_adapter(embodiment.name)
    return model


def save_adapter(model: PeftModel, embodiment: Embodiment, save_directory: str | os.PathLike) -> Path:
    """Write the robot's adapter with its embodiment card, URDF and base signature; returns the folder."""
    out = Path(save_directory)
    model.save_pretrained(out, selected_adapters=[embodiment.name])
    folder = out / embodiment.name if (out / embodiment.name / "adapter_config.json").is_file() else out
    embodiment.save_pretrained(folder)
    (folder / BASE_FILE).write_text(json.dumps(base_signature(model), indent=2) + "\n")
    return folder


def load_adapter(
    model: WamForActionPrediction | PeftModel, adapter_dir: str | os.PathLike, embodiment: Embodiment | None = None
) -> tuple[PeftModel, Embodiment]:
    """Load an adapter folder (or Hub id) onto ``model`` after checking the base signature and, if given, the robot."""
    robot = check_adapter(model, adapter_dir, embodiment)
    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name=robot.name)
    else:
        model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=robot.name)
    model.set_adapter(robot.name)
    return model, robot


@dataclass
class AdaptRecipe(Recipe):
    """What ``embodyhub adapt`` reads from ``recipes/adapt_lora.yaml`` (kinematic reach) or
    ``recipes/adapt_sim.yaml`` (``--env``: the robosuite tasks, where ``workers`` simulator processes collect and
    evaluate, and each demo starts ``start_spread`` metres around the arm's home as in pretraining)."""

    episodes: int = 50  # demonstrations per task trained on (generated for the robot when no dataset is given)
    tasks: list[str] = field(default_factory=lambda: ["reach"])
    workers: int = 1
    start_spread: float = 0.0
    steps_per_episode: int = 30
    goal_distance: float | None = 0.3
    reach_profile: str = "proportional"
    lora: dict[str, Any] = field(default_factory=dict)  # keyword arguments of ``lora_config``
    train_steps: int = 400
    batch_size: int = 64
    learning_rate: float = 2e-3
    full_learning_rate: float = 3e-4  # full fine-tuning (the baseline): every weight moves, so a smaller step
    weight_decay: float = 0.0
    warmup_steps: int = 20
    eval_episodes: int = 50
    eval_max_steps: int = 60
    seed: int = 1


def check_dataset(dataset: LeRobotDataset, embodiment: Embodiment, needed: Sequence[str] = DEMO_FEATURES) -> None:
    """Refuse demonstrations that lack a feature in ``needed`` (``needed_features`` of the model), or recorded on
    another body (when the dataset carries an embodiment card)."""
    check_features(dataset.root, needed)
    card = dataset.info.get("embodyhub", {}).get("embodiment")
    if card is not None:
        embodiment.check_compatible(card)
    dof = dataset.features["observation.state"]["shape"][-1]
    if dof != embodiment.dof:
        raise EmbodimentMismatchError(f"{dataset.root}: states have {dof} values; '{embodiment.name}' has {embodiment.dof} joints")


def demos_per_task(datasets: LeRobotDataset | Mapping[str, LeRobotDataset], wanted: int) -> int:
    """How many demos of each task ``adapt`` trains on: ``wanted``, or fewer where a task of the data has fewer."""
    many = datasets.values() if isinstance(datasets, Mapping) else [datasets]
    return min([wanted, *(len(ids) for ds in many for ids in ds.task_episodes.values())])


def adapt(
    model: WamForActionPrediction | PeftModel,
    processor: WamProcessor,
    embodiment: Embodiment,
    dataset: LeRobotDataset | Mapping[str, LeRobotDataset],
    recipe: AdaptRecipe,
    full_finetune: bool = False,
    progress: bool = True,
) -> tuple[WamForActionPrediction | PeftModel, list[dict[str, float]]]:
    """Train a LoRA adapter for ``embodiment`` on the first ``recipe.episodes`` demos of each task of ``dataset``
    (one dataset, or several by label such as ``collect_sim``'s one per task; ``demos_per_task``).

    ``full_finetune=True`` trains every weight of ``model`` instead, at ``recipe.full_learning_rate``: the
    baseline LoRA is measured against. The processor learns the robot's card so the result is saved with it.
    ``recipe.seed`` seeds the adapter's initial weights and the batches: the same recipe and data give the
    same adapter, whatever the caller's random state.
    """
    datasets = dict(dataset) if isinstance(dataset, Mapping) else {embodiment.name: dataset}
    needed = needed_features(model.config.to_dict())
    for ds in datasets.values():
        check_dataset(ds, embodiment, needed)
    processor.add_embodiment(embodiment)
    torch.manual_seed(recipe.seed)  # peft draws the adapter's initial weights from the global generator
    if not full_finetune:
        model = attach_adapter(model, embodiment, lora_config(**recipe.lora))
    log = train(
        model, processor, datasets, recipe.train_steps, recipe.batch_size,
        recipe.full_learning_rate if full_finetune else recipe.learning_rate,
        recipe.weight_decay, recipe.warmup_steps, recipe.seed, progress, episodes=demos_per_task(datasets, recipe.episodes),
    )
    return model, log


def trainable_share(model: torch.nn.Module) -> float:
    """Fraction of parameters that train (a LoRA-wrapped model: the adapter's share)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / total
