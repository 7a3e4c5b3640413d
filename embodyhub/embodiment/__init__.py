"""Embodiments derived from URDFs, the canonical action space, and conversions between robots."""

from .action_space import CanonicalActionSpace, Slot
from .adapter import KinematicAdapter
from .registry import list_robots, load_robot
from .retarget import retarget
from .spec import ArmSpec, Embodiment, GripperSpec

__all__ = [
    "ArmSpec",
    "CanonicalActionSpace",
    "Embodiment",
    "GripperSpec",
    "KinematicAdapter",
    "Slot",
    "list_robots",
    "load_robot",
    "retarget",
]
