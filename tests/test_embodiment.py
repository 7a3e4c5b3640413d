"""Embodiment cards, the canonical action space, the kinematic adapter and retargeting."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embodyhub.embodiment import (
    CanonicalActionSpace,
    Embodiment,
    KinematicAdapter,
    list_robots,
    load_robot,
    retarget,
)
from embodyhub.errors import EmbodimentMismatchError, InvalidActionError, KinematicsError

ROBOTS = list_robots()


def random_q(emb: Embodiment, n: int, seed: int = 0) -> torch.Tensor:
    return emb.sample(n, torch.Generator().manual_seed(seed))


def test_at_least_eight_bundled_robots_with_two_arm_and_humanoid():
    assert len(ROBOTS) >= 8, ROBOTS
    two_armed = [name for name in ROBOTS if len(load_robot(name).arms) == 2]
    assert two_armed, "need at least one two-arm robot"
    assert "g1" in ROBOTS and len(load_robot("g1").arms) == 2


@pytest.mark.parametrize("name", ROBOTS)
def test_bundled_card_round_trip(name, tmp_path):
    emb = load_robot(name)
    card = json.loads(json.dumps(emb.to_card()))  # JSON-clean (no inf/NaN)
    assert card["dof"] == emb.dof == len(card["joint_names"])
    assert card["urdf_sha256"] == emb.urdf_sha256
    emb.save_pretrained(tmp_path)
    again = Embodiment.from_pretrained(tmp_path)
    assert again.joint_names == emb.joint_names
    assert again.to_card() == emb.to_card()
    again.check_compatible(card)


@pytest.mark.parametrize("name", ROBOTS)
def test_canonical_round_trip_exact_on_joint_slots(name):
    emb = load_robot(name)
    adapter = KinematicAdapter(emb)
    q = random_q(emb, 64)
    x, mask = adapter.to_canonical(q)
    assert x.shape == (64, adapter.space.dim) and mask.dtype == torch.bool
    assert torch.all(x[:, ~mask] == 0)
    back = adapter.from_canonical(x)
    torch.testing.assert_close(back, q, rtol=0, atol=1e-12)
    # End-effector slots are FK in the arm base frame.
    for i, (chain, idx) in enumerate(zip(emb.chains, emb.arm_indices)):
        T = chain.forward_kinematics(q[:, idx])
        torch.testing.assert_close(x[:, adapter.space[f"arm{i}.ee_pos"]], T[:, :3, 3])


def test_mask_matches_filled_slots():
    emb = load_robot("panda")
    space = CanonicalActionSpace()
    mask = KinematicAdapter(emb, space).mask
    assert mask[space["arm0.ee_pos"]].all() and mask[space["arm0.ee_rot6d"]].all()
    assert mask[space["arm0.gripper"]].all()
    assert mask[space["arm0.joints"]].sum() == emb.chains[0].dof
    assert not mask[space["arm1.ee_pos"]].any() and not mask[space["base.vel"]].any()


def test_from_canonical_by_ik_reaches_the_pose():
    emb = load_robot("panda")
    adapter = KinematicAdapter(emb)
    q = random_q(emb, 32, seed=3)
    x, _ = adapter.to_canonical(q)
    q_ik = adapter.from_canonical(x, mode="ee")
    x_ik, _ = adapter.to_canonical(q_ik)
    space = adapter.space
    pos_err = (x_ik[:, space["arm0.ee_pos"]] - x[:, space["arm0.ee_pos"]]).norm(dim=-1)
    assert (pos_err < 1e-3).float().mean() >= 0.95
    torch.testing.assert_close(x_ik[:, space["arm0.gripper"]], x[:, space["arm0.gripper"]])


def test_outputs_clamped_to_position_and_velocity_limits():
    emb = load_robot("panda")
    adapter = KinematicAdapter(emb)
    q_now = random_q(emb, 8, seed=1)
    x = torch.zeros(8, adapter.space.dim, dtype=torch.float64)
    x[:, adapter.space["arm0.joints"]] = 1.0  # every joint to its upper limit: a huge jump
    q = adapter.from_canonical(x, q_current=q_now)
    step = emb.velocity_limit * emb.dt
    assert torch.all((q - q_now).abs() <= step + 1e-12)
    assert torch.all(q <= emb.upper) and torch.all(q >= emb.lower)
    # Without a current state only the position limits apply.
    far = adapter.from_canonical(x * 5)
    assert torch.all(far <= emb.upper + 1e-12) and torch.all(far >= emb.lower - 1e-12)


def test_nan_and_bad_shapes_raise_clear_errors():
    emb = load_robot("panda")
    adapter = KinematicAdapter(emb)
    q = random_q(emb, 2)
    q[0, 3] = float("nan")
    with pytest.raises(InvalidActionError, match="NaN"):
        adapter.to_canonical(q)
    x = torch.zeros(2, adapter.space.dim)
    x[1, 0] = float("inf")
    with pytest.raises(InvalidActionError, match="NaN or infinite"):
        adapter.from_canonical(x)
    with pytest.raises(InvalidActionError, match="expects"):
        adapter.to_canonical(torch.zeros(2, emb.dof + 1))
    with pytest.raises(InvalidActionError, match="dim"):
        adapter.from_canonical(torch.zeros(adapter.space.dim + 1))


def test_embodiment_construction_errors(tmp_path):
    urdf = load_robot("panda").urdf_text
    with pytest.raises(KinematicsError, match="not in robot"):
        Embodiment.from_urdf(urdf, arms=[("panda_link0", "no_such_link")])
    with pytest.raises(KinematicsError, match="ancestor"):
        Embodiment.from_urdf(urdf, arms=[("panda_hand", "panda_link0")])
    with pytest.raises(EmbodimentMismatchError, match="gripper joint 'nope'"):
        Embodiment.from_urdf(urdf, arms=[("panda_link0", "panda_hand")], grippers=["nope"])
    with pytest.raises(EmbodimentMismatchError, match="also an arm joint"):
        Embodiment.from_urdf(urdf, arms=[("panda_link0", "panda_hand")], grippers=["panda_joint7"])
    with pytest.raises(EmbodimentMismatchError, match="control_hz"):
        Embodiment.from_urdf(urdf, arms=[("panda_link0", "panda_hand")], control_hz=float("nan"))
    emb = Embodiment.from_urdf(urdf, arms=[("panda_link0", "panda_hand")], grippers=["panda_finger_joint1"])
    emb.save_pretrained(tmp_path)
    (tmp_path / "robot.urdf").write_text(urdf.replace('name="panda_joint7"', 'name="panda_joint7b"', 1))
    with pytest.raises(EmbodimentMismatchError, match="sha256"):
        Embodiment.from_pretrained(tmp_path)
    with pytest.raises(EmbodimentMismatchError, match="bundled"):
        Embodiment.from_pretrained("no-such-robot")


def test_check_compatible_reports_a_readable_diff():
    panda, ur5 = load_robot("panda"), load_robot("ur5")
    with pytest.raises(EmbodimentMismatchError) as info:
        panda.check_compatible(ur5.to_card())
    message = str(info.value)
    assert "urdf_sha256" in message and "dof" in message and "joint_names" in message


def test_retarget_panda_ur5_panda_reports_end_effector_error():
    panda, ur5 = load_robot("panda"), load_robot("ur5")
    # A smooth 20-step reach around the Panda's ready pose.
    ready = torch.tensor([0.0, -0.4, 0.0, -2.2, 0.0, 1.9, 0.8, 0.03], dtype=torch.float64)
    t = torch.linspace(0, 1, 20, dtype=torch.float64)[:, None]
    traj = ready + t * torch.tensor([0.6, 0.3, 0.0, 0.4, 0.2, -0.2, 0.3, 0.0], dtype=torch.float64)
    on_ur5 = retarget(traj, panda, ur5, seed=0)
    back = retarget(on_ur5, ur5, panda, q0=traj[0], seed=0)
    assert on_ur5.shape == (20, ur5.dof) and back.shape == traj.shape
    assert torch.all(on_ur5 <= ur5.upper) and torch.all(on_ur5 >= ur5.lower)
    fk_p, fk_u = panda.chains[0], ur5.chains[0]
    p_src = fk_p.forward_kinematics(traj[:, :7])[:, :3, 3]
    p_ur5 = fk_u.forward_kinematics(on_ur5)[:, :3, 3]
    p_back = fk_p.forward_kinematics(back[:, :7])[:, :3, 3]
    err_ur5 = (p_ur5 - p_src).norm(dim=-1)
    err_back = (p_back - p_src).norm(dim=-1)
    print(
        f"\nretarget panda->ur5 EE position error: max {err_ur5.max() * 1e3:.3f} mm, "
        f"panda->ur5->panda: max {err_back.max() * 1e3:.3f} mm"
    )
    assert err_ur5.max() < 2e-3 and err_back.max() < 2e-3
    # Continuity: seeded IK does not jump between solution branches.
    assert (on_ur5.diff(dim=0).abs().max()) < 0.5


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(set(ROBOTS) & {"panda", "baxter", "so100", "z1", "ur5"})),
    x=st.lists(finite, min_size=39, max_size=39),
    q_seed=st.integers(0, 10_000),
    mode=st.sampled_from(["auto", "joints", "ee"]),
)
def test_adapter_fuzz_outputs_always_within_limits(name, x, q_seed, mode):
    emb = load_robot(name)
    adapter = KinematicAdapter(emb)
    x_t = torch.tensor(x, dtype=torch.float64)[: adapter.space.dim]
    q_now = random_q(emb, 1, seed=q_seed)[0]
    q = adapter.from_canonical(x_t, q_current=q_now, mode=mode, max_iters=5, restarts=0)
    assert torch.isfinite(q).all()
    assert torch.all(q <= emb.upper) and torch.all(q >= emb.lower)
    assert torch.all((q - q_now).abs() <= emb.velocity_limit * emb.dt + 1e-9)
    x_back, _ = adapter.to_canonical(q)
    assert torch.isfinite(x_back).all()


def test_card_urdf_file_must_be_a_file_in_the_card_folder(tmp_path):
    """A card's ``urdf_file`` could name any path (and the hash-mismatch error leaked its hash's first digits)."""
    secret = tmp_path / "secret.urdf"
    secret.write_text("<robot name='secret'><link name='a'/></robot>")
    folder = load_robot("panda").save_pretrained(tmp_path / "panda")
    card = json.loads((folder / "embodiment.json").read_text())
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    for name in ("../secret.urdf", str(secret), "..", "sub/robot.urdf"):
        (folder / "embodiment.json").write_text(json.dumps({**card, "urdf_file": name}))
        with pytest.raises(EmbodimentMismatchError, match="not a plain name") as err:
            Embodiment.from_pretrained(folder)
        assert digest[:12] not in str(err.value)
