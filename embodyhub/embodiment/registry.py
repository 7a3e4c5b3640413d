"""Bundled robots: the folders of ``adapters/`` shipped inside the package (``embodyhub.adapters``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EmbodimentMismatchError

if TYPE_CHECKING:
    from .spec import Embodiment

# Here rather than in spec.py so that listing robots reads their cards without importing torch.
CARD_NAME = "embodiment.json"
URDF_NAME = "robot.urdf"


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


def robot_card(name: str) -> dict[str, Any]:
    """The embodiment card (``embodiment.json``) of bundled robot ``name``, read without building the robot."""
    return json.loads((robot_dir(name) / CARD_NAME).read_text())


def load_robot(name: str) -> Embodiment:
    """The ``Embodiment`` of bundled robot ``name``."""
    from .spec import Embodiment

    return Embodiment.from_pretrained(robot_dir(name))
