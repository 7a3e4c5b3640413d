"""YAML recipes the ``embodyhub`` CLI runs, installed as ``embodyhub.recipes``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def recipe_path(path: str) -> str:
    """A recipe file, or the name of a bundled one (``pretrain_tiny``)."""
    if Path(path).is_file():
        return path
    bundled = Path(str(resources.files(__name__))) / f"{Path(path).stem}.yaml"
    if bundled.is_file():
        return str(bundled)
    raise FileNotFoundError(f"no recipe file '{path}' and no bundled recipe named '{Path(path).stem}'")


class Recipe:
    """Base of the recipe dataclasses: read from YAML, where an unknown key is an error (a typo must not pass silently)."""

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Any:
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(data) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        if unknown:
            raise ValueError(f"unknown recipe keys in {path}: {sorted(unknown)}")
        return cls(**data)
