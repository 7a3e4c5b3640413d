"""What a model needs from a dataset, checked from ``meta/info.json`` alone (standard library, no torch),
so a dataset that lacks a feature fails in a fraction of a second, before any model loads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import DatasetError

# the shipped base reads joint state and a goal pose and learns the recorded actions
DEMO_FEATURES = ("observation.state", "observation.goal", "action")
# a v2 model (keypoints and/or task words) takes the goal, keypoints, task and images as optional inputs
V2_FEATURES = ("observation.state", "action")


def needed_features(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The features a model with this ``config.json`` content cannot train without."""
    return V2_FEATURES if config.get("max_keypoints") or config.get("task_vocab_size") else DEMO_FEATURES


def check_features(root: str | os.PathLike, needed: Sequence[str] = DEMO_FEATURES) -> dict:
    """The dataset's ``features`` table; ``DatasetError`` naming every feature in ``needed`` it lacks."""
    info_path = Path(root) / "meta" / "info.json"
    try:
        features = json.loads(info_path.read_text())["features"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{root} is not a LeRobot v3 dataset: no readable meta/info.json with 'features' ({type(exc).__name__})") from None
    missing = [name for name in needed if name not in features]
    if missing:
        raise DatasetError(
            f"{root} lacks {', '.join(repr(m) for m in missing)}, which the model needs "
            f"(it has: {', '.join(sorted(features))})"
        )
    return features
