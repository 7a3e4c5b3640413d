"""The manipulation benchmark: MJCF embodiments, robosuite tasks driven through our IK, collection, eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("robosuite", reason="robosuite (sim extra) not installed")
mujoco = pytest.importorskip("mujoco")

from embodyhub.embodiment import Embodiment  # noqa: E402
from embodyhub.errors import DatasetError, EmbodimentMismatchError, EmbodyHubError  # noqa: E402
from embodyhub.kinematics.mjcf import MJCFError, read_mjcf  # noqa: E402

SIM_ROBOT_NAMES = ["panda", "iiwa", "ur5e", "kinova3", "xarm7", "jaco"]


def _site_pose_in_base(model, data, base: str, site: str) -> tuple[np.ndarray, np.ndarray]:
    b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, base)
    s = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
    Rb = data.xmat[b].reshape(3, 3)
    return Rb.T @ (data.site_xpos[s] - data.xpos[b]), Rb.T @ data.site_xmat[s].reshape(3, 3)


@pytest.mark.parametrize("name", SIM_ROBOT_NAMES)
def test_sim_embodiment_fk_matches_mujoco_site(name: str) -> None:
    from embodyhub.envs.sim.robots import fk_error_vs_mujoco

    pos, rot = fk_error_vs_mujoco(name, samples=20, seed=3)
    assert pos <= 1e-6 and rot <= 1e-6


def test_sim_embodiment_card_records_mjcf_and_round_trips(tmp_path) -> None:
    from embodyhub.envs.sim import sim_embodiment

    emb = sim_embodiment("xarm7")
    card = emb.to_card()
    assert len(card["mjcf"]["sha256"]) == 64 and "XArm7" in card["mjcf"]["source"]
    assert card["grippers"] == [{"joint": "gripper0_right_left_driver_joint", "arm": 0, "open": "lower"}]
    back = Embodiment.from_pretrained(emb.save_pretrained(tmp_path / "xarm7"))
    assert back.mjcf == emb.mjcf and back.joint_names == emb.joint_names
    q = emb.sample(4, torch.Generator().manual_seed(0))
    assert torch.allclose(back.chains[0].forward_kinematics(q[:, :7]), emb.chains[0].forward_kinematics(q[:, :7]))


_ARM = """
<mujoco model="two_link">
  <compiler angle="degree"/>
  {extra}
  <worldbody>
    <body name="base" pos="0 0 0.5">
      <body name="upper" pos="0 0 0.1" euler="0 0 30">
        <joint name="shoulder" type="hinge" axis="0 1 0" range="-90 90" pos="0 0 0.02"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03"/>
        <body name="lower" pos="0.3 0 0">
          <joint name="elbow" type="hinge" axis="0 0 1"/>
          <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.03"/>
          <site name="tip" pos="0.25 0 0" quat="0.9238795 0 0.3826834 0"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def test_from_mjcf_file_matches_mujoco_with_degrees_anchors_and_continuous_joints(tmp_path) -> None:
    path = tmp_path / "arm.xml"
    path.write_text(_ARM.format(extra=""))
    emb = Embodiment.from_mjcf(path, "base", "tip", control_hz=50)
    assert emb.joint_names == ["shoulder", "elbow"]
    assert emb.robot.joints["elbow"].type == "continuous" and abs(emb.upper[0] - np.pi / 2) < 1e-12
    model = mujoco.MjModel.from_xml_path(str(path))
    data = mujoco.MjData(model)
    q = torch.tensor([[0.4, -1.2], [-1.0, 2.5], [1.5, 0.1]], dtype=torch.float64)
    T = emb.chains[0].forward_kinematics(q).numpy()
    for i in range(3):
        data.qpos[:] = q[i].numpy()
        mujoco.mj_kinematics(model, data)
        p, R = _site_pose_in_base(model, data, "base", "tip")
        assert np.abs(p - T[i, :3, 3]).max() <= 1e-9 and np.abs(R - T[i, :3, :3]).max() <= 1e-9
    assert emb.to_card()["mjcf"]["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "extra",
    [
        '<include file="../outside.xml"/>',
        '<asset><mesh name="m" file="/etc/hostname"/></asset>',
        '<compiler meshdir="../../"/>',
        '<asset><texture name="t" type="skybox" fileup="../sky.png"/></asset>',
    ],
)
def test_from_mjcf_refuses_files_outside_its_folder(tmp_path, extra: str) -> None:
    (tmp_path / "outside.xml").write_text("<mujoco/>")
    folder = tmp_path / "robot"
    folder.mkdir()
    (folder / "arm.xml").write_text(_ARM.format(extra=extra))
    with pytest.raises(MJCFError, match="outside its folder"):
        read_mjcf(folder / "arm.xml", "base", ["tip"])


