"""A saved WAM as a simulator policy: ``SimEnv`` observation -> processor inputs -> chunk -> one command a step.

``ModelPolicy`` names the model folder (and optional LoRA adapter) and is picklable, so spawned evaluation
workers load the model themselves (once per process); ``WamSimPolicy`` is the loaded policy for one arm
and task: it feeds the joint state, the object keypoints, the task string and (for a model with image
inputs) the camera frame to the processor, and pops one native joint command per control step from an
``ActionQueue`` of predicted chunks. ``BundlePolicy`` is the same for an export bundle: the arm's ONNX policy
graph on onnxruntime (``OnnxPolicy``) plans the chunks, the same greedy ones as the model it was exported from.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ...embodiment import Embodiment
from ...errors import EmbodimentMismatchError, InvalidActionError


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

    def describe(self) -> dict[str, Any]:
        """What an evaluation row records about the policy."""
        return {"policy": self.model, "adapter": self.adapter}


@dataclass(frozen=True)
class BundlePolicy:
    """An export bundle (``embodyhub export``) drives the arm: the bundle folder, the onnxruntime threads, and
    how many steps of each chunk run before re-planning (None: the whole chunk). Picklable like
    ``ModelPolicy``; each process opens (and verifies) the bundle once."""

    bundle: str
    replan_every: int | None = None
    threads: int = 1

    def build(self, embodiment: Embodiment, task: str) -> "WamSimPolicy":
        """The policy for ``embodiment`` on ``task``: the bundle's graph for that arm, whose embodiment card must
        be the simulator's (same URDF hash)."""
        policy = _open_bundle(self.bundle, embodiment.name, self.threads)
        if policy.embodiment.urdf_sha256 != embodiment.urdf_sha256:
            raise EmbodimentMismatchError(
                f"the bundle's '{embodiment.name}' is another robot than the simulator's (URDF hash differs): export the "
                f"simulator arm (`embodyhub export --model DIR --robot {embodiment.name}` with a model trained on the simulator)"
            )
        return BundleSimPolicy(policy, embodiment, task, self.replan_every)

    def describe(self) -> dict[str, Any]:
        """What an evaluation row records about the policy."""
        return {"policy": self.bundle, "adapter": None, "runtime": "onnxruntime"}


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


@functools.lru_cache(maxsize=4)
def _open_bundle(bundle: str, robot: str, threads: int) -> Any:
    from ...export.runtime import OnnxPolicy

    return OnnxPolicy(bundle, robot, threads)


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
        size = self.image_size
        if size:
            frames = [v for k, v in observation.items() if k.startswith("observation.images.")]
            if not frames or frames[0].shape[:2] != (size, size):
                raise InvalidActionError(f"this model reads {size}x{size} camera frames: make the SimEnv with a camera of that size")
            out["pixel_values"] = torch.as_tensor(frames[0]).permute(2, 0, 1)[None].float() / 255
        return out

    @property
    def image_size(self) -> int:
        """The camera frames' size the model reads (0: none)."""
        return getattr(self.model.config, "image_size", 0)

    @torch.inference_mode()
    def _plan(self, observation: Mapping[str, np.ndarray]) -> torch.Tensor:
        return self.model.predict_action(**self.processor(self.inputs(observation), self.embodiment))[0]

    def __call__(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.queue(observation).numpy()


class BundleSimPolicy(WamSimPolicy):
    """``WamSimPolicy`` planning with a bundle's policy graph (``OnnxPolicy``) instead of the PyTorch model."""

    def __init__(self, policy: Any, embodiment: Embodiment, task: str, replan_every: int | None = None) -> None:
        super().__init__(policy, policy.processor, embodiment, task, replan_every)

    @property
    def image_size(self) -> int:
        return self.model.image[-1] if self.model.image else 0

    def _plan(self, observation: Mapping[str, np.ndarray]) -> torch.Tensor:
        inputs = self.inputs(observation)
        return self.model(inputs.pop("state"), **inputs)[0]
