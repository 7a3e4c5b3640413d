"""Fused decoding for the GPU runtime: the WAM's decoder layers with the fused kernels plugged in.

``fuse_decoder(model)`` wraps every ``WamDecoderLayer`` so that a one-token decode step reads the KV
cache with the fused decode-attention kernel, and the attention residual add + post-attention RMSNorm
run as one kernel. Together with ``QuantizedLinear`` (fused dequant + GEMV) a decode step launches
few kernels, each reading its weights once. Prefill (several tokens) keeps the layer's own SDPA path.
Kernel selection stays automatic: on CPU the wrapped layers compute with the torch references.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..models.wam.modeling_wam import WamDecoderLayer, apply_rotary_pos_emb
from . import kernels


class FusedDecoderLayer(nn.Module):
    """A ``WamDecoderLayer`` (its weights, unchanged) with fused decode attention and add + RMSNorm."""

    def __init__(self, layer: WamDecoderLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor], attention_mask: Tensor, cache: object = None) -> Tensor:
        layer, attn = self.layer, self.layer.self_attn
        x = layer.input_layernorm(hidden_states)
        B, L, _ = x.shape
        if cache is not None and L == 1:
            shape = (B, 1, attn.num_heads, attn.head_dim)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
            k, v = cache.update(k, v, attn.layer_idx)  # type: ignore[attr-defined]
            out = kernels.decode_attention(q[:, :, 0], k, v, attention_mask[:, 0, -1, :])
            a = attn.o_proj(out.reshape(B, 1, -1))
        else:
            a = attn(x, position_embeddings, attention_mask, cache)
        norm = layer.post_attention_layernorm
        normed, h = kernels.add_rmsnorm(a, hidden_states, norm.weight, norm.eps)
        return h + layer.mlp(normed)


def fuse_decoder(model: nn.Module) -> nn.Module:
    """Wrap the decoder layers of a ``WamForActionPrediction`` (or ``WamModel``) in place; returns the model."""
    trunk = getattr(model, "model", model)
    for i, layer in enumerate(trunk.layers):
        if isinstance(layer, WamDecoderLayer):
            trunk.layers[i] = FusedDecoderLayer(layer)
    return model