def test_from_mjcf_refuses_doctype_unknown_names_and_ball_joints(tmp_path) -> None:
    with pytest.raises(MJCFError, match="DOCTYPE"):
        read_mjcf('<!DOCTYPE x [<!ENTITY a "b">]><mujoco/>', "base", asset_root=tmp_path)
    with pytest.raises(MJCFError, match="no body 'nope'"):
        read_mjcf(_ARM.format(extra=""), "nope", asset_root=tmp_path)
    with pytest.raises(MJCFError, match="no site 'nope'"):
        read_mjcf(_ARM.format(extra=""), "base", ["nope"], asset_root=tmp_path)
    ball = _ARM.format(extra="").replace('name="elbow" type="hinge" axis="0 0 1"', 'name="elbow" type="ball"')
    with pytest.raises(MJCFError, match="ball or free"):
        read_mjcf(ball, "base", ["tip"], asset_root=tmp_path)


def test_unknown_robot_task_and_gripper_list_the_valid_ones() -> None:
    from embodyhub.envs.sim import SimEnv, sim_embodiment

    with pytest.raises(EmbodimentMismatchError, match="panda, iiwa"):
        sim_embodiment("sawyer2")
    with pytest.raises(EmbodimentMismatchError, match="lift, stack, can"):
        SimEnv("door2", "panda")
    with pytest.raises(EmbodimentMismatchError, match="Robotiq85Gripper"):
        sim_embodiment("panda", "NoSuchGripper")


def test_observation_is_lerobot_shaped_and_keypoints_are_in_the_base_frame() -> None:
    from embodyhub.envs.sim import SimEnv

    env = SimEnv("stack", "ur5e")
    obs = env.reset(7)
    assert obs["observation.state"].shape == (env.embodiment.dof,) and obs["observation.state"].dtype == np.float32
    kp = obs["observation.environment_state"].reshape(-1, 3)
    assert kp.shape == (8, 3)
    # the red cube's centre, from robosuite's own world-frame observation, moved into the base frame
    R_b, p_b = env._base_pose()
    assert np.allclose(kp[0], (env._obs["cubeA_pos"] - p_b) @ R_b, atol=1e-5)
    # its axis points sit at its half extents (2 cm), the green cube's at 2.5 cm: the points carry the size
    assert np.allclose(np.linalg.norm(kp[1:4] - kp[0], axis=1), 0.02, atol=1e-5)
    assert np.allclose(np.linalg.norm(kp[5:8] - kp[4], axis=1), 0.025, atol=1e-5)
    again = env.reset(7)["observation.environment_state"]
    other = env.reset(8)["observation.environment_state"]
    assert np.array_equal(again, obs["observation.environment_state"]) and not np.array_equal(other, again)


def test_joint_targets_through_ik_move_the_grip_site_where_commanded() -> None:
    from embodyhub.envs.sim import SimEnv

    env = SimEnv("lift", "kinova3")
    env.reset(0)
    T = env.ee_pose()
    T[:3, 3] += [0.05, -0.04, 0.06]
    x = env.canonical_command(T, 1.0)
    for _ in range(40):
        env.step_canonical(x)
    assert np.linalg.norm(env.ee_pose()[:3, 3] - T[:3, 3]) < 0.005


