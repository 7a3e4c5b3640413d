"""LoRA adaptation: one small peft adapter per robot on one WAM base.

An adapter folder holds peft's files plus the robot's ``embodiment.json`` and URDF, and a
``wam_base.json`` describing the base it was trained on, so loading it onto a base with another
shape or for another robot fails with ``EmbodimentMismatchError`` before torch sees a tensor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model

from ..embodiment import Embodiment
from ..errors import EmbodimentMismatchError
from ..models.wam import WamForActionPrediction

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BASE_FILE = "wam_base.json"
_BASE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size", "action_dim", "chunk_length")


def lora_config(r: int = 8, alpha: int = 16, dropout: float = 0.0, modules_to_save: list[str] | None = None) -> LoraConfig:
    """LoRA on every attention and MLP Linear of the trunk (``task_type=None``: a custom model)."""
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, modules_to_save=modules_to_save, task_type=None)


def base_signature(model: WamForActionPrediction | PeftModel) -> dict[str, Any]:
    """What an adapter must agree on with its base."""
    config = model.config
    return {key: getattr(config, key) for key in _BASE_KEYS}


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
    """Load an adapter folder onto ``model`` after checking the base signature and, if given, the robot."""
    folder = Path(adapter_dir)
    saved = json.loads((folder / BASE_FILE).read_text()) if (folder / BASE_FILE).is_file() else None
    if saved is None:
        raise EmbodimentMismatchError(f"{folder} has no {BASE_FILE}: not an embodyhub adapter folder")
    mine = base_signature(model)
    diffs = [f"{k}: adapter {saved.get(k)!r}, base {mine[k]!r}" for k in _BASE_KEYS if saved.get(k) != mine[k]]
    if diffs:
        raise EmbodimentMismatchError(f"adapter {folder} was trained on another base:\n  " + "\n  ".join(diffs))
    robot = Embodiment.from_pretrained(folder)
    if embodiment is not None:
        embodiment.check_compatible(robot.to_card())
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=robot.name)
    else:
        model = PeftModel.from_pretrained(model, str(folder), adapter_name=robot.name)
    model.set_adapter(robot.name)
    return model, robot
