"""Embodiment checks on load: a checkpoint or an adapter against the robot it is about to drive.

A checkpoint saves one embodiment card per training robot (``embodiments/<name>/embodiment.json``, written
by the processor beside the weights); an adapter folder saves its robot's card and URDF plus
``wam_base.json``, the shape of the base it was trained on. Files are found through
``transformers.utils.cached_file``, so the same checks run on a local folder, a Hub id or the offline cache.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from transformers.utils import cached_file

from ..embodiment import CanonicalActionSpace, Embodiment
from ..embodiment.spec import CARD_NAME, URDF_NAME
from ..errors import EmbodimentMismatchError

EMBODIMENTS_DIR = "embodiments"  # processing_wam.EMBODIMENTS_DIR (not imported: this module loads before it)
BASE_FILE = "wam_base.json"  # written beside an adapter by training.lora.save_adapter
BASE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size", "action_dim", "chunk_length")
CHECKED_KEYS = ("urdf_sha256", "dof", "joint_names", "action_representation")
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def base_signature(model: Any) -> dict[str, Any]:
    """What an adapter must agree on with its base (a WAM or a peft wrapper of one)."""
    return {key: getattr(model.config, key) for key in BASE_KEYS}


class EmbodimentAdaptedWarning(UserWarning):
    """The robot differs from the checkpoint's card, and the canonical action space bridges the difference."""


def _optional_file(path_or_repo: str | os.PathLike, filename: str, hub: dict[str, Any]) -> str | None:
    try:
        return cached_file(path_or_repo, filename, _raise_exceptions_for_missing_entries=False, **hub)
    except OSError as exc:  # neither a local folder nor a Hub repo id that resolves
        raise EmbodimentMismatchError(f"{path_or_repo}: not a local folder or a reachable Hub repository ({exc})") from exc


def card_diff(card: dict[str, Any], embodiment: Embodiment) -> list[str]:
    """Readable differences between a saved card and ``embodiment`` on the keys a load must agree on."""
    mine = embodiment.to_card()
    return [f"{key}: checkpoint {card.get(key)!r}, your robot {mine[key]!r}" for key in CHECKED_KEYS if key in card and card[key] != mine[key]]


def check_embodiment(
    config: Any, card: dict[str, Any] | None, embodiment: Embodiment, *, strict: bool = False, source: str = "checkpoint"
) -> str | None:
    """Compare ``embodiment`` with the card the checkpoint saved for the robot of that name.

    Returns ``None`` on an exact match. When they differ (or the checkpoint never saw this robot) and
    ``strict`` is false, the load goes on if the canonical action space can carry this robot through
    the same slots with the same action representation; the returned message (also issued as an
    ``EmbodimentAdaptedWarning``) says which. Otherwise raises ``EmbodimentMismatchError`` with the diff.
    """
    trained = dict(getattr(config, "embodiments", None) or {})
    if card is None and embodiment.name in trained:  # only the URDF hash was recorded (config.embodiments)
        card = {"name": embodiment.name, "urdf_sha256": trained[embodiment.name]}
    space = CanonicalActionSpace(max_arms=getattr(config, "max_arms", 2))
    if card is None:
        head = f"{source} was not trained on '{embodiment.name}' (it knows {sorted(trained) or 'no robot by name'})"
        diffs: list[str] = []
    else:
        diffs = card_diff(card, embodiment)
        if not diffs:
            return None
        head = f"embodiment '{embodiment.name}' differs from the {source}'s card:\n  " + "\n  ".join(diffs)
    problems = []
    try:
        slots = space.filled_slots(embodiment)
    except EmbodimentMismatchError as exc:
        slots, problems = [], [str(exc)]
    if getattr(config, "action_dim", space.dim) != space.dim:
        problems.append(f"the model's action_dim {config.action_dim} is not the canonical width {space.dim}")
    if card is not None and "canonical" in card and card["canonical"].get("filled_slots") != slots:
        problems.append(f"canonical slots differ: checkpoint {card['canonical'].get('filled_slots')}, your robot {slots}")
    if card is not None and "action_representation" in card and card["action_representation"] != embodiment.action_representation:
        problems.append("the action representation differs, and actions are decoded in the checkpoint's representation")
    if strict or problems:
        reason = "strict embodiment check" if strict and not problems else "cannot adapt: " + "; ".join(problems)
        raise EmbodimentMismatchError(f"{head}\n{reason}")
    message = (
        f"{head}\nadapting through the canonical action space: your robot fills {slots} with "
        f"{embodiment.action_representation} actions{', as the card does' if card and 'canonical' in card else ''}; "
        "joint slots are normalized by your URDF's limits and "
        "end-effector slots come from its forward kinematics (pass strict_embodiment=True to refuse instead)"
    )
    warnings.warn(message, EmbodimentAdaptedWarning, stacklevel=3)
    return message