@pytest.mark.parametrize("robot", ["panda", "jaco"])
def test_lift_expert_succeeds_through_our_ik(robot: str) -> None:
    from embodyhub.envs.sim import SimEnv, run_expert_episode

    env = SimEnv("lift", robot)
    results = [run_expert_episode(env, seed) for seed in (11, 12)]
    assert all(r["success"] for r in results), [r["steps"] for r in results]
    frame = results[0]["frames"][0]
    assert frame["action"].shape == (env.embodiment.dof,)


def test_can_drop_point_is_the_inset_compartment_point_nearest_the_base_and_the_tilt_points_outward() -> None:
    from embodyhub.envs.sim import experts

    class Stub:
        def object(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            return np.array([0.7, 0.5, -0.1]), np.eye(3)

    inset = experts._COMPARTMENT_HALF - experts._CAN_MARGIN
    target = experts._in_bin(0.2)(Stub())
    np.testing.assert_allclose(target, [0.7 - inset[0], 0.5 - inset[1], 0.1])
    approach = experts._outward(target, 0.5) @ np.array([0.0, 0.0, -1.0])
    assert approach @ np.array([target[0], target[1], 0.0]) > 0  # the fingertips lean away from the base


def test_can_expert_reaches_the_bin_at_the_edge_of_reach() -> None:
    from embodyhub.envs.sim import SimEnv, run_expert_episode

    # collection seed 0 places the can where XArm7's vertical gripper stalled 10 cm short of the compartment
    assert run_expert_episode(SimEnv("can", "xarm7"), 0)["success"]


def test_tilted_can_grasp_closes_across_the_reach_direction_with_both_fingers_level() -> None:
    from embodyhub.envs.sim import Expert, SimEnv, run_expert_episode

    # the Robotiq85 closes across its hinge axis, the Panda gripper along its slide joint
    assert np.allclose(np.abs(SimEnv("can", "kinova3").closing_axis()), [1, 0, 0], atol=1e-6)
    assert np.allclose(np.abs(SimEnv("lift", "panda").closing_axis()), [1, 0, 0], atol=1e-6)
    env = SimEnv("can", "xarm7")
    assert np.allclose(np.abs(env.closing_axis()), [0, 1, 0], atol=1e-6)
    # collection seed 20 (can 0.75 m out): closing along the reach direction, the tilt put one finger 1.6 cm
    # lower, on the can's rim, and knocked the can over
    env.reset(20)
    expert = Expert(env)
    while expert.phases[expert.phase].name != "close":
        env.step_canonical(expert.act())
    closing = env.ee_pose()[:3, :3] @ env.closing_axis()
    reach = expert.object(0)[0][:2] / np.linalg.norm(expert.object(0)[0][:2])
    assert abs(closing[2]) < 0.05 and abs(closing[:2] @ reach) < 0.05
    assert run_expert_episode(env, 20)["success"]


def test_collect_writes_a_dataset_that_loads_resumes_and_refuses_another_robot(tmp_path) -> None:
    from embodyhub.data import load_dataset
    from embodyhub.envs.sim import collect

    out = collect(["lift"], "panda", 2, tmp_path / "ds", progress=False)
    ds = load_dataset(out)
    assert ds.num_episodes == 2 and ds.info["robot_type"] == "panda" and ds.fps == 20
    ep = ds.episode(0)
    assert ep["task"] == "lift the cube"
    assert ep["observation.environment_state"].shape[1] == 12 and ep["action"].shape[1] == 8
    assert ds.load_embodiment().mjcf == ds.embodiment_card["mjcf"]
    staged = sorted((out / ".staging").glob("lift-*.npz"))
    assert len(staged) == 2
    again = collect(["lift"], "panda", 2, out, progress=False)  # resumes: nothing re-simulated
    assert sorted((again / ".staging").glob("lift-*.npz")) == staged
    with pytest.raises(DatasetError, match="robot='panda'.*one robot per dataset"):
        collect(["lift"], "iiwa", 1, out, progress=False)


def test_eval_cli_same_seed_same_result_and_seeds_disjoint_from_collection(tmp_path) -> None:
    from embodyhub.cli import main
    from embodyhub.envs.sim import EVAL_SEED_BASE

    runs = []
    for k in range(2):
        out = tmp_path / f"e{k}"
        assert main(["eval", "--env", "lift", "--robot", "iiwa", "--episodes", "2", "--out", str(out)]) == 0
        rows = json.loads((out / "eval.json").read_text())
        runs.append([(r["per_episode"], r["mean_steps"], r["seeds"]) for r in rows])
        assert (out / "eval.png").is_file()
    assert runs[0] == runs[1] and runs[0][0][0] == [True, True]
    assert runs[0][0][2] == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]


