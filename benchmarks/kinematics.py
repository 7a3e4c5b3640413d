"""Benchmark embodyhub kinematics against pytorch-kinematics on the Franka Panda (float32, CPU).

Cases: forward kinematics, forward kinematics + backward, geometric Jacobian (each at batch 1,
1k and 100k) and inverse kinematics of 1000 random reachable poses. Both libraries run in the
same process on the same inputs; every timed repeat runs the two back to back (alternating which
goes first) so that load from other processes hits both alike, and the table reports medians.

    python benchmarks/kinematics.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

import pytorch_kinematics as pk
from embodyhub.kinematics import KinematicChain, RobotModel

REPO = Path(__file__).resolve().parents[1]
BASE_LINK, TIP_LINK = "panda_link0", "panda_hand"
DTYPE = torch.float32
BATCHES = (1, 1_000, 100_000)
IK_TARGETS = 1000
TOL_POS, TOL_ROT = 1e-3, 1e-3  # metres, radians
LIMIT_SLACK = 1e-6  # a solution counts as within limits up to this much outside them
FK_AGREE = 1e-4  # max abs difference allowed between the two libraries before timing

# pytorch-kinematics IK configurations, chosen by a sweep on this machine (retries 10-50, lr 0.5/1.0,
# lm_damping 0.01-0.5, per-step clamping on/off, the early-stopping variants). "best": the cheapest
# setting found that solves all 1000 targets; "fast": the same without per-step clamping to the
# limits (pk still wraps/clamps and refines at the end), about 1.6x cheaper, a little lower success.
_PK_COMMON: dict[str, object] = dict(
    num_retries=20,
    max_iterations=50,
    lr=1.0,
    lm_damping=0.1,
    early_stopping_any_converged=True,
    early_stopping_no_improvement=None,
    enforce_joint_limits=True,
)
PK_IK_CONFIGS: dict[str, dict[str, object]] = {
    "best": _PK_COMMON | dict(clamp_to_limits=True),
    "fast": _PK_COMMON | dict(clamp_to_limits=False),
}

Fn = Callable[[], object]


@dataclass
class Row:
    """One line of the table (times in milliseconds)."""

    case: str
    batch: int
    embodyhub_ms: float
    pk_ms: float
    repeats: int
    embodyhub_samples_ms: list[float] = field(default_factory=list)
    pk_samples_ms: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.pk_ms / self.embodyhub_ms


# ---------------------------------------------------------------------------- setup
def find_urdf() -> Path:
    """The bundled adapter URDF, else example-robot-data's panda.urdf from the installed package."""
    bundled = REPO / "adapters" / "panda" / "robot.urdf"
    if bundled.is_file():
        return bundled
    for f in metadata.files("example-robot-data") or []:
        if str(f).endswith("panda_description/urdf/panda.urdf"):
            return Path(f.locate())
    raise FileNotFoundError("no Panda URDF: neither adapters/panda/robot.urdf nor example-robot-data's panda.urdf")


def build_chains(urdf: Path) -> tuple[KinematicChain, pk.SerialChain, pk.SerialChain]:
    """embodyhub chain, pytorch-kinematics chain in float32, and a float64 pk chain used for scoring IK."""
    eh = RobotModel.from_urdf(urdf).chain(BASE_LINK, TIP_LINK)
    data = urdf.read_bytes()
    with contextlib.redirect_stderr(io.StringIO()):  # pk's URDF parser warns about <dynamics> attributes
        pk32 = pk.build_serial_chain_from_urdf(data, TIP_LINK, BASE_LINK).to(dtype=DTYPE)
        pk64 = pk.build_serial_chain_from_urdf(data, TIP_LINK, BASE_LINK).to(dtype=torch.float64)
    pk_names = pk32.get_joint_parameter_names(exclude_fixed=True)
    if pk_names != eh.joint_names:
        raise RuntimeError(f"joint order differs: embodyhub {eh.joint_names} vs pytorch-kinematics {pk_names}")
    return eh, pk32, pk64


def random_q(chain: KinematicChain, n: int, seed: int) -> Tensor:
    """``n`` joint vectors uniform within the chain's limits (float32)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, chain.dof, generator=g, dtype=torch.float64)
    return (chain.lower + u * (chain.upper - chain.lower)).to(DTYPE)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------- timing
def _once(fn: Fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_group(fns: list[Fn], budget_s: float, min_rep: int, max_rep: int, warmup: int) -> list[list[float]]:
    """Warm every function up, pick the repeat count from one timed call of each so the group fits
    ``budget_s``, then time ``repeats`` rounds, one call of each per round, the order rotating
    from round to round. Returns one list of seconds per function."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    probe = sum(_once(fn) for fn in fns)
    repeats = max(min_rep, min(max_rep, int(budget_s / max(probe, 1e-9))))
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            times[i].append(_once(fns[i]))
    return times


