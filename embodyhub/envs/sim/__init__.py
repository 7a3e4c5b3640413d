"""Manipulation with contact physics: robosuite (MuJoCo) tasks on several arms, driven through embodyhub.

Needs the ``sim`` extra and robosuite itself (``pip install "embodyhub[sim]" && pip install --no-deps
robosuite==1.5.2``: robosuite's ``mink`` pin would pull numpy below 2).
"""

from ._robosuite import SimulatorError, import_robosuite
from .env import POINTS_PER_OBJECT, TASKS, SimEnv, keypoint_count, run_episode, sim_task
from .experts import Expert, Gains, run_expert_episode
from .policy import BundlePolicy, BundleSimPolicy, ModelPolicy, WamSimPolicy
from .robots import SIM_ROBOTS, sim_embodiment, sim_robot
from .rollout import EVAL_SEED_BASE, collect, evaluate_policy

__all__ = [
    "BundlePolicy",
    "BundleSimPolicy",
    "EVAL_SEED_BASE",
    "Expert",
    "Gains",
    "ModelPolicy",
    "POINTS_PER_OBJECT",
    "SIM_ROBOTS",
    "SimEnv",
    "SimulatorError",
    "TASKS",
    "WamSimPolicy",
    "collect",
    "evaluate_policy",
    "import_robosuite",
    "keypoint_count",
    "run_episode",
    "run_expert_episode",
    "sim_embodiment",
    "sim_robot",
    "sim_task",
]
