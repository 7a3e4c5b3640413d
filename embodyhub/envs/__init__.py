"""Kinematic task environments (reach, trace) scored by forward kinematics, and scripted experts."""

from .expert import ExpertPlan, min_jerk, plan_reach, plan_trace
from .reach import Policy, ReachEnv, TraceEnv, goal_poses, goal_vector

__all__ = [
    "ExpertPlan",
    "Policy",
    "ReachEnv",
    "TraceEnv",
    "goal_poses",
    "goal_vector",
    "min_jerk",
    "plan_reach",
    "plan_trace",
]
