"""A saved WAM as a simulator policy: ``SimEnv`` observation -> processor inputs -> chunk -> one command a step.

``ModelPolicy`` names the model folder (and optional LoRA adapter) and is picklable, so spawned evaluation
workers load the model themselves (once per process); ``WamSimPolicy`` is the loaded policy for one arm
and task: it feeds the joint state, the object keypoints, the task string and (for a model with image
inputs) the camera frame to the processor, and pops one native joint command per control step from an
``ActionQueue`` of predicted chunks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ...embodiment import Embodiment
from ...errors import InvalidActionError


@dataclass(frozen=True)
class ModelPolicy:
    """Which model drives the arm: a ``save_pretrained`` folder (or Hub id), an optional adapter folder, and how
    many steps of each chunk run before re-planning (None: the whole chunk)."""

    model: str
    adapter: str | None = None
    replan_every: int | None = None

    def build(self, embodiment: Embodiment, task: str) -> "WamSimPolicy":
        """The policy for ``embodiment`` on ``task`` (the task's description string), the model loaded once per process."""
        model, processor = _load(self.model, self.adapter)
        return WamSimPolicy(model, processor, embodiment, task, self.replan_every)


@functools.lru_cache(maxsize=4)
def _load(model_dir: str, adapter_dir: str | None) -> tuple[Any, Any]:
    from ...models.wam import WamForActionPrediction, WamProcessor

    model = WamForActionPrediction.from_pretrained(model_dir).eval()
    processor = WamProcessor.from_pretrained(model_dir)
    if adapter_dir is not None:
        from ...training.lora import load_adapter

        model, _ = load_adapter(model, adapter_dir)
        model.eval()
    return model, processor


class WamSimPolicy:
    """``policy(observation) -> native joint targets [dof]``: re-plans a chunk whenever the queue runs out."""

    def __init__(self, model: Any, processor: Any, embodiment: Embodiment, task: str, replan_every: int | None = None) -> None:
        from ...models.wam import ActionQueue

        self.model, self.processor, self.embodiment, self.task = model, processor, embodiment, task
        self.queue = ActionQueue(self._plan, replan_every)

    def reset(self) -> None:
        """Forget the queued chunk (a new episode)."""
        self.queue.reset()

    def inputs(self, observation: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """A ``SimEnv`` observation as processor inputs (batch of one)."""
        out: dict[str, Any] = {
            "state": torch.as_tensor(observation["observation.state"], dtype=torch.float64)[None],
            "environment_state": torch.as_tensor(observation["observation.environment_state"], dtype=torch.float64)[None],
            "task": self.task,
        }
        size = getattr(self.model.config, "image_size", 0)
        if size:
            frames = [v for k, v in observation.items() if k.startswith("observation.images.")]
            if not frames or frames[0].shape[:2] != (size, size):
                raise InvalidActionError(f"this model reads {size}x{size} camera frames: make the SimEnv with a camera of that size")
            out["pixel_values"] = torch.as_tensor(frames[0]).permute(2, 0, 1)[None].float() / 255
        return out

    @torch.inference_mode()
    def _plan(self, observation: Mapping[str, np.ndarray]) -> torch.Tensor:
        return self.model.predict_action(**self.processor(self.inputs(observation), self.embodiment))[0]

    def __call__(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.queue(observation).numpy()
