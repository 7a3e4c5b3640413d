"""Pure robotics: URDF reading, batched differentiable FK/Jacobian, IK, rotation conversions."""

from .chain import KinematicChain
from .ik import IKResult, inverse_kinematics, pose_error
from .urdf import Joint, JointLimit, Link, Mimic, RobotModel

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
