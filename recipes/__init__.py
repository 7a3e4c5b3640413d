"""YAML recipes the ``embodyhub`` CLI runs, installed as ``embodyhub.recipes``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from embodyhub.errors import RecipeError


def recipe_path(path: str) -> str:
    """A recipe file, or the name of a bundled one (``pretrain_tiny``)."""
    if Path(path).is_file():
        return path
    bundled = Path(str(resources.files(__name__))) / f"{Path(path).stem}.yaml"
    if bundled.is_file():
        return str(bundled)
    bundled_names = sorted(p.stem for p in bundled.parent.glob("*.yaml"))
    raise RecipeError(f"no recipe file '{path}' and no bundled recipe named '{Path(path).stem}' (bundled: {', '.join(bundled_names)})")


class Recipe:
    """Base of the recipe dataclasses: read from YAML, where an unknown key is an error (a typo must not pass silently)."""

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Any:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise RecipeError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise RecipeError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(data) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        if unknown:
            raise RecipeError(f"unknown recipe keys in {path}: {sorted(unknown)}")
        return cls(**data)
