"""Discrete action tokens: uniform bins per canonical action dimension.

Every canonical dimension has a fixed range shared by all robots (metres for end-effector
positions, unit interval for 6D rotation entries, gripper and limit-normalized joints), so a
token means the same physical quantity on every embodiment. Saved with the processor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...embodiment.action_space import CanonicalActionSpace

# Canonical ranges per slot kind; end-effector positions cover arms reaching up to 1.5 m.
SLOT_RANGES = {"ee_pos": (-1.5, 1.5), "ee_rot6d": (-1.0, 1.0), "gripper": (0.0, 1.0), "joints": (-1.0, 1.0), "vel": (-1.0, 1.0)}


def canonical_ranges(
    space: CanonicalActionSpace | None = None,
    relative_position_range: float | None = None,
    relative_rotation_range: float | None = None,
) -> tuple[list[float], list[float]]:
    """Per-dimension (low, high) of the canonical action space. With ``relative_position_range``
    end-effector positions are offsets from the current position within ±that many metres; with
    ``relative_rotation_range`` the 6D rotation entries are offsets from the current ones."""
    space = space or CanonicalActionSpace()
    low, high = [0.0] * space.dim, [0.0] * space.dim
    for name, slot in space.slots.items():
        kind = name.split(".")[1]
        lo, hi = SLOT_RANGES[kind]
        relative = {"ee_pos": relative_position_range, "ee_rot6d": relative_rotation_range}.get(kind)
        if relative is not None:
            lo, hi = -relative, relative
        for d in range(slot.start, slot.start + slot.size):
            low[d], high[d] = lo, hi
    return low, high


class BinningActionTokenizer:
    """Uniform binning of each canonical dimension into ``n_bins`` tokens (values outside are clipped)."""

    def __init__(self, n_bins: int = 256, low: list[float] | None = None, high: list[float] | None = None) -> None:
        if low is None or high is None:
            low, high = canonical_ranges()
        if len(low) != len(high) or any(h <= lo for lo, h in zip(low, high)):
            raise ValueError("action ranges must have equal length and high > low in every dimension")
        self.n_bins = n_bins
        self.low = torch.tensor(low, dtype=torch.float64)
        self.high = torch.tensor(high, dtype=torch.float64)

    def encode(self, x: Tensor, dims: Tensor) -> Tensor:
        """Values ``x`` of canonical dimensions ``dims`` (same shape) -> token ids."""
        lo, hi = self.low.to(x.device)[dims], self.high.to(x.device)[dims]
        u = ((x.to(torch.float64) - lo) / (hi - lo)).clamp(0, 1)
        return (u * self.n_bins).long().clamp_max(self.n_bins - 1)

    def decode(self, tokens: Tensor, dims: Tensor) -> Tensor:
        """Token ids of dimensions ``dims`` -> bin-centre values (float64)."""
        lo, hi = self.low.to(tokens.device)[dims], self.high.to(tokens.device)[dims]
        return lo + (tokens.to(torch.float64) + 0.5) / self.n_bins * (hi - lo)

    def to_dict(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "low": self.low.tolist(), "high": self.high.tolist()}

    def resolution(self) -> Tensor:
        """Bin width per dimension (the worst-case quantization error is half of it)."""
        return (self.high - self.low) / self.n_bins
