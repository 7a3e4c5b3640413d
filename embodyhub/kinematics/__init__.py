"""Pure robotics: URDF reading, batched differentiable FK/Jacobian, IK, rotation conversions.

The URDF reader needs only the standard library; the torch-based names load on first use."""

from .._lazy import lazy_exports

__all__ = [
    "IKResult",
    "Joint",
    "JointLimit",
    "KinematicChain",
    "Link",
    "Mimic",
    "RobotModel",
    "inverse_kinematics",
    "pose_error",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "KinematicChain": ".chain",
        "IKResult": ".ik",
        "inverse_kinematics": ".ik",
        "pose_error": ".ik",
        **{name: ".urdf" for name in ("Joint", "JointLimit", "Link", "Mimic", "RobotModel")},
    },
)