def make_row(case: str, batch: int, t_eh: list[float], t_pk: list[float], scale: float = 1e3) -> Row:
    """Row from raw seconds; ``scale`` converts a sample to the reported unit (ms, or ms per target)."""
    s_eh = [t * scale for t in t_eh]
    s_pk = [t * scale for t in t_pk]
    return Row(case, batch, statistics.median(s_eh), statistics.median(s_pk), len(s_eh), s_eh, s_pk)


# ---------------------------------------------------------------------------- agreement
def check_agreement(eh: KinematicChain, pkc: pk.SerialChain, inputs: dict[int, Tensor]) -> dict[str, float]:
    """Max abs difference of FK, FK gradient and Jacobian between the libraries over all benchmark inputs."""
    diff = {"fk": 0.0, "fk_grad": 0.0, "jacobian": 0.0}
    for q in inputs.values():
        fk_diff = eh.forward_kinematics(q) - pkc.forward_kinematics(q).get_matrix()
        diff["fk"] = max(diff["fk"], fk_diff.abs().max().item())
        diff["jacobian"] = max(diff["jacobian"], (eh.jacobian(q) - pkc.jacobian(q)).abs().max().item())
        a = q.clone().requires_grad_(True)
        b = q.clone().requires_grad_(True)
        eh.forward_kinematics(a).sum().backward()
        pkc.forward_kinematics(b).get_matrix().sum().backward()
        diff["fk_grad"] = max(diff["fk_grad"], (a.grad - b.grad).abs().max().item())
    return diff


# ---------------------------------------------------------------------------- IK
def pose_errors(pk64: pk.SerialChain, q: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Position error norm and rotation angle of ``R_fk^T R_target`` (float64, pk's FK as the judge)."""
    T = pk64.forward_kinematics(q.to(torch.float64)).get_matrix()
    Tt = targets.to(torch.float64)
    pos = (T[:, :3, 3] - Tt[:, :3, 3]).norm(dim=-1)
    R = T[:, :3, :3].transpose(-1, -2) @ Tt[:, :3, :3]
    skew = torch.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], -1)
    cos = R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0
    rot = torch.atan2(skew.norm(dim=-1), cos)  # angle = atan2(sin, cos), each scaled by 2 here
    return pos, rot


def score_ik(eh: KinematicChain, pk64: pk.SerialChain, q: Tensor, targets: Tensor) -> dict[str, float]:
    """Success rate (within limits and both tolerances) and error statistics for solutions ``q``."""
    pos, rot = pose_errors(pk64, q, targets)
    qd = q.to(torch.float64)
    in_limits = ((qd >= eh.lower - LIMIT_SLACK) & (qd <= eh.upper + LIMIT_SLACK)).all(-1)
    ok = (pos <= TOL_POS) & (rot <= TOL_ROT) & in_limits
    return {
        "success": ok.double().mean().item(),
        "in_limits": in_limits.double().mean().item(),
        "pos_err_median_m": pos.median().item(),
        "rot_err_median_rad": rot.median().item(),
        "pos_err_max_m": pos.max().item(),
        "rot_err_max_rad": rot.max().item(),
    }


Solved = tuple[Tensor, float]  # (q [N, dof], the solver's own success fraction)


