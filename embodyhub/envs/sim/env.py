"""Manipulation with contact physics: robosuite tasks on MuJoCo, commanded through embodyhub's adapter.

``SimEnv`` wraps one robosuite environment (Lift, Stack, PickPlaceCan) on one arm. In ``"joint"``
mode (the default, and the point of the library) a command is the embodiment's native joint
vector, and robosuite's JOINT_POSITION controller (absolute input) tracks it; canonical commands
(end-effector pose + gripper in the arm's base frame) go through the ``KinematicAdapter``'s IK
first. ``"osc"`` mode is the comparison: the same canonical command becomes robosuite's own
OSC_POSE delta action (1.0 = 5 cm, 1.0 = 0.5 rad, base frame).

Observations are LeRobot-shaped: ``observation.state`` is the native joint vector (arm joints +
gripper joint), ``observation.environment_state`` the task's object keypoints (per object its
centre and one point on each of its axes at its half extent) in the arm's base frame, and optionally
``observation.images.<camera>``. Episode ``seed`` fixes the object placement (and, with a
``start_spread``, the arm's start pose); the objects' sizes, which robosuite draws once when it builds the
scene (Lift's cube: 2.0-2.2 cm half extent), come from a fixed construction seed, the same in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch

from ...embodiment import CanonicalActionSpace, Embodiment, KinematicAdapter
from ...errors import EmbodimentMismatchError
from ...kinematics.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix
from ._robosuite import SimulatorError, import_robosuite
from .robots import BASE_BODY, CONTROL_HZ, EE_SITE, sim_embodiment, sim_robot

Control = Literal["joint", "osc"]
TARGET_EXTENT = 0.05  # metres from a placement target's centre (a place, not a body) to each of its axis points
OSC_POS_SCALE, OSC_ROT_SCALE = 0.05, 0.5  # robosuite OSC_POSE: action 1.0 = 5 cm, 1.0 = 0.5 rad
POINTS_PER_OBJECT = 4  # keypoints per object: its centre, then one point on each of its axes
# a start_spread s moves the start grip site by up to +-s in x and y and from -s/2 to +2s in z: arms' home poses
# differ most in height (the grip site 0.07-0.32 m above the base across the six arms)
START_BOX = np.array([[-1.0, -1.0, -0.5], [1.0, 1.0, 2.0]])


@dataclass(frozen=True)
class Task:
    """A benchmark task: robosuite environment, task string, objects whose keypoints are observed."""

    robosuite_env: str
    description: str
    objects: tuple[str, ...]  # keypoint sources, in order
    horizon: int  # control steps before an episode fails


TASKS: dict[str, Task] = {
    "lift": Task("Lift", "lift the cube", ("cube",), 150),
    "stack": Task("Stack", "stack the red cube on the green cube", ("cubeA", "cubeB"), 250),
    "can": Task("PickPlaceCan", "pick up the can and place it in the bin", ("Can", "target"), 300),
}


def sim_task(name: str) -> Task:
    """Task ``name``; a clear error listing the valid ones otherwise."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise EmbodimentMismatchError(f"unknown env '{name}'; choose one of: {', '.join(TASKS)}") from None


def keypoint_count(task: str) -> int:
    """Number of 3D keypoints task ``task`` observes (``POINTS_PER_OBJECT`` per object)."""
    return POINTS_PER_OBJECT * len(sim_task(task).objects)


def _controller_config(robosuite_name: str, control: Control) -> dict[str, Any]:
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller="BASIC", robot=robosuite_name)
    arm = config["body_parts"]["right"]
    if control == "joint":
        gripper = arm["gripper"]
        arm.clear()
        arm.update(type="JOINT_POSITION", input_type="absolute", input_max=10.0, input_min=-10.0,
                   output_max=10.0, output_min=-10.0, kp=150, damping_ratio=1, impedance_mode="fixed",
                   kp_limits=[0, 300], damping_ratio_limits=[0, 10], qpos_limits=None, interpolation=None,
                   ramp_ratio=0.2, gripper=gripper)
    elif control != "osc":
        raise SimulatorError(f"control must be 'joint' or 'osc', got {control!r}")
    return config