def test_collection_never_reaches_evaluation_seeds(tmp_path) -> None:
    from embodyhub.envs.sim import EVAL_SEED_BASE, collect

    with pytest.raises(DatasetError, match="evaluation seeds"):
        collect(["lift"], "panda", EVAL_SEED_BASE // 2, tmp_path / "big", progress=False)
    with pytest.raises(DatasetError, match="evaluation seeds"):
        collect(["lift"], "panda", 2, tmp_path / "late", progress=False, first_seed=EVAL_SEED_BASE - 3)


def test_collection_from_another_seed_range_gives_other_episodes_and_keeps_to_its_range(tmp_path, lift_demos) -> None:
    from embodyhub.data import load_dataset
    from embodyhub.envs.sim import collect

    held_out = load_dataset(collect(["lift"], "panda", 1, tmp_path / "held", progress=False, first_seed=500))
    first = held_out.episode(0)["observation.environment_state"][0]
    assert not torch.allclose(first, lift_demos.episode(0)["observation.environment_state"][0])  # another cube placement
    assert sorted(p.name for p in (tmp_path / "held" / ".staging").glob("*.npz"))[0].startswith("lift-0000500")
    with pytest.raises(DatasetError, match="first_seed=500; this run asks for first_seed=0"):
        collect(["lift"], "panda", 1, tmp_path / "held", progress=False)


def test_start_spread_moves_the_start_pose_within_its_box_per_seed_and_collect_records_it(tmp_path) -> None:
    from embodyhub.envs.sim import SimEnv, collect
    from embodyhub.envs.sim.env import START_BOX

    home, spread = SimEnv("lift", "panda"), SimEnv("lift", "panda", start_spread=0.1)
    starts = []
    for seed in (3, 4):
        obs = home.reset(seed)
        moved = spread.reset(seed)
        offset = spread.ee_pose()[:3, 3] - home.ee_pose()[:3, 3]
        assert np.all(offset >= START_BOX[0] * 0.1 - 0.01) and np.all(offset <= START_BOX[1] * 0.1 + 0.01)
        assert np.allclose(spread.ee_pose()[:3, :3], home.ee_pose()[:3, :3], atol=0.05)  # same orientation
        assert np.array_equal(moved["observation.environment_state"], obs["observation.environment_state"])  # same scene
        starts.append(moved["observation.state"])
    assert not np.allclose(starts[0], starts[1]) and np.array_equal(spread.reset(3)["observation.state"], starts[0])
    out = collect(["lift"], "panda", 1, tmp_path / "spread", progress=False, start_spread=0.1)
    assert json.loads((out / "meta" / "info.json").read_text())["embodyhub"]["collection"]["start_spread"] == 0.1
    with pytest.raises(DatasetError, match="start_spread=0.1; this run asks for start_spread=0.0"):
        collect(["lift"], "panda", 1, tmp_path / "spread", progress=False)


def test_cli_errors_name_the_valid_envs_and_robots(capsys) -> None:
    from embodyhub.cli import main

    assert main(["collect", "--env", "door2", "--robot", "panda", "--out", "x"]) != 0
    assert "lift, stack, can" in capsys.readouterr().err
    assert main(["eval", "--env", "lift", "--robot", "baxter2"]) != 0
    assert "panda, iiwa" in capsys.readouterr().err



def test_eval_videos_are_playable_gifs_of_the_same_episodes(tmp_path) -> None:
    from PIL import Image

    from embodyhub.envs.sim import evaluate_policy

    plain = evaluate_policy("lift", "panda", 2, progress=False)
    recorded = evaluate_policy("lift", "panda", 2, progress=False, videos=1, video_dir=tmp_path)
    assert recorded["per_episode"] == plain["per_episode"] and recorded["mean_steps"] == plain["mean_steps"]
    assert len(recorded["videos"]) == 1
    with Image.open(recorded["videos"][0]) as gif:
        assert gif.format == "GIF" and gif.n_frames > 10
        gif.seek(gif.n_frames - 1)
        assert gif.size == (160, 160) and len(np.unique(np.asarray(gif.convert("RGB")).reshape(-1, 3), axis=0)) > 50  # a rendered scene, not a blank


def test_a_missing_rendering_backend_is_one_line(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUJOCO_GL": "osmesa"}
    probe = subprocess.run([sys.executable, "-c", "import mujoco"], env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this machine has OSMesa")
    run = subprocess.run([sys.executable, "-m", "embodyhub.cli", "eval", "--env", "lift", "--robot", "panda",
                          "--episodes", "1", "--out", str(tmp_path)], env=env, capture_output=True, text=True)
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert len(errors) == 1 and "MUJOCO_GL=osmesa" in errors[0] and "MUJOCO_GL=egl" in errors[0]


def test_collect_cli_records_camera_frames_and_refuses_other_camera_settings(tmp_path, capsys) -> None:
    from embodyhub.cli import main
    from embodyhub.data import load_dataset
    from embodyhub.envs.sim.rollout import _env

    out = tmp_path / "cam"
    args = ["collect", "--env", "lift", "--robot", "panda", "--episodes", "1", "--out", str(out)]
    assert main([*args, "--camera", "agentview", "--image-size", "32"]) == 0
    ds = load_dataset(out)
    key = "observation.images.agentview"
    assert ds.info["features"][key] == {"dtype": "image", "shape": [32, 32, 3], "names": ["height", "width", "channels"]}
    ep = ds.episode(0)
    assert ep[key].shape == (len(ep["action"]), 3, 32, 32) and ep[key].dtype == torch.float32
    assert not torch.equal(ep[key][0], ep[key][-1])  # the arm and the cube moved in view
    # frame 0 is the camera's render of the episode's start, aligned with the recorded state
    (staged,) = (out / ".staging").glob("lift-*.npz")
    start = _env("lift", "panda", None, "agentview", 32, False, "joint").reset(int(staged.stem.split("-")[1]))
    assert torch.equal(ep[key][0], torch.from_numpy(start[key]).permute(2, 0, 1).float() / 255)
    assert torch.equal(ep["observation.state"][0], torch.from_numpy(start["observation.state"]))
    capsys.readouterr()
    for other in (["--camera", "frontview"], ["--camera", "agentview", "--image-size", "48"],
                  ["--camera", "agentview", "--image-size", "32", "--visual-meshes"], []):
        assert main([*args, *other]) != 0, other
        assert "one camera setting per dataset" in capsys.readouterr().err
    assert main([*args, "--camera", "agentview", "--image-size", "32"]) == 0  # the same settings resume
    assert main([*args[:-1], str(tmp_path / "other"), "--camera", "nocam"]) != 0
    assert "no camera 'nocam' in Lift; robosuite's cameras include agentview" in capsys.readouterr().err


def test_card_of_a_sim_derived_robot_names_its_mjcf_and_reports_success_per_task(tmp_path) -> None:
    from huggingface_hub import ModelCard

    from embodyhub.envs.sim import sim_embodiment
    from embodyhub.hub import render_card
    from embodyhub.hub.cards import EVAL_FILE

    bundle = tmp_path / "bundle"
    emb = sim_embodiment("xarm7")
    emb.save_pretrained(bundle / "embodiments" / emb.name)
    (bundle / "manifest.json").write_text(json.dumps({"base_model": "org/wam", "precision": "int8", "embodiments": []}))
    rows = [{"task": task, "robot": "xarm7", "control": "joint", "policy": "expert", "episodes": 50, "seeds": [1_000_000, 1_000_049],
             "success_rate": rate, "mean_steps": 60.0, "cpu_s_per_episode": 0.7} for task, rate in (("lift", 1.0), ("stack", 0.98))]
    (tmp_path / EVAL_FILE).write_text(json.dumps(rows))
    card = ModelCard(render_card(bundle, "org/wam-xarm7", eval_path=tmp_path / EVAL_FILE).text)
    assert f"MJCF `{emb.mjcf['sha256'][:16]}…`" in card.text
    assert {(r.dataset_type, r.dataset_config, r.metric_value) for r in card.data.eval_results} == {
        ("embodyhub/robosuite-lift", "xarm7", 1.0), ("embodyhub/robosuite-stack", "xarm7", 0.98)}
    assert "`embodyhub eval --env lift,stack --robot xarm7 --policy expert --control joint --episodes 50 --seed 1000000`" in card.text
    assert "| xarm7 | stack | expert | joint | 50 (1000000-1000049) | 98.0% | 60.0 |" in card.text


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    from embodyhub.data import load_dataset
    from embodyhub.envs.sim import collect

    return load_dataset(collect(["lift"], "panda", 1, tmp_path_factory.mktemp("v2") / "panda-lift", progress=False))


def test_chunk_samples_of_a_collected_dataset_feed_keypoints_task_and_flow(lift_demos, tiny_sim_model) -> None:
    from embodyhub.training import chunk_samples, train

    model, processor, _ = tiny_sim_model
    assert processor.max_keypoints == 8 and model.config.task_vocab_size == processor.task_vocab_size
    assert processor.keypoints_per_object == model.config.keypoints_per_object == 4
    samples = chunk_samples(lift_demos, 4)
    ep = lift_demos.episode(0)
    T = len(ep["action"])
    assert "goal" not in samples and samples["task"] == ["lift the cube"] * T
    assert samples["environment_state"].shape == (T, 12) and samples["future_environment_state"].shape == (T, 4, 12)
    assert torch.equal(samples["future_environment_state"][0, 0], ep["observation.environment_state"][1].double())
    assert torch.equal(samples["future_state"][-1, -1], ep["observation.state"][-1].double())  # padded with the last
    batch = processor({k: v[:5] for k, v in samples.items() if k != "actions"}, "panda", actions=samples["actions"][:5])
    assert batch["keypoint_mask"].sum(-1).tolist() == [4] * 5 and batch["task_mask"].sum(-1).tolist() == [3] * 5
    assert batch["world_mask"][:, :, :4].all() and not batch["world_mask"][:, :, 4:8].any()
    # at the first frame the untouched cube only settles onto the table: its four points drop together, in z
    flow = batch["world_targets"][0, :, :4]
    assert flow[..., :2].abs().max() < 1e-3 and torch.allclose(flow, flow[:, :1].expand_as(flow), atol=1e-4)
    log = train(model, processor, {"panda-lift": lift_demos}, steps=3, batch_size=8, learning_rate=1e-3, warmup_steps=1, progress=False)
    assert all(torch.isfinite(torch.tensor([e["loss"], e["world_loss"]])).all() for e in log[:-1])


def test_a_wam_drives_the_simulator_from_keypoints_and_the_task(tiny_sim_model, tmp_path) -> None:
    from embodyhub.cli import main
    from embodyhub.envs.sim import ModelPolicy, SimEnv

    _, processor, folder = tiny_sim_model
    env = SimEnv("lift", "xarm7")  # a held-out arm: its MJCF embodiment is passed as is
    policy = ModelPolicy(str(folder)).build(env.embodiment, env.task.description)
    obs = env.reset(EVAL_SEED := 1_000_000)
    inputs = policy.inputs(obs)
    assert inputs["environment_state"].shape == (1, 12) and inputs["task"] == "lift the cube"
    for _ in range(5):  # a chunk of 4, then a re-plan
        q = policy(obs)
        assert q.shape == (env.embodiment.dof,)
        assert np.all(q <= env.embodiment.upper.numpy() + 1e-9) and np.all(q >= env.embodiment.lower.numpy() - 1e-9)
        obs = env.step(q)
    out = tmp_path / "eval"
    assert main(["eval", "--env", "lift", "--robot", "panda", "--model", str(folder), "--episodes", "1", "--out", str(out)]) == 0
    (row,) = json.loads((out / "eval.json").read_text())
    assert row["policy"] == str(folder) and row["seeds"] == [EVAL_SEED, EVAL_SEED]
    assert row["mean_steps"] == 150 and row["success_rate"] == 0.0  # an untrained model does not lift the cube
    # the same commands through robosuite's OSC (end-effector targets) instead of joint targets
    assert main(["eval", "--env", "lift", "--robot", "panda", "--model", str(folder), "--episodes", "1", "--control", "osc",
                 "--out", str(out / "osc")]) == 0
    (osc,) = json.loads((out / "osc" / "eval.json").read_text())
    assert osc["control"] == "osc" and osc["mean_steps"] == 150


def test_a_bundle_drives_the_simulator_like_the_model(tiny_sim_model, tmp_path, capsys) -> None:
    """``embodyhub export --robot xarm7`` of a simulator model (a held-out arm: its MJCF card joins the bundle),
    then the bundle's graph on onnxruntime commands what the float model commands, chunk after chunk, and
    ``eval --bundle`` runs it in the closed loop."""
    pytest.importorskip("onnxruntime")
    import pickle

    from embodyhub.cli import main
    from embodyhub.envs.sim import BundlePolicy, ModelPolicy, SimEnv

    _, _, folder = tiny_sim_model
    bundle = tmp_path / "bundle"
    assert main(["export", "--model", str(folder), "--robot", "xarm7", "--precision", "float32", "--out", str(bundle)]) == 0
    env = SimEnv("lift", "xarm7")
    spec = pickle.loads(pickle.dumps(BundlePolicy(str(bundle))))  # what a spawned evaluation worker receives
    onnx, wam = spec.build(env.embodiment, env.task.description), ModelPolicy(str(folder)).build(env.embodiment, env.task.description)
    obs = env.reset(1_000_001)
    lower, upper = env.embodiment.lower.numpy(), env.embodiment.upper.numpy()
    for _ in range(9):  # two chunks of 4 and a re-plan
        q = onnx(obs)
        assert np.array_equal(q, wam(obs)) and np.all(q <= upper + 1e-9) and np.all(q >= lower - 1e-9)
        obs = env.step(q)
    with pytest.raises(EmbodyHubError, match="no policy for 'panda'"):
        spec.build(SimEnv("lift", "panda").embodiment, "lift the cube")
    out = tmp_path / "eval"
    assert main(["eval", "--env", "lift", "--robot", "xarm7", "--bundle", str(bundle), "--episodes", "1", "--out", str(out)]) == 0
    (row,) = json.loads((out / "eval.json").read_text())
    assert row["policy"] == str(bundle) and row["runtime"] == "onnxruntime" and row["mean_steps"] == 150
    capsys.readouterr()
    assert main(["eval", "--env", "lift", "--robot", "panda", "--bundle", str(bundle), "--episodes", "1", "--out", str(out)]) == 2
    assert "no policy graph for panda" in capsys.readouterr().err


def test_triton_loads_after_a_camera_env_has_rendered() -> None:
    """Mesa EGL's LLVM and triton's used to clash: a rendered camera frame, then ``import triton`` (what
    transformers does lazily) killed the process with SIGSEGV."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    code = ("from embodyhub.envs.sim import SimEnv\n"
            "env = SimEnv('lift', 'panda', camera='agentview', image_size=32)\n"
            "env.reset(0)\nenv.step(env.joint_state())\nimport triton\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