def pk_ik_solver(
    pkc: pk.SerialChain, targets: Tensor, limits: Tensor, params: dict[str, object]
) -> Callable[[], Solved]:
    """pytorch-kinematics IK returning one ``[N, dof]`` answer per target (a converged retry if any,
    else the lowest-error one) and pk's own success fraction."""
    accepted = inspect.signature(pk.InverseKinematics.__init__).parameters
    params = {k: v for k, v in params.items() if k in accepted}  # older pk releases lack some options
    tf = pk.Transform3d(matrix=targets)
    rows = torch.arange(targets.shape[0])

    def solve() -> Solved:
        torch.manual_seed(0)  # pk draws its retry seeds from the global generator in the constructor
        ik = pk.PseudoInverseIK(pkc, joint_limits=limits, pos_tolerance=TOL_POS, rot_tolerance=TOL_ROT, **params)
        sol = ik.solve(tf)
        cost = sol.err_pos / TOL_POS + sol.err_rot / TOL_ROT
        cost = torch.where(sol.converged, torch.full_like(cost, -1.0), cost)
        return sol.solutions[rows, cost.argmin(1)], sol.converged_any.double().mean().item()

    return solve


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier numbers)")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    # per case: seconds for the timed group, min/max repeats, warm-up calls
    fwd = (0.8, 3, 50, 2) if args.quick else (4.0, 5, 300, 5)
    ik_cfg = (2.0, 1, 2, 1) if args.quick else (25.0, 3, 9, 1)

    urdf = find_urdf()
    eh, pk32, pk64 = build_chains(urdf)
    print(f"embodyhub vs pytorch-kinematics: Franka Panda {BASE_LINK} -> {TIP_LINK} ({eh.dof} joints), float32, CPU")
    print(f"URDF: {urdf}")
    print(f"python {platform.python_version()} | torch {torch.__version__} | "
          f"pytorch-kinematics {metadata.version('pytorch_kinematics')} | embodyhub {metadata.version('embodyhub')}")
    print(f"threads: torch.get_num_threads() = {torch.get_num_threads()} | CPU: {cpu_model()}")
    print(f"mode: {'quick' if args.quick else 'full'}; median of interleaved repeats after warm-up")

    inputs = {b: random_q(eh, b, seed=b) for b in BATCHES}
    agree = check_agreement(eh, pk32, inputs)
    print(f"agreement on the benchmark inputs: max |FK diff| = {agree['fk']:.2e}, "
          f"max |Jacobian diff| = {agree['jacobian']:.2e}, max |d(sum FK)/dq diff| = {agree['fk_grad']:.2e}")
    if max(agree.values()) > FK_AGREE:
        print(f"ERROR: the libraries disagree by more than {FK_AGREE:g}; not timing", file=sys.stderr)
        return 1

    rows: list[Row] = []
    for batch, q in inputs.items():
        qg_eh = q.clone().requires_grad_(True)
        qg_pk = q.clone().requires_grad_(True)

        def bwd_eh() -> None:
            qg_eh.grad = None
            eh.forward_kinematics(qg_eh).sum().backward()

        def bwd_pk() -> None:
            qg_pk.grad = None
            pk32.forward_kinematics(qg_pk).get_matrix().sum().backward()

        cases: list[tuple[str, Fn, Fn]] = [
            ("FK", lambda: eh.forward_kinematics(q), lambda: pk32.forward_kinematics(q).get_matrix()),
            ("FK+backward", bwd_eh, bwd_pk),
            ("Jacobian", lambda: eh.jacobian(q), lambda: pk32.jacobian(q)),
        ]
        for name, f_eh, f_pk in cases:
            rows.append(make_row(name, batch, *time_group([f_eh, f_pk], *fwd)))
            print(f"  timed {name} batch {batch}: {rows[-1].repeats} repeats", flush=True)

    # IK: reachable targets from random in-limit configurations (fixed seed)
    q_goal = random_q(eh, IK_TARGETS, seed=1234)
    targets = pk64.forward_kinematics(q_goal.to(torch.float64)).get_matrix().to(DTYPE)
    limits = torch.stack([eh.lower, eh.upper], -1).to(DTYPE)
    out: dict[str, Solved] = {}

    def solve_eh() -> Solved:
        res = eh.inverse_kinematics(targets, seed=0)
        return res.q, res.success.double().mean().item()

    def keep(key: str, solve: Callable[[], Solved]) -> Fn:
        def run() -> None:
            out[key] = solve()

        return run

    ik_fns = [keep("embodyhub", solve_eh)]
    ik_fns += [keep(name, pk_ik_solver(pk32, targets, limits, cfg)) for name, cfg in PK_IK_CONFIGS.items()]
    t_ik = time_group(ik_fns, *ik_cfg)
    ik_rows = {name: make_row(f"IK/target pk-{name}", IK_TARGETS, t_ik[0], t_ik[1 + k], scale=1e3 / IK_TARGETS)
               for k, name in enumerate(PK_IK_CONFIGS)}
    rows += list(ik_rows.values())
    ik_scores = {key: score_ik(eh, pk64, q_sol, targets) | {"self_reported_success": reported}
                 for key, (q_sol, reported) in out.items()}
    print(f"  timed IK on {IK_TARGETS} targets: {len(t_ik[0])} repeats", flush=True)

    # ---------------------------------------------------------------- report
    print()
    header = (f"{'case':<18} | {'batch':>7} | {'embodyhub ms':>12} | {'pytorch-kinematics ms':>21} | "
              f"{'ratio (pk/eh)':>13} | {'n':>3}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.case:<18} | {r.batch:>7} | {r.embodyhub_ms:>12.4f} | {r.pk_ms:>21.4f} | "
              f"{r.ratio:>12.2f}x | {r.repeats:>3}")
    print("(n = timed repeats; IK rows: ms per target = time for the batch of all targets / number of targets)")
    print()
    print(f"IK on {IK_TARGETS} targets (success = |dp| <= {TOL_POS:g} m and angle <= {TOL_ROT:g} rad"
          " and within joint limits, recomputed here with float64 pytorch-kinematics FK of the returned q):")
    for key, sc in ik_scores.items():
        label = key if key == "embodyhub" else f"pk-{key}"
        print(f"  {label:<10} success {100 * sc['success']:6.2f}% | in limits {100 * sc['in_limits']:6.2f}% | "
              f"median err {sc['pos_err_median_m']:.1e} m / {sc['rot_err_median_rad']:.1e} rad | "
              f"max err {sc['pos_err_max_m']:.1e} m / {sc['rot_err_max_rad']:.1e} rad | "
              f"solver's own success flag {100 * sc['self_reported_success']:.2f}%")
    print("  embodyhub: chain.inverse_kinematics(T, seed=0), default parameters")
    for name, cfg in PK_IK_CONFIGS.items():
        print(f"  pk-{name}: pk.PseudoInverseIK(chain, joint_limits=<URDF limits>, pos_tolerance={TOL_POS:g}, "
              f"rot_tolerance={TOL_ROT:g}, " + ", ".join(f"{k}={v}" for k, v in cfg.items()) + ")")
    print("  pk: .solve(pk.Transform3d(matrix=T)), then per target a converged retry (else the lowest-error one);"
          " the timing includes the solver's construction and that pick")

    fk_big = next(r for r in rows if r.case == "FK" and r.batch == BATCHES[-1])
    fk_one = next(r for r in rows if r.case == "FK" and r.batch == 1)
    verdict = {True: "PASS", False: "FAIL"}
    acceptance: dict[str, dict[str, object]] = {
        "fk_100k_speedup": {"value": fk_big.ratio, "target": ">= 5x", "pass": fk_big.ratio >= 5.0},
        "fk_batch1_ms": {"value": fk_one.embodyhub_ms, "target": "<= 0.5 ms", "pass": fk_one.embodyhub_ms <= 0.5},
    }
    for name, r in ik_rows.items():
        s_eh, s_pk = ik_scores["embodyhub"]["success"], ik_scores[name]["success"]
        acceptance[f"ik_per_target_speedup_vs_pk_{name}"] = {
            "value": r.ratio, "target": ">= 3x at equal or better success", "success_embodyhub": s_eh,
            "success_pk": s_pk, "pass": r.ratio >= 3.0 and s_eh >= s_pk,
        }
    print()
    print("acceptance:")
    a_big, a_one = acceptance["fk_100k_speedup"], acceptance["fk_batch1_ms"]
    print(f"  FK batch {BATCHES[-1]} speedup: {fk_big.ratio:.2f}x (target >= 5x): {verdict[bool(a_big['pass'])]}")
    print(f"  FK batch 1 embodyhub: {fk_one.embodyhub_ms:.4f} ms (target <= 0.5 ms): {verdict[bool(a_one['pass'])]}")
    for name, r in ik_rows.items():
        a_ik = acceptance[f"ik_per_target_speedup_vs_pk_{name}"]
        primary = " [primary: pk's highest-success setting]" if name == "best" else " [secondary]"
        print(f"  IK per-target speedup vs pk-{name}: {r.ratio:.2f}x (target >= 3x) at success "
              f"{100 * a_ik['success_embodyhub']:.2f}% vs {100 * a_ik['success_pk']:.2f}% (needs >=): "
              f"{verdict[bool(a_ik['pass'])]}{primary}")
    elapsed = time.perf_counter() - t_start
    print(f"total wall time {elapsed:.1f} s")

    if args.json is not None:
        result = {
            "robot": "panda", "urdf": str(urdf), "chain": [BASE_LINK, TIP_LINK], "dtype": "float32", "device": "cpu",
            "torch": torch.__version__, "pytorch_kinematics": metadata.version("pytorch_kinematics"),
            "embodyhub": metadata.version("embodyhub"), "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "quick": args.quick,
            "agreement_max_abs_diff": agree,
            "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
            "ik": {"targets": IK_TARGETS, "tol_pos_m": TOL_POS, "tol_rot_rad": TOL_ROT,
                   "scores": ik_scores, "pk_configs": PK_IK_CONFIGS,
                   "embodyhub_call": "chain.inverse_kinematics(T, seed=0)"},
            "acceptance": acceptance, "wall_time_s": elapsed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
