"""What a model needs from a dataset, checked from ``meta/info.json`` alone (standard library, no torch),
so a dataset that lacks a feature fails in a fraction of a second, before any model loads."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import DatasetError

# the shipped base reads joint state and a goal pose and learns the recorded actions
DEMO_FEATURES = ("observation.state", "observation.goal", "action")
# a v2 model (keypoints and/or task words) takes the goal, keypoints and task as optional inputs
V2_FEATURES = ("observation.state", "action")
CAMERA = "observation.images.*"  # a model with image input (config image_size > 0) reads the first camera


def is_v2(config: Mapping[str, Any]) -> bool:
    """Whether a model with this ``config.json`` content is a v2 one (object keypoints and/or task words in, like the
    simulator base) rather than a goal-reaching one."""
    return bool(config.get("max_keypoints") or config.get("task_vocab_size"))


def needed_features(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The features a model with this ``config.json`` content cannot train without (``CAMERA``: any camera)."""
    needed = V2_FEATURES if is_v2(config) else DEMO_FEATURES
    return needed + (CAMERA,) if config.get("image_size") else needed


def camera_feature(features: Mapping[str, Mapping[str, Any]], image_size: int, root: str | os.PathLike) -> str:
    """The camera a model with ``image_size`` input reads: the dataset's first ``observation.images.*`` feature
    (as the simulator policy does), whose frames must be ``image_size`` pixels square."""
    cameras = [name for name in features if fnmatch.fnmatchcase(name, CAMERA)]
    if not cameras:
        raise DatasetError(f"{root} lacks a camera {CAMERA!r}, which the model needs ({image_size}x{image_size} frames)")
    shape = list(features[cameras[0]]["shape"])
    if [image_size, image_size] not in (shape[:2], shape[1:]):  # [H, W, C] or [C, H, W]
        raise DatasetError(f"{root} '{cameras[0]}' holds frames of shape {shape}; the model reads {image_size}x{image_size}")
    return cameras[0]


def check_features(root: str | os.PathLike, needed: Sequence[str] = DEMO_FEATURES) -> dict:
    """The dataset's ``features`` table; ``DatasetError`` naming every feature in ``needed`` (names, or patterns
    such as ``CAMERA``) it lacks."""
    info_path = Path(root) / "meta" / "info.json"
    try:
        features = json.loads(info_path.read_text())["features"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{root} is not a LeRobot v3 dataset: no readable meta/info.json with 'features' ({type(exc).__name__})") from None
    missing = [name for name in needed if not any(fnmatch.fnmatchcase(f, name) for f in features)]
    if missing:
        raise DatasetError(
            f"{root} lacks {', '.join(repr(m) for m in missing)}, which the model needs "
            f"(it has: {', '.join(sorted(features))})"
        )
    return features
