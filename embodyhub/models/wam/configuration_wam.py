"""WamConfig: hyper-parameters of the World-Action Model."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from ...embodiment.spec import JOINT_FEATURES
from ...errors import ConfigError


class WamConfig(PreTrainedConfig):
    r"""Configuration of a World-Action Model (``model_type="wam"``).

    The sequence is ``[embodiment tokens][state tokens][keypoint tokens][task tokens][goal tokens][image
    patches][action tokens]``; every observation part but the state is optional and masked when absent.
    Action tokens are discrete bins of canonical action dimensions, one token per (step, dimension)
    the robot fills. The world head predicts, per chunk step, where each object keypoint and end effector
    moves (offsets from now) when ``max_keypoints > 0``; else (the v1 layout) the end-effector positions.
    The v2 fields default to "off", so a v1 checkpoint loads and computes exactly as before.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: transformer size.
        rms_norm_eps, rope_theta, max_position_embeddings: norm and rotary settings.
        action_bins: number of bins per action dimension (token ids ``0..action_bins-1``).
        action_dim: width of the canonical action space.
        chunk_length: actions predicted per chunk (H).
        joint_feature_dim: width of ``Embodiment.joint_features()``.
        state_slots: canonical slot boundaries ``[(start, size), ...]``; one state token per slot.
        max_arms: arms the world head predicts end-effector positions for.
        image_size, patch_size, num_channels: optional image patches (``image_size=0`` disables).
        max_keypoints: object keypoint tokens (3D points, an unordered set; ``0`` disables them and the
            keypoint-flow world head).
        keypoints_per_object: consecutive keypoints that belong to one object (its centre first); each
            point's token then also reads its object's shape (the other points from the centre), which
            tells objects apart (e.g. two cubes of different size) while the objects stay an unordered set.
        task_vocab_size, max_task_tokens: word vocabulary of the processor's task tokenizer (``0``
            disables task tokens) and the longest task string in words.
        world_loss_weight: weight of the world-head loss.
        embodiments: ``{name: urdf_sha256}`` of the robots the model was trained on.
    """

    model_type = "wam"

    def __init__(
        self,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 384,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 512,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        action_bins: int = 256,
        action_dim: int = 39,
        chunk_length: int = 8,
        joint_feature_dim: int = JOINT_FEATURES,
        state_slots: list[list[int]] | None = None,
        max_arms: int = 2,
        image_size: int = 0,
        patch_size: int = 16,
        num_channels: int = 3,
        max_keypoints: int = 0,
        keypoints_per_object: int = 1,
        task_vocab_size: int = 0,
        max_task_tokens: int = 16,
        world_loss_weight: float = 1.0,
        embodiments: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        sizes = dict(
            hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size, action_bins=action_bins, action_dim=action_dim, chunk_length=chunk_length,
        )
        bad = [f"{k}={v!r}" for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ConfigError(f"WamConfig sizes must be positive integers, got {', '.join(bad)}")
        optional = dict(max_keypoints=max_keypoints, task_vocab_size=task_vocab_size, max_task_tokens=max_task_tokens)
        bad = [f"{k}={v!r}" for k, v in optional.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if bad:
            raise ConfigError(f"WamConfig counts must be non-negative integers, got {', '.join(bad)}")
        if isinstance(keypoints_per_object, bool) or not isinstance(keypoints_per_object, int) or keypoints_per_object < 1 \
                or max_keypoints % keypoints_per_object:
            raise ConfigError(f"keypoints_per_object must be a positive integer dividing max_keypoints={max_keypoints}, "
                              f"got {keypoints_per_object!r}")
        if hidden_size % num_attention_heads:
            raise ConfigError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        if kwargs.get("model_type", self.model_type) != self.model_type:
            raise ConfigError(f"a config of model_type {kwargs['model_type']!r} is not a WamConfig (model_type 'wam')")
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.action_bins = action_bins
        self.action_dim = action_dim
        self.chunk_length = chunk_length
        self.joint_feature_dim = joint_feature_dim
        self.state_slots = state_slots if state_slots is not None else _default_slots()
        self.max_arms = max_arms
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.max_keypoints = max_keypoints
        self.keypoints_per_object = keypoints_per_object
        self.task_vocab_size = task_vocab_size
        self.max_task_tokens = max_task_tokens
        self.world_loss_weight = world_loss_weight
        self.embodiments = dict(embodiments or {})
        self.vocab_size = action_bins + 1  # the bins, then the BOS token that starts every action sequence
        kwargs.pop("vocab_size", None)
        kwargs["bos_token_id"] = action_bins
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


def _default_slots() -> list[list[int]]:
    from ...embodiment.action_space import CanonicalActionSpace

    return [[s.start, s.size] for s in CanonicalActionSpace().slots.values()]