class SimEnv:
    """One robosuite task on one arm, stepped with native joint targets or canonical commands."""

    def __init__(
        self,
        task: str,
        robot: str,
        gripper: str | None = None,
        control: Control = "joint",
        camera: str | None = None,
        image_size: int = 84,
        visual_meshes: bool = False,
        horizon: int | None = None,
        start_spread: float = 0.0,
    ) -> None:
        self.task_name = task.lower()
        self.task = sim_task(task)
        spec = sim_robot(robot)
        self.embodiment: Embodiment = sim_embodiment(robot, gripper)
        self.adapter = KinematicAdapter(self.embodiment)
        self.space: CanonicalActionSpace = self.adapter.space
        self.control = control
        self.camera = camera
        self.horizon = horizon or self.task.horizon
        if start_spread < 0:
            raise SimulatorError(f"start_spread must be >= 0 metres, got {start_spread}")
        self.start_spread = start_spread
        robosuite = import_robosuite()
        kwargs: dict[str, Any] = {}
        if camera is not None:
            # collision geoms only (robosuite's group 0) by default: far cheaper to render on CPU than the meshes
            kwargs.update(has_offscreen_renderer=True, use_camera_obs=True, camera_names=camera,
                          camera_heights=image_size, camera_widths=image_size,
                          render_collision_mesh=not visual_meshes, render_visual_mesh=visual_meshes)
        else:
            kwargs.update(has_offscreen_renderer=False, use_camera_obs=False)
        try:
            self.env = robosuite.make(
                self.task.robosuite_env, robots=spec.robosuite_name, gripper_types=gripper or spec.gripper,
                controller_configs=_controller_config(spec.robosuite_name, control), has_renderer=False,
                control_freq=int(CONTROL_HZ), horizon=10**6, hard_reset=False, ignore_done=True,
                reward_shaping=False, seed=0, **kwargs,
            )
        except RuntimeError as exc:  # no GL backend for the offscreen renderer
            raise SimulatorError(f"cannot render camera '{camera}' headless ({exc}); set MUJOCO_GL=egl or osmesa, or drop --camera") from None
        except ValueError:  # robosuite's camera observable names a camera the scene lacks
            if camera is None:
                raise
            raise SimulatorError(f"no camera '{camera}' in {self.task.robosuite_env}; robosuite's cameras include "
                                 "agentview, frontview, birdview, robot0_robotview and robot0_eye_in_hand") from None
        self.sim = self.env.sim
        self._robot = self.env.robots[0]
        model = self.sim.model
        self._base = model.body_name2id(BASE_BODY)
        self._site = model.site_name2id(EE_SITE)
        chain = self.embodiment.chains[0]
        self._qpos = [model.get_joint_qpos_addr(j) for j in chain.joint_names]
        self._gripper_qpos = model.get_joint_qpos_addr(self.embodiment.grippers[0].joint)
        self._ee_slots = [self.space[s] for s in ("arm0.ee_pos", "arm0.ee_rot6d", "arm0.gripper")]
        self.ee_mask = torch.zeros(self.space.dim, dtype=torch.bool)
        for s in self._ee_slots:
            self.ee_mask[s] = True
        self.steps = 0
        self._obs: dict[str, Any] = {}

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Start an episode whose object placement is fixed by ``seed``; returns the observation. With a
        ``start_spread`` the arm then starts from its home grip-site pose moved by a seeded offset in
        ``START_BOX * start_spread`` (same orientation, IK from home): demonstrations that start from varied
        poses, for a policy that must start from another arm's home."""
        self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._obs = self.env.reset()
        self.steps = 0
        if self.start_spread > 0:
            offset = np.random.default_rng([seed, 1]).uniform(*START_BOX * self.start_spread)
            T = self.ee_pose()
            T[:3, 3] += offset
            q = self.to_native(self.canonical_command(T, self._opened(self.joint_state())))
            for addr, value in zip(self._qpos, q[:-1]):
                self.sim.data.qpos[addr] = value
            for joint in self.embodiment.chains[0].joint_names:
                self.sim.data.qvel[self.sim.model.get_joint_qvel_addr(joint)] = 0.0
            self.sim.forward()
            self._obs = self.env._get_observations(force_update=True)
        return self.observation()

    def _base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        data = self.sim.data
        return data.body_xmat[self._base].reshape(3, 3).copy(), data.body_xpos[self._base].copy()

    def keypoints(self) -> np.ndarray:
        """Object keypoints ``[K, 3]`` (float64) in the arm's base frame: per object its centre, then one point
        on each of its axes at the object's half extent (robosuite's bounding box), so the points carry the
        object's size: Stack's red cube (2 cm) and green cube (2.5 cm) differ by more than their height."""
        R_b, p_b = self._base_pose()
        points = []
        for name in self.task.objects:
            centre, R, half = self._object_pose(name)
            points.append(centre)
            points.extend(centre + half[k] * R[:, k] for k in range(3))
        return (np.stack(points) - p_b) @ R_b

    def _object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World centre, rotation and half extents of a task object."""
        data, model = self.sim.data, self.sim.model
        if name == "target":  # PickPlaceCan: centre of the can's bin compartment, world-aligned
            return np.array(self.env.target_bin_placements[self.env.object_id], dtype=np.float64), np.eye(3), np.full(3, TARGET_EXTENT)
        obj = next(o for o in self.env.model.mujoco_objects if o.name == name)
        body = model.body_name2id(obj.root_body)
        half = np.asarray(obj.get_bounding_box_half_size(), dtype=np.float64)
        return data.body_xpos[body].copy(), data.body_xmat[body].reshape(3, 3).copy(), half

    def joint_state(self) -> np.ndarray:
        """Native joint vector (arm joints, then the gripper joint), float64."""
        qpos = self.sim.data.qpos
        return np.array([qpos[a] for a in self._qpos] + [qpos[self._gripper_qpos]], dtype=np.float64)

    def ee_pose(self) -> np.ndarray:
        """End-effector (grip site) pose ``[4, 4]`` in the arm's base frame, from MuJoCo."""
        R_b, p_b = self._base_pose()
        data = self.sim.data
        T = np.eye(4)
        T[:3, :3] = R_b.T @ data.site_xmat[self._site].reshape(3, 3)
        T[:3, 3] = R_b.T @ (data.site_xpos[self._site] - p_b)
        return T

    def closing_axis(self) -> np.ndarray:
        """Unit vector, in the grip site's frame, along which the fingers close: the gripper joint's axis for a
        slide joint, across its hinge axis and the approach (the site's z) for a hinge."""
        import mujoco

        model, data = self.sim.model, self.sim.data
        joint = model.joint_name2id(self.embodiment.grippers[0].joint)
        axis = data.site_xmat[self._site].reshape(3, 3).T @ data.xaxis[joint]
        if model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_HINGE:
            axis = np.cross(axis, [0.0, 0.0, 1.0])
        return axis / np.linalg.norm(axis)

    def observation(self) -> dict[str, np.ndarray]:
        """LeRobot-named observation of the current state (float32 vectors, uint8 HWC image)."""
        obs = {
            "observation.state": self.joint_state().astype(np.float32),
            "observation.environment_state": self.keypoints().reshape(-1).astype(np.float32),
        }
        if self.camera is not None:
            obs[f"observation.images.{self.camera}"] = np.ascontiguousarray(self._obs[f"{self.camera}_image"])
        return obs

    def success(self) -> bool:
        """robosuite's own success check for the task."""
        return bool(self.env._check_success())

    # ------------------------------------------------------------------ commands
    def _gripper_action(self, opened: float) -> float:
        """Opened fraction (1 open, 0 closed) -> robosuite's gripper action (-1 open, +1 closed)."""
        return float(np.clip(1.0 - 2.0 * opened, -1.0, 1.0))

    def _opened(self, q: np.ndarray) -> float:
        k = self.embodiment.grippers[0]
        lo, hi = float(self.embodiment.lower[-1]), float(self.embodiment.upper[-1])
        frac = (q[-1] - lo) / (hi - lo)
        return float(frac if k.open == "upper" else 1.0 - frac)

    def step(self, q_target: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Command native joint targets (joint mode), clamped to the embodiment's limits; one control step."""
        if self.control != "joint":
            raise SimulatorError("native joint targets need control='joint'; use step_canonical in osc mode")
        q = self.embodiment.clamp(self.embodiment.check_q(torch.as_tensor(q_target, dtype=torch.float64), "q_target"))
        q = q.numpy()
        action = np.concatenate([q[:-1], [self._gripper_action(self._opened(q))]])
        return self._advance(action)

    def canonical_command(self, T: np.ndarray, opened: float) -> torch.Tensor:
        """A canonical vector with the end-effector slots set to pose ``T`` (base frame) and gripper ``opened``."""
        x = torch.zeros(self.space.dim, dtype=torch.float64)
        Tt = torch.as_tensor(T, dtype=torch.float64)
        x[self._ee_slots[0]] = Tt[:3, 3]
        x[self._ee_slots[1]] = matrix_to_rotation_6d(Tt[:3, :3])
        x[self._ee_slots[2]] = float(opened)
        return x

    def to_native(self, x: torch.Tensor) -> np.ndarray:
        """Canonical end-effector command -> native joint targets through the adapter's IK (from the current state)."""
        q_now = torch.as_tensor(self.joint_state())
        q = self.adapter.from_canonical(x, q_now, source_mask=self.ee_mask, clamp_velocity=False,
                                        restarts=0, max_iters=30, tol_pos=2e-4, tol_rot=2e-3)
        return q.numpy()

    def step_canonical(self, x: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Command a canonical end-effector pose + gripper; returns the observation and the native action sent
        (joint targets in joint mode; robosuite's OSC action in osc mode)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if self.control == "joint":
            q = self.to_native(x)
            return self.step(q), q
        T_now = self.ee_pose()
        target_pos = x[self._ee_slots[0]].numpy()
        R_target = rotation_6d_to_matrix(x[self._ee_slots[1]]).numpy()
        dpos = (target_pos - T_now[:3, 3]) / OSC_POS_SCALE
        drot = _rotvec(R_target @ T_now[:3, :3].T) / OSC_ROT_SCALE
        action = np.concatenate([np.clip(dpos, -1, 1), np.clip(drot, -1, 1),
                                 [self._gripper_action(float(x[self._ee_slots[2]][0]))]])
        return self._advance(action), action

    def _advance(self, action: np.ndarray) -> dict[str, np.ndarray]:
        self._obs, _, _, _ = self.env.step(action)
        self.steps += 1
        return self.observation()

    # ------------------------------------------------------------------ state (for multi-path rollouts)
    def get_state(self) -> dict[str, Any]:
        """The MuJoCo state and step count, to restore the same start for several paths."""
        return {"sim": self.sim.get_state().flatten().copy(), "steps": self.steps}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from ``get_state``."""
        self.sim.set_state_from_flattened(state["sim"])
        self.sim.forward()
        self.steps = state["steps"]

    def close(self) -> None:
        self.env.close()


Controller = Callable[["SimEnv"], Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], np.ndarray]]]


def run_episode(env: SimEnv, seed: int, controller: Controller) -> dict[str, Any]:
    """One episode on ``env`` from scene ``seed``: ``controller(env)``, called after the reset, returns the step
    function ``act(observation) -> (next observation, native action sent)``; the episode ends on success or at
    the task's horizon. Returns the frames (observation + ``action``), success and step count."""
    obs = env.reset(seed)
    act = controller(env)
    frames: list[dict[str, np.ndarray]] = []
    success = False
    for _ in range(env.horizon):
        next_obs, action = act(obs)
        frames.append({**obs, "action": np.asarray(action, dtype=np.float32)})
        obs = next_obs
        if env.success():
            success = True
            break
    return {"frames": frames, "success": success, "steps": len(frames)}


def _rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> axis * angle (the log map), robust near 0 and pi."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()
