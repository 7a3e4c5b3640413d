"""Bundled robots: the folders of ``adapters/`` shipped inside the package (``embodyhub.adapters``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import EmbodimentMismatchError
from .spec import CARD_NAME, Embodiment


def adapters_root() -> Path:
    """The installed ``adapters/`` folder (works from a wheel and from an editable checkout)."""
    return Path(str(resources.files("embodyhub.adapters")))


def list_robots() -> list[str]:
    """Names of the bundled robots, sorted."""
    root = adapters_root()
    return sorted(p.name for p in root.iterdir() if (p / CARD_NAME).is_file())


def robot_dir(name: str) -> Path:
    """Folder of bundled robot ``name``; a clear error listing the choices otherwise."""
    path = adapters_root() / name
    if name in list_robots():
        return path
    raise EmbodimentMismatchError(f"no bundled robot or embodiment folder '{name}'; bundled: {', '.join(list_robots())}")


def load_robot(name: str) -> Embodiment:
    """The ``Embodiment`` of bundled robot ``name``."""
    return Embodiment.from_pretrained(robot_dir(name))
