"""embodyhub: cross-embodiment World-Action Models on the Hugging Face stack, driven by your robot's URDF."""

from .errors import (
    EmbodimentMismatchError,
    EmbodyHubError,
    InvalidActionError,
    KinematicsError,
    URDFError,
)
from .kinematics import KinematicChain, RobotModel
from .models.wam import WamConfig, WamForActionPrediction, WamModel, WamProcessor

__version__ = "0.1.0"

__all__ = [
    "EmbodimentMismatchError",
    "EmbodyHubError",
    "InvalidActionError",
    "KinematicChain",
    "KinematicsError",
    "RobotModel",
    "URDFError",
    "WamConfig",
    "WamForActionPrediction",
    "WamModel",
    "WamProcessor",
    "__version__",
]
