"""World-Action Model: a decoder-only transformer over embodiment, observation and action tokens.

Sequence: ``[joint tokens][state slot tokens][keypoint tokens][task tokens][goal tokens][image
patches][BOS + action tokens]``, causal attention, so a single ``DynamicCache`` holds the whole prefix
and decoding adds one action token per step. Absent observation parts (padding keypoints and task
words, a missing goal) are masked out of attention, not merely zeroed. The keypoints are a set: one
shared point MLP embeds each, all of them share one rotary position and see each other (a
bidirectional block inside the causal prefix), so their order changes nothing; with several points per
object each point also reads its object's shape, so objects keep an identity. Each action position
is told which canonical dimension and chunk step it predicts (dimension and step embeddings), so
robots with different slot masks share one vocabulary.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ...errors import InvalidActionError
from .configuration_wam import WamConfig

SEGMENT_JOINT, SEGMENT_STATE, SEGMENT_GOAL, SEGMENT_IMAGE, SEGMENT_ACTION = range(5)
GOAL_PER_ARM = 18  # position (3) + 6D rotation (6), then both relative to the current end effector (9)
FLOW_SCALE = 10.0  # the keypoint-flow head works in decimetres: O(1) outputs for motions of centimetres
LABEL_SIGMA = 1.5  # bins: width of the Gaussian soft labels (near misses earn partial credit)


def keypoint_features(config: WamConfig) -> int:
    """Width of one keypoint token's input: its position, its offset from each arm's end effector, then its
    object's other points from the object's centre (``keypoints_per_object > 1``)."""
    return 3 * (1 + config.max_arms + config.keypoints_per_object - 1)


@dataclass
class WamModelOutput(ModelOutput):
    last_hidden_state: Tensor | None = None
    cache: Cache | None = None
    attention_mask: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings, each layer's output, the last normed (output_hidden_states)
    attentions: tuple[Tensor, ...] | None = None  # per layer [B, heads, new, past + new] (output_attentions)


@dataclass
class WamActionOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    world: Tensor | None = None
    cache: Cache | None = None
    last_hidden_state: Tensor | None = None
    attention_mask: Tensor | None = None
    action_loss: Tensor | None = None
    world_loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


class WamRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class WamRotaryEmbedding(nn.Module):
    def __init__(self, config: WamConfig) -> None:
        super().__init__()
        self.dim, self.base = config.hidden_size // config.num_attention_heads, config.rope_theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> Tensor:
        """Rotary frequencies; a non-persistent buffer, so ``_init_weights`` recomputes it after loading."""
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim))

    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], -1)


def apply_rotary_pos_emb(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    cos, sin = cos[:, None], sin[:, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class WamAttention(nn.Module):
    """Multi-head self-attention with explicit q/k/v/o Linear layers (LoRA targets) and SDPA."""

    def __init__(self, config: WamConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        # set by WamModel for a call with output_attentions: the weights are computed explicitly (SDPA does
        # not return them) and kept in ``weights`` until the model collects them
        self.keep_weights = False
        self.weights: Tensor | None = None

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        attention_mask: Tensor,
        cache: Cache | None = None,
    ) -> Tensor:
        B, L, _ = hidden_states.shape
        shape = (B, L, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.keep_weights:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            self.weights = scores.masked_fill(~attention_mask, float("-inf")).softmax(-1)
            out = F.dropout(self.weights, self.dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
            )
        return self.o_proj(out.transpose(1, 2).reshape(B, L, -1))


class WamMLP(nn.Module):
    """SwiGLU feed-forward with explicit gate/up/down Linear layers."""

    def __init__(self, config: WamConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class WamDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: WamConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = WamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = WamAttention(config, layer_idx)
        self.post_attention_layernorm = WamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = WamMLP(config)

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor],
        attention_mask: Tensor,
        cache: Cache | None = None,
    ) -> Tensor:
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class WamPreTrainedModel(PreTrainedModel):
    config_class = WamConfig
    config: WamConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["WamDecoderLayer"]
    _supports_sdpa = True
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, WamRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, WamRotaryEmbedding):
            with torch.no_grad():
                module.inv_freq.copy_(module.compute_inv_freq())


class WamModel(WamPreTrainedModel):
    """The transformer trunk: embeds the continuous prefix and the action tokens, returns hidden states."""

    def __init__(self, config: WamConfig) -> None:
        super().__init__(config)
        h = config.hidden_size
        self.slot_width = max(size for _, size in config.state_slots)
        self.joint_proj = nn.Linear(config.joint_feature_dim, h)
        self.state_proj = nn.Linear(2 * self.slot_width, h)
        self.slot_embed = nn.Embedding(len(config.state_slots), h)
        self.goal_proj = nn.Linear(GOAL_PER_ARM, h)
        self.arm_embed = nn.Embedding(config.max_arms, h)
        self.segment_embed = nn.Embedding(5, h)
        self.patch_proj = (
            nn.Linear(config.num_channels * config.patch_size**2, h) if config.image_size > 0 else None
        )
        # one MLP shared by every keypoint (no per-index embedding: the keypoints are a set)
        self.keypoint_proj = (
            nn.Sequential(nn.Linear(keypoint_features(config), h), nn.SiLU(), nn.Linear(h, h))
            if config.max_keypoints > 0 else None
        )
        self.task_embed = nn.Embedding(config.task_vocab_size, h) if config.task_vocab_size > 0 else None
        self.embed_tokens = nn.Embedding(config.vocab_size, h)
        self.dim_embed = nn.Embedding(config.action_dim, h)
        self.step_embed = nn.Embedding(config.chunk_length, h)
        self.layers = nn.ModuleList(WamDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = WamRMSNorm(h, config.rms_norm_eps)
        self.rotary_emb = WamRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def embed_prefix(
        self,
        joint_features: Tensor,
        joint_mask: Tensor,
        state: Tensor,
        state_mask: Tensor,
        goal: Tensor | None = None,
        goal_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        keypoints: Tensor | None = None,
        keypoint_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
        task_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix tokens ``[B, P, hidden]``, their validity ``[B, P]`` (``prefix_mask``) and rotary positions
        ``[P]`` (the keypoint tokens share one). Absent optional inputs (None) are masked out."""
        cfg = self.config
        B = state.shape[0]
        seg = self.segment_embed.weight
        dtype = self.joint_proj.weight.dtype
        joints = self.joint_proj(joint_features.to(dtype)) + seg[SEGMENT_JOINT]
        slots = []
        for start, size in cfg.state_slots:
            pad = self.slot_width - size
            values = F.pad(state[:, start : start + size] * state_mask[:, start : start + size], (0, pad))
            slots.append(torch.cat([values, F.pad(state_mask[:, start : start + size].to(values.dtype), (0, pad))], -1))
        states = self.state_proj(torch.stack(slots, 1).to(dtype)) + self.slot_embed.weight + seg[SEGMENT_STATE]
        parts = [joints, states]
        if self.keypoint_proj is not None:
            if keypoints is None:
                keypoints = states.new_zeros(B, cfg.max_keypoints, keypoint_features(cfg))
            elif keypoints.shape[1:] != (cfg.max_keypoints, keypoint_features(cfg)):
                raise InvalidActionError(
                    f"keypoints must be [B, {cfg.max_keypoints}, {keypoint_features(cfg)}] (use WamProcessor), "
                    f"got {tuple(keypoints.shape)}"
                )
            parts.append(self.keypoint_proj(keypoints.to(dtype)))
        elif keypoints is not None:
            raise InvalidActionError("this model was configured without keypoint inputs (max_keypoints=0)")
        if self.task_embed is not None:
            if task_ids is None:
                task_ids = torch.zeros(B, cfg.max_task_tokens, dtype=torch.long, device=states.device)
            elif task_ids.shape[1:] != (cfg.max_task_tokens,) or int(task_ids.max()) >= cfg.task_vocab_size:
                raise InvalidActionError(
                    f"task_ids must be [B, {cfg.max_task_tokens}] ids below {cfg.task_vocab_size} (the processor's task "
                    "vocabulary must be the one the model was built with)"
                )
            parts.append(self.task_embed(task_ids))
        elif task_ids is not None:
            raise InvalidActionError("this model was configured without task inputs (task_vocab_size=0)")
        if goal is None:
            goal = states.new_zeros(B, cfg.max_arms * GOAL_PER_ARM)
            goal_mask = torch.zeros(B, cfg.max_arms, dtype=torch.bool, device=states.device)
        goals = goal.view(B, cfg.max_arms, GOAL_PER_ARM).to(dtype)
        parts.append((self.goal_proj(goals) + self.arm_embed.weight) * goal_mask[..., None] + seg[SEGMENT_GOAL])
        if pixel_values is not None:
            if self.patch_proj is None:
                raise InvalidActionError("this model was configured without image inputs (image_size=0)")
            p = cfg.patch_size
            patches = F.unfold(pixel_values.to(dtype), kernel_size=p, stride=p).transpose(1, 2)
            parts.append(self.patch_proj(patches) + seg[SEGMENT_IMAGE])
        mask = self.prefix_mask(joint_mask, goal_mask, keypoint_mask, task_mask, pixel_values)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if self.keypoint_proj is not None:
            first = joint_mask.shape[1] + len(cfg.state_slots)
            positions[first : first + cfg.max_keypoints] = first
        return torch.cat(parts, 1), mask, positions

    def prefix_mask(
        self,
        joint_mask: Tensor,
        goal_mask: Tensor | None = None,
        keypoint_mask: Tensor | None = None,
        task_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
    ) -> Tensor:
        """Which prefix tokens attention may read ``[B, P]``: the robot's joints, every state slot, the valid
        keypoints and task words, the goal tokens of a sample that has a goal (an arm the robot lacks keeps
        a zeroed token, the v1 layout), every image patch. Decoding with a cache extends it by one per token."""
        cfg = self.config
        B, device = joint_mask.shape[0], joint_mask.device
        masks = [joint_mask.bool(), torch.ones(B, len(cfg.state_slots), dtype=torch.bool, device=device)]
        if self.keypoint_proj is not None:
            masks.append(keypoint_mask.bool() if keypoint_mask is not None else torch.zeros(B, cfg.max_keypoints, dtype=torch.bool, device=device))
        if self.task_embed is not None:
            masks.append(task_mask.bool() if task_mask is not None else torch.zeros(B, cfg.max_task_tokens, dtype=torch.bool, device=device))
        has_goal = goal_mask.bool().any(-1, keepdim=True) if goal_mask is not None else torch.zeros(B, 1, dtype=torch.bool, device=device)
        masks.append(has_goal.expand(B, cfg.max_arms))
        if pixel_values is not None:
            p = cfg.patch_size
            patches = (pixel_values.shape[-2] // p) * (pixel_values.shape[-1] // p)
            masks.append(torch.ones(B, patches, dtype=torch.bool, device=device))
        return torch.cat(masks, 1)

    def embed_actions(self, input_ids: Tensor, action_dims: Tensor, action_steps: Tensor) -> Tensor:
        """Previous token + which (dimension, step) this position predicts."""
        return self.embed_tokens(input_ids) + self.embed_action_slots(action_dims, action_steps)

    def embed_action_slots(self, action_dims: Tensor, action_steps: Tensor) -> Tensor:
        """The token-independent part of ``embed_actions``: which (dimension, step) a position predicts (a
        decoder with a fixed schedule tabulates it once)."""
        return self.dim_embed(action_dims.clamp_min(0)) + self.step_embed(action_steps.clamp_min(0)) + self.segment_embed.weight[SEGMENT_ACTION]

    def forward(
        self,
        input_ids: Tensor,
        action_dims: Tensor,
        action_steps: Tensor,
        joint_features: Tensor | None = None,
        joint_mask: Tensor | None = None,
        state: Tensor | None = None,
        state_mask: Tensor | None = None,
        goal: Tensor | None = None,
        goal_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        keypoints: Tensor | None = None,
        keypoint_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
        task_mask: Tensor | None = None,
    ) -> WamModelOutput | tuple:
        """Run the trunk. The prefix inputs are needed only when the cache is empty; of them only the
        embodiment and state are required (goal, keypoints, task words and images are masked when absent).

        ``attention_mask`` [B, past + new] marks valid keys; it is built (and returned) when omitted.
        ``output_attentions``, ``output_hidden_states`` and ``return_dict`` follow transformers (defaults
        from the config); an unknown keyword argument is a ``TypeError``.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.return_dict if return_dict is None else return_dict
        past = cache.get_seq_length() if cache is not None else 0
        embeds = self.embed_actions(input_ids, action_dims, action_steps)
        new_mask = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        positions = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)
        if past == 0:
            if joint_features is None or state is None or joint_mask is None or state_mask is None:
                raise InvalidActionError(
                    "the first forward needs joint_features, joint_mask, state and state_mask "
                    "(use WamProcessor to build them)"
                )
            if (goal is None) != (goal_mask is None):
                raise InvalidActionError("goal and goal_mask go together (use WamProcessor to build them)")
            prefix, prefix_mask, prefix_positions = self.embed_prefix(
                joint_features, joint_mask, state, state_mask, goal, goal_mask, pixel_values, keypoints, keypoint_mask, task_ids, task_mask
            )
            embeds = torch.cat([prefix, embeds], 1)
            new_mask = torch.cat([prefix_mask, new_mask], 1)
            positions = torch.cat([prefix_positions, positions + prefix.shape[1]])
        if attention_mask is None:
            if past:
                raise InvalidActionError("decoding with a cache needs the running attention_mask")
            attention_mask = new_mask
        attention_mask = attention_mask.bool()
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        L = embeds.shape[1]
        total = attention_mask.shape[1]
        if total != past + L:
            raise InvalidActionError(f"attention_mask covers {total} positions, expected {past + L}")
        # a key is visible from a query at the same or a later rotary position: causal, except that the
        # keypoint tokens (one shared position) see each other; cached keys all sit at or before ``past``
        keys = positions if past == 0 else torch.arange(total, device=embeds.device)
        causal = positions[:, None] >= keys[None, :]
        mask4d = causal[None, None] & attention_mask[:, None, None, :]
        position_embeddings = self.rotary_emb(embeds, positions.expand(embeds.shape[0], L))
        hidden = embeds
        states, weights = [hidden] if output_hidden_states else None, [] if output_attentions else None
        attentions = [getattr(layer, "self_attn", None) for layer in self.layers] if output_attentions else []
        if None in attentions:
            raise InvalidActionError("output_attentions needs the model's own decoder layers, not a fused decoder")
        for i, layer in enumerate(self.layers):
            if attentions:
                attentions[i].keep_weights = True
            try:
                hidden = layer(hidden, position_embeddings, mask4d, cache if use_cache else None)
            finally:
                if attentions:
                    attentions[i].keep_weights = False
            if states is not None:
                states.append(hidden)
            if weights is not None:
                weights.append(attentions[i].weights)
                attentions[i].weights = None
        hidden = self.norm(hidden)
        if states is not None:
            states[-1] = hidden  # as in transformers' decoders: the last entry is the normed output
        out = WamModelOutput(
            hidden, cache if use_cache else None, attention_mask,
            tuple(states) if states is not None else None, tuple(weights) if weights is not None else None,
        )
        return out if return_dict else out.to_tuple()


class WamForActionPrediction(WamPreTrainedModel, GenerationMixin):
    """WAM with the action head (logits over action bins) and the world head: the keypoint flow (where each
    object keypoint and end effector moves at each chunk step) or, with ``max_keypoints=0``, the v1
    end-effector positions."""

    def __init__(self, config: WamConfig) -> None:
        super().__init__(config)
        h = config.hidden_size
        self.model = WamModel(config)
        self.action_head = nn.Linear(h, config.vocab_size, bias=False)
        flow = config.max_keypoints > 0
        self.world_head = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 3 if flow else 3 * config.max_arms))
        # keypoint flow: a step's pooled hidden state plus one query per point (from its input features, so the
        # flow follows the keypoints' order) or per end effector
        self.flow_query = nn.Linear(keypoint_features(config), h) if flow else None
        self.flow_arm = nn.Embedding(config.max_arms, h) if flow else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.action_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.action_head = value

    # ------------------------------------------------------------------ Hub: checked loads, our card on push
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *args: Any, embodiment: Any = None, strict_embodiment: bool = False, **kwargs: Any
    ) -> "WamForActionPrediction":
        """transformers' loader; with ``embodiment=`` also checks the checkpoint's embodiment card for that
        robot (URDF sha256, DoF, joint names, action representation): ``EmbodimentMismatchError`` with the
        diff, or an ``EmbodimentAdaptedWarning`` saying how the canonical space bridges it."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if embodiment is not None:
            from ...hub.checks import check_checkpoint

            check_checkpoint(model.config, pretrained_model_name_or_path, embodiment, strict=strict_embodiment, hub_kwargs=kwargs)
        return model

    def load_adapter(self, peft_model_id: Any = None, adapter_name: str | None = None, *args: Any, embodiment: Any = None, **kwargs: Any) -> Any:
        """transformers' PEFT loader, after checking the adapter's ``wam_base.json`` against this model and,
        given ``embodiment``, its embodiment card against that robot."""
        if peft_model_id is not None:
            from ...hub.checks import check_adapter

            check_adapter(self, peft_model_id, embodiment, hub_kwargs=kwargs)
        return super().load_adapter(peft_model_id, adapter_name, *args, **kwargs)

    def push_to_hub(self, repo_id: str, *, processor: Any = None, **publish_kwargs: Any) -> Any:
        """Publish the model (and ``processor``, whose embodiment cards the card's robot table needs) with
        embodyhub's model card, in one commit: see ``embodyhub.hub.publish``."""
        from ...hub.publish import push_pretrained

        return push_pretrained([self] + ([processor] if processor is not None else []), repo_id, **publish_kwargs)

    def save_pretrained(self, save_directory: Any, *args: Any, push_to_hub: bool = False, **kwargs: Any) -> None:
        """transformers' save; ``push_to_hub=True`` then publishes through ``push_to_hub`` (our card)."""
        hub = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "create_pr", "revision") if k in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        if push_to_hub:
            self.push_to_hub(hub.pop("repo_id", str(save_directory).rstrip("/").split("/")[-1]), token=kwargs.get("token"), **hub)

    def soft_label_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy against Gaussian-smoothed bin labels: bins are ordered, so a prediction one bin
        off is nearly right; plain one-hot cross-entropy would score it like a random bin."""
        valid = labels >= 0
        flat = logits[valid].float()
        bins = torch.arange(self.config.action_bins, device=logits.device, dtype=flat.dtype)
        target = torch.exp(-0.5 * ((bins[None] - labels[valid][:, None].to(flat.dtype)) / LABEL_SIGMA) ** 2)
        target = F.pad(target / target.sum(-1, keepdim=True), (0, flat.shape[-1] - self.config.action_bins))
        return -(target * torch.log_softmax(flat, -1)).sum(-1).mean()

    def world_from_hidden(self, hidden: Tensor, action_steps: Tensor, keypoints: Tensor | None = None) -> Tensor:
        """Mean hidden state of each chunk step -> the world prediction: with keypoints configured the flow
        ``[B, H, max_keypoints + max_arms, 3]`` (metres moved since now: keypoints in ``keypoints``' order, then
        each arm's end effector); else the v1 end-effector positions ``[B, H, 3 * max_arms]``."""
        onehot = F.one_hot(action_steps.clamp_min(0), self.config.chunk_length).to(hidden.dtype)
        onehot = onehot * (action_steps >= 0)[..., None].to(hidden.dtype)
        pooled = onehot.transpose(1, 2) @ hidden / onehot.sum(1)[..., None].clamp_min(1)
        if self.flow_query is None:
            return self.world_head(pooled)
        B, cfg = hidden.shape[0], self.config
        if keypoints is None:
            keypoints = hidden.new_zeros(B, cfg.max_keypoints, keypoint_features(cfg))
        queries = torch.cat([self.flow_query(keypoints.to(hidden.dtype)), self.flow_arm.weight.expand(B, -1, -1)], 1)
        return self.world_head(pooled[:, :, None] + queries[:, None]) / FLOW_SCALE

    def world_loss(self, world: Tensor, targets: Tensor, mask: Tensor | None) -> Tensor:
        """Masked MSE on v1 end-effector positions; masked smooth L1 on the flow, in decimetres."""
        mask = torch.ones_like(world) if mask is None else mask.to(world.dtype)
        mask = mask[..., None].expand_as(world) if mask.dim() < world.dim() else mask
        if self.flow_query is None:
            err = (world - targets.to(world.dtype)) ** 2
        else:
            err = F.smooth_l1_loss(world * FLOW_SCALE, targets.to(world.dtype) * FLOW_SCALE, reduction="none")
        return (err * mask).sum() / mask.sum().clamp_min(1)

    def forward(
        self,
        input_ids: Tensor,
        action_dims: Tensor,
        action_steps: Tensor,
        joint_features: Tensor | None = None,
        joint_mask: Tensor | None = None,
        state: Tensor | None = None,
        state_mask: Tensor | None = None,
        goal: Tensor | None = None,
        goal_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        world_targets: Tensor | None = None,
        world_mask: Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        keypoints: Tensor | None = None,
        keypoint_mask: Tensor | None = None,
        task_ids: Tensor | None = None,
        task_mask: Tensor | None = None,
    ) -> WamActionOutput | tuple:
        """Logits for every action position; with ``labels`` the token loss, with ``world_targets`` the world loss
        (and ``world``, the prediction).

        The prefix inputs (``joint_features`` ... ``goal_mask``, optional ``pixel_values``, ``keypoints`` +
        ``keypoint_mask``, ``task_ids`` + ``task_mask``) come from ``WamProcessor`` and are needed only while
        the cache is empty. ``output_attentions``, ``output_hidden_states`` and ``return_dict`` follow
        transformers; an unknown keyword is a ``TypeError``."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        out = self.model(
            input_ids, action_dims, action_steps, joint_features, joint_mask, state, state_mask, goal, goal_mask,
            pixel_values, attention_mask, cache=cache, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, keypoints=keypoints, keypoint_mask=keypoint_mask,
            task_ids=task_ids, task_mask=task_mask,
        )
        hidden = out.last_hidden_state[:, -input_ids.shape[1] :]
        logits = self.action_head(hidden)
        loss = action_loss = world_loss = world = None
        if labels is not None:
            action_loss = self.soft_label_loss(logits, labels)
            loss = action_loss
        if world_targets is not None:
            world = self.world_from_hidden(hidden, action_steps, keypoints)
            world_loss = self.world_loss(world, world_targets, world_mask)
            loss = world_loss * self.config.world_loss_weight + (loss if loss is not None else 0)
        result = WamActionOutput(
            loss=loss,
            logits=logits,
            world=world,
            cache=out.cache,
            last_hidden_state=hidden,
            attention_mask=out.attention_mask,
            action_loss=action_loss,
            world_loss=world_loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return result if return_dict else result.to_tuple()

    def prepare_inputs_for_generation(
        self, input_ids: Tensor, cache: Cache | None = None, action_dims: Tensor | None = None,
        action_steps: Tensor | None = None, joint_mask: Tensor | None = None, **kwargs: Any,
    ) -> dict[str, Any]:
        """Lets ``model.generate(input_ids=BOS, action_dims=..., action_steps=..., **prefix)`` decode the
        action schedule: the prefix goes in once, then one token per step with its (dimension, step)."""
        if action_dims is None or action_steps is None or joint_mask is None:
            raise InvalidActionError("generate() needs the processor's action_dims, action_steps and prefix inputs")
        past = cache.get_seq_length() if cache is not None else 0
        k = input_ids.shape[1]
        inputs: dict[str, Any] = {"cache": cache, "use_cache": True}
        if past == 0:
            prefix = ("joint_features", "state", "state_mask", "goal", "goal_mask", "pixel_values", "keypoints", "keypoint_mask", "task_ids", "task_mask")
            inputs.update({key: kwargs.get(key) for key in prefix}, joint_mask=joint_mask, input_ids=input_ids)
            inputs.update(action_dims=action_dims[:, :k], action_steps=action_steps[:, :k])
        else:
            prefix_mask = self.model.prefix_mask(
                joint_mask, kwargs.get("goal_mask"), kwargs.get("keypoint_mask"), kwargs.get("task_mask"), kwargs.get("pixel_values")
            )
            rest = torch.ones(joint_mask.shape[0], past + 1 - prefix_mask.shape[1], dtype=torch.bool, device=input_ids.device)
            inputs.update(input_ids=input_ids[:, -1:], attention_mask=torch.cat([prefix_mask, rest], 1))
            inputs.update(action_dims=action_dims[:, k - 1 : k], action_steps=action_steps[:, k - 1 : k])
        return inputs

    @torch.no_grad()
    def sample_action_tokens(
        self,
        action_dims: Tensor,
        action_steps: Tensor,
        num_samples: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        imagine: bool = False,
        cache: Cache | None = None,
        **prefix: Tensor,
    ) -> dict[str, Tensor]:
        """Decode the action-token schedule ``action_dims/steps [B, L]``; returns tokens ``[B*G, L]``.

        With a cache the prefix is encoded once and shared by the ``num_samples`` paths of each
        observation (the cache is repeated, not recomputed). ``imagine=True`` adds the world head's
        prediction (``world_from_hidden``: the keypoint flow ``[B*G, H, max_keypoints + max_arms, 3]``, or the
        v1 end-effector positions ``[B*G, H, 3 * max_arms]``). ``cache``: an empty cache to fill
        instead of a fresh ``DynamicCache`` (e.g. one that appends without re-copying).
        """
        B, L = action_dims.shape
        G = num_samples
        bos = torch.full((B, 1), self.config.bos_token_id, dtype=torch.long, device=action_dims.device)
        dims, steps = action_dims.repeat_interleave(G, 0), action_steps.repeat_interleave(G, 0)
        tokens = bos.repeat_interleave(G, 0)
        hiddens = []
        if use_cache:
            out = self(bos, action_dims[:, :1], action_steps[:, :1], cache=cache, use_cache=True, **prefix)
            cache, mask = out.cache, out.attention_mask
            if G > 1:
                cache.batch_repeat_interleave(G)
                mask = mask.repeat_interleave(G, 0)
                out.logits = out.logits.repeat_interleave(G, 0)
                out.last_hidden_state = out.last_hidden_state.repeat_interleave(G, 0)
        else:
            rep_prefix = {k: v.repeat_interleave(G, 0) if isinstance(v, Tensor) else v for k, v in prefix.items()}
            out = self(tokens, dims[:, :1], steps[:, :1], **rep_prefix)
        for k in range(L):
            logits = out.logits[:, -1].float()
            logits[:, self.config.action_bins :] = float("-inf")  # never emit BOS
            if do_sample:
                probs = torch.softmax(logits / max(temperature, 1e-5), -1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            else:
                nxt = logits.argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, nxt], 1)
            hiddens.append(out.last_hidden_state[:, -1])
            if k == L - 1:
                break
            if use_cache:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
                out = self(nxt, dims[:, k + 1 : k + 2], steps[:, k + 1 : k + 2], cache=cache, use_cache=True, attention_mask=mask)
            else:
                out = self(tokens, dims[:, : k + 2], steps[:, : k + 2], **rep_prefix)
        result = {"tokens": tokens[:, 1:]}
        if imagine:
            keypoints = prefix.get("keypoints")
            keypoints = keypoints.repeat_interleave(G, 0) if keypoints is not None else None
            result["world"] = self.world_from_hidden(torch.stack(hiddens, 1), steps, keypoints)
        return result

    @torch.no_grad()
    def predict_action(
        self,
        action_decoder: Any,
        action_dims: Tensor,
        action_steps: Tensor,
        do_sample: bool = False,
        temperature: float = 1.0,
        use_cache: bool = True,
        imagine: bool = False,
        **inputs: Tensor,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Predict a chunk of native joint commands ``[B, H, dof]`` from ``processor(obs, embodiment)``.

        ``imagine=True`` also returns the world head's prediction (``world_from_hidden``).
        The processor's tensors move to the model's device; the tokens come back to the host, where the
        ``action_decoder`` (IK, limit clamping) runs, so the results are host tensors wherever the model is.
        """
        inputs.pop("input_ids", None)
        for key in ("labels", "world_targets", "world_mask"):
            inputs.pop(key, None)
        inputs = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
        out = self.sample_action_tokens(
            action_dims.to(self.device), action_steps.to(self.device), do_sample=do_sample, temperature=temperature,
            use_cache=use_cache, imagine=imagine, **inputs,
        )
        chunk = action_decoder(out["tokens"].cpu())
        return (chunk, out["world"].cpu()) if imagine else chunk


class ActionQueue:
    """Per-step control on top of chunked prediction: pop one command per control tick, re-plan when empty.

    ``policy(q_current) -> [H, dof]`` is called whenever the queue runs out (or every
    ``replan_every`` steps), so a 50 Hz loop can run a model that predicts 8-step chunks.
    """

    def __init__(self, policy: Any, replan_every: int | None = None) -> None:
        self.policy = policy
        self.replan_every = replan_every
        self._chunk: Tensor | None = None
        self._index = 0

    def reset(self) -> None:
        self._chunk, self._index = None, 0

    def __call__(self, q_current: Tensor) -> Tensor:
        limit = self.replan_every or (self._chunk.shape[0] if self._chunk is not None else 0)
        if self._chunk is None or self._index >= min(limit, self._chunk.shape[0]):
            self._chunk, self._index = self.policy(q_current), 0
        action = self._chunk[self._index]
        self._index += 1
        return action
