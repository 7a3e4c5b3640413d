"""WamProcessor: robot observation + embodiment -> model inputs, and action tokens -> native joint commands.

It owns everything non-neural between a robot and the model: the embodiment cards (and their
URDFs, saved next to the weights and fetched back through ``cached_file``), the canonical
normalization (``KinematicAdapter``), the action-token schedule a robot fills, the binning
tokenizer, the keypoint features and the word-level task tokenizer (its vocabulary is saved in
``processor_config.json``). Decoding clamps every command to the URDF position limits and to the
velocity limits over one control step.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from transformers import BatchFeature, ProcessorMixin
from transformers.utils import cached_file

from ...embodiment import CanonicalActionSpace, Embodiment, KinematicAdapter
from ...embodiment.spec import CARD_NAME, URDF_NAME, plain_name
from ...errors import EmbodimentMismatchError, InvalidActionError
from ...kinematics.rotations import matrix_to_rotation_6d
from .action_tokenizer import BinningActionTokenizer, canonical_ranges
from .modeling_wam import GOAL_PER_ARM

EMBODIMENTS_DIR = "embodiments"
_RELATIVE_GOAL_SCALE = 10.0  # goal-minus-end-effector offsets (decimetres, 6D entries x10): O(1) inputs
_SHAPE_SCALE = 100.0  # an object's points from its centre (centimetres): sizes that differ by millimetres stay apart
TASK_PAD, TASK_UNK = 0, 1  # task token ids; the vocabulary's words follow
_TASK_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")  # lowercase words and numbers; each punctuation mark alone
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class WamProcessor(ProcessorMixin):
    """Builds ``WamForActionPrediction`` inputs for one embodiment and decodes its action tokens."""

    def __init__(
        self,
        action_bins: int = 256,
        action_low: list[float] | None = None,
        action_high: list[float] | None = None,
        chunk_length: int = 8,
        action_slots: Sequence[str] = ("ee_pos", "ee_rot6d", "gripper"),
        embodiment_names: Sequence[str] = (),
        max_arms: int = 2,
        max_arm_joints: int = 8,
        max_joints: int = 24,
        ik_restarts: int = 4,
        relative_position_range: float | None = 0.25,
        relative_rotation_range: float | None = 0.5,
        max_keypoints: int = 0,
        keypoints_per_object: int = 1,
        task_vocab: Sequence[str] = (),
        max_task_tokens: int = 16,
    ) -> None:
        self.space = CanonicalActionSpace(max_arms, max_arm_joints)
        if action_low is None or action_high is None:
            action_low, action_high = canonical_ranges(self.space, relative_position_range, relative_rotation_range)
        self.bins = BinningActionTokenizer(action_bins, action_low, action_high)
        self.relative_position_range = relative_position_range
        self.relative_rotation_range = relative_rotation_range
        self.action_bins = action_bins
        self.action_low, self.action_high = self.bins.low.tolist(), self.bins.high.tolist()
        self.chunk_length = chunk_length
        self.action_slots = list(action_slots)
        self.max_arms, self.max_arm_joints, self.max_joints = max_arms, max_arm_joints, max_joints
        self.ik_restarts = ik_restarts
        self.embodiment_names = list(embodiment_names)
        if keypoints_per_object < 1 or max_keypoints % keypoints_per_object:
            raise InvalidActionError(f"keypoints_per_object must be a positive integer dividing max_keypoints={max_keypoints}, "
                                     f"got {keypoints_per_object}")
        self.max_keypoints = max_keypoints
        self.keypoints_per_object = keypoints_per_object
        self.task_vocab = list(task_vocab)
        self.max_task_tokens = max_task_tokens
        self._task_ids = {w: i + 2 for i, w in enumerate(self.task_vocab)}
        self.embodiments: dict[str, Embodiment] = {}
        self._adapters: dict[str, KinematicAdapter] = {}
        super().__init__()

    # ------------------------------------------------------------------ embodiments
    def add_embodiment(self, embodiment: Embodiment) -> None:
        """Register a robot the model is trained on (saved with the processor)."""
        plain_name(embodiment.name, "embodiment name")  # it names the card's folder when saved
        self.adapter(embodiment)  # validates it fits the canonical space
        self.embodiments[embodiment.name] = embodiment
        if embodiment.name not in self.embodiment_names:
            self.embodiment_names.append(embodiment.name)

    def resolve(self, embodiment: Embodiment | str) -> Embodiment:
        """An ``Embodiment`` object is used as is (any URDF works); a name must be one of ours."""
        if isinstance(embodiment, Embodiment):
            return embodiment
        if embodiment not in self.embodiments:
            raise EmbodimentMismatchError(
                f"the processor has no embodiment card named '{embodiment}' (it knows {sorted(self.embodiments)}); "
                "pass an Embodiment built from the robot's URDF instead"
            )
        return self.embodiments[embodiment]

    def adapter(self, embodiment: Embodiment) -> KinematicAdapter:
        key = f"{embodiment.name}:{embodiment.urdf_sha256}:{embodiment.joint_names}"
        if key not in self._adapters:
            if embodiment.dof > self.max_joints:
                raise EmbodimentMismatchError(f"'{embodiment.name}' has {embodiment.dof} joints; the processor takes {self.max_joints}")
            self._adapters[key] = KinematicAdapter(embodiment, self.space)
        return self._adapters[key]

    def schedule(self, embodiment: Embodiment) -> tuple[Tensor, Tensor]:
        """Canonical dimension and chunk step of each action token ``([L], [L])`` for this robot."""
        mask = self.adapter(embodiment).mask
        dims = [
            d
            for i in range(len(embodiment.arms))
            for slot in self.action_slots
            for d in range(self.space.slots[f"arm{i}.{slot}"].start, self.space.slots[f"arm{i}.{slot}"].slice.stop)
            if mask[d]
        ]
        dims_t = torch.tensor(dims, dtype=torch.long).repeat(self.chunk_length)
        steps_t = torch.arange(self.chunk_length).repeat_interleave(len(dims))
        return dims_t, steps_t

    # ------------------------------------------------------------------ task tokenizer
    @staticmethod
    def task_words(texts: Sequence[str]) -> list[str]:
        """The sorted word vocabulary of ``texts`` (lowercase, punctuation split off), for ``task_vocab=``."""
        return sorted({w for t in texts for w in _TASK_WORD.findall(t.lower())})

    @property
    def task_vocab_size(self) -> int:
        """Task token ids the model must embed (pad, unknown, then the words); 0 without a vocabulary."""
        return len(self.task_vocab) + 2 if self.task_vocab else 0

    def encode_task(self, task: str | Sequence[str] | None, batch_size: int) -> tuple[Tensor, Tensor]:
        """Task string(s) -> ``task_ids`` ``[B, max_task_tokens]`` and ``task_mask``; a word outside the vocabulary
        is the unknown id, words past ``max_task_tokens`` are dropped, no task masks every position."""
        if isinstance(task, str):
            task = [task] * batch_size
        if task is not None and (len(task) != batch_size or not all(isinstance(t, str) for t in task)):
            raise InvalidActionError(f"task must be a string or a list of {batch_size} strings, got {task!r:.200}")
        ids = torch.full((batch_size, self.max_task_tokens), TASK_PAD, dtype=torch.long)
        for b, text in enumerate(task or ()):
            words = _TASK_WORD.findall(text.lower())[: self.max_task_tokens]
            ids[b, : len(words)] = torch.tensor([self._task_ids.get(w, TASK_UNK) for w in words], dtype=torch.long)
        return ids, ids != TASK_PAD

    # ------------------------------------------------------------------ encoding
    def __call__(
        self,
        observation: Mapping[str, Any],
        embodiment: Embodiment | str,
        actions: Tensor | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """``observation`` (plain or LeRobot ``observation.*`` names): ``state`` (native joints ``[B, dof]``,
        required); optional ``goal`` (per-arm target poses ``[B, arms, 4, 4]`` in each arm's base frame),
        ``environment_state`` (object keypoints ``[B, K*3]`` or ``[B, K, 3]``, metres in arm 0's base frame,
        ``K <= max_keypoints``), ``task`` (a string, or one per sample), ``pixel_values``. What the processor
        is not configured for (keypoints, tasks) is left out; what is absent is masked.

        ``actions`` (native ``[B, H, dof]``) adds ``input_ids``/``labels``/``world_targets``/``world_mask`` for
        training. With keypoints the world targets are the flow (``[B, H, max_keypoints + max_arms, 3]``, metres
        moved since now) from ``future_environment_state`` ``[B, H, K*3]`` (the keypoints after each step; else
        their flow is masked) and ``future_state`` ``[B, H, dof]`` (the joints after each step, FK gives the end
        effectors; else the commanded ``actions``)."""
        emb = self.resolve(embodiment)
        adapter = self.adapter(emb)
        state = _get(observation, "state")
        if state is None:
            raise InvalidActionError("observation needs 'state' (native joint positions [B, dof])")
        q = _float32_range(emb.check_q(torch.as_tensor(state, dtype=torch.float64), "observation state"), "observation state")
        q = q[None] if q.dim() == 1 else q
        B = q.shape[0]
        x, mask = adapter.to_canonical(q)
        _float32_range(x, "the canonical state of the observation")
        goal, goal_mask = self._goal(observation, emb, x)
        dims, steps = self.schedule(emb)
        features: dict[str, Any] = {
            "joint_features": emb.joint_features().expand(B, -1, -1),
            "joint_mask": torch.ones(B, emb.dof, dtype=torch.bool),
            "state": x.float(),
            "state_mask": mask.expand(B, -1),
            "goal": goal,
            "goal_mask": goal_mask,
            "action_dims": dims.expand(B, -1),
            "action_steps": steps.expand(B, -1),
        }
        points = point_mask = None
        if self.max_keypoints:
            points, point_mask = self._points(_get(observation, "environment_state"), B, "environment_state")
            features["keypoints"] = self._keypoint_features(points, emb, x)
            features["keypoint_mask"] = point_mask
        if self.task_vocab:
            features["task_ids"], features["task_mask"] = self.encode_task(_get(observation, "task"), B)
        if observation.get("pixel_values") is not None:
            features["pixel_values"] = torch.as_tensor(observation["pixel_values"], dtype=torch.float32)
        if actions is not None:
            features.update(self._targets(actions, emb, x, dims, steps, B))
            if self.max_keypoints:
                features.update(self._flow_targets(observation, emb, x, features.pop("world_targets"), points, point_mask, B))
        batch = BatchFeature(features)
        batch["action_decoder"] = ActionDecoder(self, emb, q)
        return batch

    def _goal(self, observation: Mapping[str, Any], emb: Embodiment, state: Tensor) -> tuple[Tensor, Tensor]:
        """Per arm: goal position and 6D rotation, then the goal minus the current end-effector pose
        (scaled by 10: the offset the policy must close is the most informative input)."""
        B, n = state.shape[0], len(emb.arms)
        goal = _get(observation, "goal")
        if goal is None:  # no goal: zeros, and a mask the model reads as "absent"
            return torch.zeros(B, self.max_arms * GOAL_PER_ARM), torch.zeros(B, self.max_arms, dtype=torch.bool)
        goal = _float32_range(torch.as_tensor(goal, dtype=torch.float64), "goal")
        if goal.shape[-2:] == (4, 4):
            goal = goal.reshape(-1, n, 4, 4) if goal.dim() > 2 else goal.reshape(1, 1, 4, 4)
            goal = torch.cat([goal[..., :3, 3], matrix_to_rotation_6d(goal[..., :3, :3])], -1).reshape(goal.shape[0], -1)
        goal = goal.reshape(-1, goal.shape[-1])
        if goal.shape != (B, n * 9):
            raise InvalidActionError(
                f"goal has shape {tuple(goal.shape)}; expected [{B}, {n}, 4, 4] poses or [{B}, {n * 9}] vectors"
            )
        per_arm = goal.reshape(B, n, 9)
        ee = torch.stack([state[:, self.space[f"arm{i}.ee_pos"].start : self.space[f"arm{i}.ee_rot6d"].stop] for i in range(n)], 1)
        per_arm = _float32_range(torch.cat([per_arm, (per_arm - ee) * _RELATIVE_GOAL_SCALE], -1), "the goal features")
        padded = torch.zeros(B, self.max_arms, GOAL_PER_ARM, dtype=torch.float32)
        padded[:, :n] = per_arm.float()
        goal_mask = torch.zeros(B, self.max_arms, dtype=torch.bool)
        goal_mask[:, :n] = True
        return padded.reshape(B, -1), goal_mask

    def _points(self, values: Any, B: int, what: str, steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Keypoints ``[B, (steps,) K*3]`` or ``[B, (steps,) K, 3]`` -> padded ``[B, (steps,) max_keypoints, 3]``
        (float64) and the mask of real ones ``[B, max_keypoints]``; None gives no keypoints."""
        lead = (B,) if steps is None else (B, steps)
        points = torch.zeros(*lead, self.max_keypoints, 3, dtype=torch.float64)
        mask = torch.zeros(B, self.max_keypoints, dtype=torch.bool)
        if values is None:
            return points, mask
        v = _float32_range(torch.as_tensor(values, dtype=torch.float64), what)
        if v.dim() == len(lead):  # one observation: [K*3] (or [H, K*3])
            v = v[None]
        if v.dim() == len(lead) + 1 and v.shape[-1] % 3 == 0:  # flat K*3
            v = v.reshape(*v.shape[:-1], -1, 3)
        if v.dim() != len(lead) + 2 or tuple(v.shape[: len(lead)]) != lead or v.shape[-1] != 3 or v.shape[-2] > self.max_keypoints:
            shape = f"[{B}, {steps}, K*3]" if steps is not None else f"[{B}, K*3] or [{B}, K, 3]"
            raise InvalidActionError(f"{what} has shape {tuple(v.shape)}; expected {shape} with K <= {self.max_keypoints}")
        K = v.shape[-2]
        if K % self.keypoints_per_object:
            raise InvalidActionError(f"{what} holds {K} keypoints; this processor reads {self.keypoints_per_object} per object")
        points[..., :K, :] = v
        mask[:, :K] = True
        return points, mask

    def _keypoint_features(self, points: Tensor, emb: Embodiment, state: Tensor) -> Tensor:
        """Per keypoint its position, its offset from each arm's end effector (scaled like the goal's; zero for
        arms the robot lacks), then its object's other points from the object's centre (in centimetres; with
        ``keypoints_per_object > 1``): ``[B, max_keypoints, 3 * (max_arms + keypoints_per_object)]``
        (``keypoint_features``)."""
        B, n = points.shape[0], self.keypoints_per_object
        rel = torch.zeros(B, self.max_keypoints, self.max_arms, 3, dtype=torch.float64)
        for i in range(len(emb.arms)):
            rel[:, :, i] = (points - state[:, None, self.space[f"arm{i}.ee_pos"]]) * _RELATIVE_GOAL_SCALE
        parts = [points, rel.flatten(2)]
        if n > 1:  # (no empty shape part: the exported graph's shape inference refuses a zero-width concat)
            objects = points.reshape(B, -1, n, 3)
            parts.append(((objects[:, :, 1:] - objects[:, :, :1]) * _SHAPE_SCALE).flatten(2).repeat_interleave(n, 1))
        return _float32_range(torch.cat(parts, -1), "the keypoint features").float()

    def _flow_targets(
        self, observation: Mapping[str, Any], emb: Embodiment, state: Tensor, commanded: Tensor,
        points: Tensor, point_mask: Tensor, B: int,
    ) -> dict[str, Tensor]:
        """Keypoint flow targets ``[B, H, max_keypoints + max_arms, 3]`` (offsets from now) and their mask."""
        H = self.chunk_length
        world = torch.zeros(B, H, self.max_keypoints + self.max_arms, 3)
        world_mask = torch.zeros(B, H, self.max_keypoints + self.max_arms, dtype=torch.bool)
        future = _get(observation, "future_environment_state")
        if future is not None:
            ahead, _ = self._points(future, B, "future_environment_state", steps=H)
            world[:, :, : self.max_keypoints] = (ahead - points[:, None]).float()
            world_mask[:, :, : self.max_keypoints] = point_mask[:, None]
        future_state = _get(observation, "future_state")
        if future_state is not None:
            q = emb.check_q(torch.as_tensor(future_state, dtype=torch.float64), "future_state")
            if q.shape[:2] != (B, H):
                raise InvalidActionError(f"future_state must be [B={B}, H={H}, dof], got {tuple(q.shape)}")
            ends = self.adapter(emb).to_canonical(q)[0]
        else:
            ends = None
        for i in range(len(emb.arms)):
            pos = self.space[f"arm{i}.ee_pos"]
            end = ends[..., pos] if ends is not None else commanded[..., 3 * i : 3 * i + 3].double()
            world[:, :, self.max_keypoints + i] = (end - state[:, None, pos]).float()
            world_mask[:, :, self.max_keypoints + i] = True
        return {"world_targets": world, "world_mask": world_mask}

    def _relative_dims(self, emb: Embodiment) -> Tensor:
        """Canonical dimensions coded as offsets from the current state (end-effector pose, if enabled):
        per-step motions are far smaller than the workspace, so offsets get the bins' full resolution."""
        kinds = [k for k, r in (("ee_pos", self.relative_position_range), ("ee_rot6d", self.relative_rotation_range)) if r is not None]
        dims = [torch.arange(self.space.dim)[self.space[f"arm{i}.{k}"]] for i in range(len(emb.arms)) for k in kinds]
        return torch.cat(dims) if dims else torch.zeros(0, dtype=torch.long)

    def _targets(self, actions: Tensor, emb: Embodiment, state: Tensor, dims: Tensor, steps: Tensor, B: int) -> dict[str, Tensor]:
        actions = emb.check_q(torch.as_tensor(actions, dtype=torch.float64), "actions")
        if actions.shape[:2] != (B, self.chunk_length):
            raise InvalidActionError(f"actions must be [B={B}, H={self.chunk_length}, dof], got {tuple(actions.shape)}")
        x, _ = self.adapter(emb).to_canonical(actions)  # [B, H, D]
        coded = x.clone()
        rel = self._relative_dims(emb)
        coded[..., rel] -= state[:, None, rel]
        tokens = self.bins.encode(coded[:, steps, dims], dims.expand(B, -1))
        bos = torch.full((B, 1), self.action_bins, dtype=torch.long)
        world = torch.zeros(B, self.chunk_length, 3 * self.max_arms)
        world_mask = torch.zeros_like(world, dtype=torch.bool)
        for i in range(len(emb.arms)):
            world[..., 3 * i : 3 * i + 3] = x[..., self.space[f"arm{i}.ee_pos"]].float()
            world_mask[..., 3 * i : 3 * i + 3] = True
        return {
            "input_ids": torch.cat([bos, tokens[:, :-1]], 1),
            "labels": tokens,
            "world_targets": world,
            "world_mask": world_mask,
        }

    # ------------------------------------------------------------------ decoding
    def decode_actions(self, tokens: Tensor, embodiment: Embodiment | str, q_current: Tensor) -> Tensor:
        """Action tokens ``[B, L]`` -> native joint commands ``[B, H, dof]``, each step clamped to the
        URDF position limits and to the velocity limits over one control step from the previous one."""
        emb = self.resolve(embodiment)
        adapter = self.adapter(emb)
        dims, steps = self.schedule(emb)
        tokens = torch.as_tensor(tokens)
        if tokens.shape[-1] != dims.shape[0]:
            raise InvalidActionError(f"expected {dims.shape[0]} action tokens for '{emb.name}', got {tokens.shape[-1]}")
        q_current = emb.check_q(q_current, "q_current")
        q_current = q_current[None] if q_current.dim() == 1 else q_current
        B, H = tokens.shape[0], self.chunk_length
        x = torch.zeros(B, H, self.space.dim, dtype=torch.float64)
        x[:, steps, dims] = self.bins.decode(tokens, dims.expand(B, -1))
        rel = self._relative_dims(emb)
        x[..., rel] += adapter.to_canonical(q_current)[0][:, None, rel]
        predicted = torch.zeros(self.space.dim, dtype=torch.bool)
        predicted[dims] = True
        seed = q_current.repeat_interleave(H, 0)
        # One batched solve for all steps (IK seeded at the current state, fixed restart draws so the
        # same tokens and state always give the same command), then clamp step by step.
        targets = adapter.from_canonical(
            x.reshape(B * H, -1), seed, source_mask=predicted & adapter.mask, clamp_velocity=False, restarts=self.ik_restarts, seed=0
        ).reshape(B, H, emb.dof)
        out, q = [], q_current.to(torch.float64)
        for h in range(H):
            q = emb.clamp(targets[:, h], q)
            out.append(q)
        return torch.stack(out, 1)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """``processor_config.json`` plus ``embodiments/<name>/{embodiment.json, robot.urdf}``;
        ``push_to_hub=True`` then publishes through ``push_to_hub`` (embodyhub's card)."""
        hub = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "create_pr", "revision", "token") if k in kwargs}
        files = super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        for name, emb in self.embodiments.items():
            emb.save_pretrained(Path(save_directory) / EMBODIMENTS_DIR / name)
        if push_to_hub:
            self.push_to_hub(hub.pop("repo_id", Path(save_directory).name), **hub)
        return files

    def push_to_hub(self, repo_id: str, **publish_kwargs: Any) -> Any:
        """Publish the processor and its embodiment cards in one commit, with a card that also describes
        the model already in the repo: see ``embodyhub.hub.publish``."""
        from ...hub.publish import push_pretrained

        return push_pretrained([self], repo_id, **publish_kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "WamProcessor":
        """Load the config, then each embodiment card and URDF through ``cached_file`` (local, Hub or cache)."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        hub = {k: v for k, v in kwargs.items() if k in _HUB_KWARGS}
        for name in processor.embodiment_names:
            plain_name(name, "processor_config.json embodiment name")
            card = cached_file(pretrained_model_name_or_path, f"{EMBODIMENTS_DIR}/{name}/{CARD_NAME}", **hub)
            urdf = cached_file(pretrained_model_name_or_path, f"{EMBODIMENTS_DIR}/{name}/{URDF_NAME}", **hub)
            if card is None or urdf is None:
                raise EmbodimentMismatchError(f"embodiment '{name}' is listed but its card or URDF is missing")
            emb = Embodiment.from_card(json.loads(Path(card).read_text()), Path(urdf).read_text())
            processor.embodiments[name] = emb
        return processor


def _get(observation: Mapping[str, Any], key: str) -> Any:
    """``observation[key]``, else its LeRobot name ``observation.<key>``, else None."""
    value = observation.get(key)
    return value if value is not None else observation.get(f"observation.{key}")


def _float32_range(values: Tensor, what: str) -> Tensor:
    """``values`` if finite and within float32's range (the model and the exported graph compute in float32:
    a larger value becomes inf there, then NaN logits); else ``InvalidActionError``."""
    if not torch.isfinite(values).all():
        raise InvalidActionError(f"{what} contains NaN or infinite values")
    if values.numel() and float(values.abs().max()) > torch.finfo(torch.float32).max:
        raise InvalidActionError(f"{what} holds values beyond float32's range (±{torch.finfo(torch.float32).max:.3g})")
    return values


class ActionDecoder:
    """Carried in the processor's output so ``model.predict_action`` can return native commands."""

    def __init__(self, processor: WamProcessor, embodiment: Embodiment, q_current: Tensor) -> None:
        self.processor, self.embodiment, self.q_current = processor, embodiment, q_current

    def __call__(self, tokens: Tensor) -> Tensor:
        q = self.q_current
        if tokens.shape[0] != q.shape[0]:  # several sampled paths per observation
            q = q.repeat_interleave(tokens.shape[0] // q.shape[0], 0)
        return self.processor.decode_actions(tokens, self.embodiment, q)
