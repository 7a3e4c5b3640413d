"""Scripted experts for the manipulation tasks, acting through embodyhub's own IK.

An expert is a list of phases (hover over an object, descend, close, lift, carry, release), each an
end-effector target in the arm's base frame read from the observed keypoints. Every control step
the commanded pose moves toward the phase target by at most ``max_speed / control_hz`` and adds a
PI term on the measured end-effector position error (contact and payload pull the grip site off
the joint-space target); the canonical command then goes through ``SimEnv.step_canonical``, i.e.
the ``KinematicAdapter``'s IK in joint mode. The gripper yaw is turned onto the nearest face of a
box-shaped object (modulo 90 degrees) from the orientation the arm starts in; with
``Gains.grip_across`` the gripper closes across the reach direction on a round object (the can), so
an outward tilt keeps both fingers level.

PickPlaceCan's bin compartment lies at the edge of the shorter arms' reach, so the can goes to the
point of the compartment nearest the arm's base (inset so the whole can lands inside), and arms
that still fall short pitch the gripper outward from the hover on (``Gains.carry_tilt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from .env import SimEnv, run_episode

Target = Callable[["Expert"], np.ndarray]


@dataclass
class Gains:
    """Per-robot expert gains (the PI term is gain-sensitive across arms)."""

    kp: float = 0.6
    ki: float = 0.05
    max_speed: float = 0.25  # m/s of the commanded pose
    reach_tol: float = 0.008  # m: a moving phase ends when the grip site is this close
    close_steps: int = 12
    release_steps: int = 8
    carry_tilt: float = 0.0  # rad the gripper pitches outward (away from the base) in phases with ``tilt``
    grip_across: bool = False  # close on a round object across the reach direction (both fingers level under the tilt)


# XArm7, Jaco and Kinova3 (Robotiq85) reach 0.70-0.73 m from the base with the gripper pointing down
# (our IK, can task), short of the 0.78 m to the can compartment's nearest inset point; pitched 0.5 rad
# outward they reach 0.80-0.88 m. XArm7 closes across the reach direction on the can: closing along it, the
# tilt put one finger up to 2 cm lower, on the can's rim (21 of 200 collection seeds failed, 0 across). Kinova3
# closing across hit the source bin's wall with a finger (2 of 100 collection seeds failed, 0 before); Jaco
# gained nothing (99 of 100 either way).
ROBOT_GAINS: dict[str, Gains] = {
    "xarm7": Gains(carry_tilt=0.5, grip_across=True),
    "jaco": Gains(carry_tilt=0.5),
    "kinova3": Gains(carry_tilt=0.5),
}
TILT_RATE = 1.0  # rad/s at which the gripper pitch follows its phase's value
_ROUND = ("Can",)  # objects without faces to turn the gripper onto


@dataclass
class Phase:
    name: str
    target: Target  # -> position [3] in the base frame
    opened: float  # 1 open, 0 closed
    steps: int | None = None  # fixed duration; None: until the target is reached
    yaw_of: str | None = None  # object whose yaw the gripper aligns to
    tol: float | None = None  # coarse move: this reach tolerance (m), and done once the arm stalls at its reach
    tilt: bool = False  # pitch the gripper outward by ``Gains.carry_tilt``


def _object(obs_keypoints: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    k = obs_keypoints.reshape(-1, 3)[4 * index: 4 * index + 4]
    axes = k[1:] - k[0]  # one point per object axis, at the object's half extent
    return k[0], (axes / np.linalg.norm(axes, axis=1, keepdims=True)).T  # centre, rotation (columns = object axes)


@dataclass
class Expert:
    """Closed-loop scripted policy for one ``SimEnv`` episode; call ``act()`` once per control step.
    ``gains`` default to the arm's entry in ``ROBOT_GAINS`` (else ``Gains()``)."""

    env: SimEnv
    gains: Gains | None = None

    def __post_init__(self) -> None:
        self.gains = self.gains or ROBOT_GAINS.get(self.env.embodiment.name, Gains())
        self.phases = _PLANS[self.env.task_name](self)
        self.reset()

    def reset(self) -> None:
        """Call after ``env.reset``: reads the start pose and restarts the plan."""
        self.phase = 0
        self.count = 0
        self.R0 = self.env.ee_pose()[:3, :3]
        self.command = self.env.ee_pose()[:3, 3].copy()
        self.integral = np.zeros(3)
        self.yaw = 0.0
        self.tilt = 0.0
        self.start = self.command.copy()  # the command when the current phase began
        self.previous = self.command.copy()
        self.stalled = 0

    # --------------------------------------------------------------- observations
    def object(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Centre and rotation of object ``index`` of the task, from the keypoints."""
        return _object(self.env.keypoints(), index)

    def _grasp_yaw(self, index: int) -> float:
        centre, R = self.object(index)
        if self.env.task.objects[index] in _ROUND and self.gains.grip_across:
            # close across the reach direction: the outward tilt turns about that axis and keeps both fingers level
            closing = self.R0 @ self.env.closing_axis()
            delta = math.atan2(centre[0], -centre[1]) - math.atan2(closing[1], closing[0])
            return (delta + math.pi / 2) % math.pi - math.pi / 2
        ee_x = self.R0[:, 0]
        delta = math.atan2(R[1, 0], R[0, 0]) - math.atan2(ee_x[1], ee_x[0])
        return (delta + math.pi / 4) % (math.pi / 2) - math.pi / 4

    @property
    def done(self) -> bool:
        return self.phase >= len(self.phases)

    # --------------------------------------------------------------- acting
    def act(self) -> np.ndarray:
        """The next canonical command (end-effector pose + gripper); advances the phase machine."""
        env, g = self.env, self.gains
        phase = self.phases[min(self.phase, len(self.phases) - 1)]
        if phase.yaw_of is not None and self.count == 0:
            self.yaw = self._grasp_yaw(self.env.task.objects.index(phase.yaw_of))
        if self.count == 0:
            self.start = self.command.copy()
        target = phase.target(self)
        step = g.max_speed / env.embodiment.control_hz
        delta = target - self.command
        self.command = self.command + delta * min(1.0, step / max(np.linalg.norm(delta), 1e-9))
        actual = env.ee_pose()[:3, 3]
        error = self.command - actual
        self.integral = np.clip(self.integral + error, -0.05 / max(g.ki, 1e-9), 0.05 / max(g.ki, 1e-9))
        position = self.command + g.kp * error + g.ki * self.integral
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        rate = TILT_RATE / env.embodiment.control_hz
        self.tilt += float(np.clip((g.carry_tilt if phase.tilt else 0.0) - self.tilt, -rate, rate))
        T = np.eye(4)
        T[:3, :3] = _outward(self.command, self.tilt) @ Rz @ self.R0
        T[:3, 3] = position
        self.count += 1
        at_target = np.allclose(self.command, target)
        self.stalled = self.stalled + 1 if at_target and np.linalg.norm(actual - self.previous) < 5e-4 else 0
        self.previous = actual
        reached = at_target and (np.linalg.norm(target - actual) < (phase.tol or g.reach_tol)
                                 or (phase.tol is not None and self.stalled >= 10))
        if (phase.steps is not None and self.count >= phase.steps) or (phase.steps is None and reached):
            self.phase, self.count = self.phase + 1, 0
        return env.canonical_command(T, phase.opened).numpy()


def _outward(position: np.ndarray, angle: float) -> np.ndarray:
    """Rotation pitching the gripper's approach axis by ``angle`` away from the base, at ``position``."""
    u = np.array([position[0], position[1], 0.0]) / max(math.hypot(position[0], position[1]), 1e-9)
    return Rotation.from_rotvec(np.cross(u, [0.0, 0.0, 1.0]) * angle).as_matrix()


def _above(index: int, height: float) -> Target:
    return lambda e: e.object(index)[0] + np.array([0.0, 0.0, height])


def _hold(e: Expert) -> np.ndarray:
    return e.command.copy()


def _pick(expert: Expert, obj: int, name: str, grasp_depth: float = 0.0, tol: float | None = None,
          tilt: bool = False) -> list[Phase]:
    g = expert.gains
    return [
        Phase("hover", _above(obj, 0.10), 1.0, yaw_of=name, tol=tol, tilt=tilt),
        Phase("descend", _above(obj, grasp_depth), 1.0, tol=tol, tilt=tilt),
        Phase("close", _hold, 0.0, steps=g.close_steps, tilt=tilt),
    ]


def _lift_plan(e: Expert) -> list[Phase]:
    return _pick(e, 0, "cube") + [
        Phase("lift", lambda ex: ex.start + np.array([0.0, 0.0, 0.15]), 0.0),
        Phase("hold", _hold, 0.0, steps=10),
    ]


def _stack_plan(e: Expert) -> list[Phase]:
    # cubeA (the red cube, object 0) goes onto cubeB (object 1); their centres sit 4-5 cm apart when stacked.
    return _pick(e, 0, "cubeA") + [
        Phase("lift", _above(1, 0.12), 0.0),
        Phase("place", _above(1, 0.05), 0.0),
        Phase("release", _hold, 1.0, steps=e.gains.release_steps),
        Phase("retreat", _above(1, 0.15), 1.0),
    ]


# PickPlaceCan (robosuite 1.5.2): a compartment's inside is 0.19 x 0.24 m (x, y); the can's radius is 3.5 cm.
_COMPARTMENT_HALF = np.array([0.095, 0.12])
_CAN_MARGIN = 0.05  # the can's radius + 1.5 cm for where it sits in the gripper


def _in_bin(height: float) -> Target:
    """``height`` above the point of the can's compartment nearest the arm's base (inset by ``_CAN_MARGIN``)."""
    def target(e: Expert) -> np.ndarray:
        centre, R = e.object(1)
        local = np.clip(R.T @ -centre, [*-(_COMPARTMENT_HALF - _CAN_MARGIN), -np.inf], [*(_COMPARTMENT_HALF - _CAN_MARGIN), np.inf])
        return centre + R @ (local * np.array([1.0, 1.0, 0.0])) + np.array([0.0, 0.0, height])
    return target


def _back_up(e: Expert) -> np.ndarray:
    """10 cm up and 10 cm toward the base from where the phase began (reachable wherever the release was)."""
    u = np.array([e.start[0], e.start[1], 0.0]) / max(math.hypot(e.start[0], e.start[1]), 1e-9)
    return e.start + np.array([0.0, 0.0, 0.10]) - 0.10 * u


def _can_plan(e: Expert) -> list[Phase]:
    # the can may stand 0.72 m from the base, where Jaco stalls 1-1.5 cm short: coarse hover, descent and
    # lift (the Robotiq's 85 mm opening still closes around the 70 mm can)
    return _pick(e, 0, "Can", grasp_depth=0.01, tol=0.02, tilt=True) + [
        Phase("lift", lambda ex: ex.object(0)[0] * np.array([1, 1, 0]) + np.array([0, 0, ex.object(1)[0][2] + 0.25]), 0.0,
              tol=0.04, tilt=True),
        Phase("carry", _in_bin(0.22), 0.0, tol=0.04, tilt=True),
        Phase("lower", _in_bin(0.12), 0.0, tol=0.04, tilt=True),
        Phase("release", _hold, 1.0, steps=e.gains.release_steps, tilt=True),
        Phase("retreat", _back_up, 1.0, tilt=True),
    ]


_PLANS: dict[str, Callable[[Expert], list[Phase]]] = {"lift": _lift_plan, "stack": _stack_plan, "can": _can_plan}


def run_expert_episode(env: SimEnv, seed: int, gains: Gains | None = None) -> dict[str, object]:
    """One expert episode: per step observation, native action; success and step count."""

    def controller(env: SimEnv) -> Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], np.ndarray]]:
        expert = Expert(env, gains)  # after the reset: it reads the scene
        return lambda obs: env.step_canonical(expert.act())

    return run_episode(env, seed, controller)
