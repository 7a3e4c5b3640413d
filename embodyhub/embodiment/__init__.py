"""Embodiments derived from URDFs, the canonical action space, and conversions between robots.

Names load on first use: listing the bundled robots does not import torch."""

from .._lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CanonicalActionSpace": ".action_space",
        "Slot": ".action_space",
        "KinematicAdapter": ".adapter",
        "list_robots": ".registry",
        "load_robot": ".registry",
        "retarget": ".retarget",
        "ArmSpec": ".spec",
        "Embodiment": ".spec",
        "GripperSpec": ".spec",
    },
)