def check_checkpoint(
    model_config: Any, name_or_path: str | os.PathLike, embodiment: Embodiment, *, strict: bool = False, hub_kwargs: dict[str, Any] | None = None
) -> str | None:
    """``check_embodiment`` against the card stored at ``embodiments/<name>/embodiment.json`` of a checkpoint;
    ``hub_kwargs``: the loader's keyword arguments (its Hub ones are used: revision, token, cache_dir, ...)."""
    hub = {k: v for k, v in (hub_kwargs or {}).items() if k in HUB_KWARGS and v is not None}
    found = _optional_file(name_or_path, f"{EMBODIMENTS_DIR}/{embodiment.name}/{CARD_NAME}", hub)
    card = json.loads(Path(found).read_text()) if found else None
    return check_embodiment(model_config, card, embodiment, strict=strict, source=f"checkpoint {name_or_path}")


def check_adapter(
    model: Any, adapter: str | os.PathLike, embodiment: Embodiment | None = None, hub_kwargs: dict[str, Any] | None = None
) -> Embodiment:
    """Refuse an adapter made for another base shape or, given ``embodiment``, another robot; returns the
    adapter's robot. Reads ``wam_base.json``, ``embodiment.json`` and ``robot.urdf`` (local folder or Hub)."""
    saved, robot = read_adapter(adapter, hub_kwargs)
    mine = base_signature(model)
    diffs = [f"{k}: adapter {saved.get(k)!r}, base {v!r}" for k, v in mine.items() if saved.get(k) != v]
    if diffs:
        raise EmbodimentMismatchError(f"adapter {adapter} was trained on another base:\n  " + "\n  ".join(diffs))
    if embodiment is not None:
        embodiment.check_compatible(robot.to_card())
    return robot


def read_adapter(adapter: str | os.PathLike, hub_kwargs: dict[str, Any] | None = None) -> tuple[dict[str, Any], Embodiment]:
    """An adapter's saved base signature (``wam_base.json``) and its robot (card + URDF, hash-checked)."""
    hub_kwargs = dict(hub_kwargs or {})
    hub_kwargs.update(hub_kwargs.pop("adapter_kwargs", None) or {})  # transformers' load_adapter nests revision/token here
    hub = {k: v for k, v in hub_kwargs.items() if k in HUB_KWARGS and v is not None}
    found = _optional_file(adapter, BASE_FILE, hub)
    if found is None:
        raise EmbodimentMismatchError(f"{adapter} has no {BASE_FILE}: not an embodyhub adapter, its base cannot be checked")
    card_path, urdf_path = _optional_file(adapter, CARD_NAME, hub), _optional_file(adapter, URDF_NAME, hub)
    if card_path is None or urdf_path is None:
        raise EmbodimentMismatchError(f"adapter {adapter} lacks its {CARD_NAME} or {URDF_NAME}")
    return json.loads(Path(found).read_text()), Embodiment.from_card(json.loads(Path(card_path).read_text()), Path(urdf_path).read_text())
