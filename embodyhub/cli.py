"""The ``embodyhub`` command line (also ``python -m embodyhub.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from .errors import EmbodyHubError


def _robot_summary(name: str) -> dict[str, Any]:
    from .embodiment import CanonicalActionSpace, load_robot

    emb = load_robot(name)
    card = emb.to_card()
    return {
        "name": emb.name,
        "dof": emb.dof,
        "control_hz": emb.control_hz,
        "arms": card["arms"],
        "grippers": card["grippers"],
        "joints": card["joints"],
        "canonical_slots": CanonicalActionSpace().filled_slots(emb),
        "urdf_sha256": emb.urdf_sha256,
    }


def _cmd_robots_list(args: argparse.Namespace) -> int:
    from .embodiment import list_robots

    rows = [_robot_summary(name) for name in list_robots()]
    if args.json:
        print(json.dumps([{k: r[k] for k in ("name", "dof", "control_hz")} | {"arms": len(r["arms"])} for r in rows], indent=2))
        return 0
    print(f"{'robot':<14} {'dof':>4} {'arms':>5} {'grippers':>9} {'hz':>6}")
    for r in rows:
        print(f"{r['name']:<14} {r['dof']:>4} {len(r['arms']):>5} {len(r['grippers']):>9} {r['control_hz']:>6g}")
    return 0


def _fmt(v: float | None) -> str:
    return "unbounded" if v is None else f"{v:+.4f}"


def _cmd_robots_show(args: argparse.Namespace) -> int:
    info = _robot_summary(args.name)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {info['dof']} DoF, control {info['control_hz']:g} Hz, URDF sha256 {info['urdf_sha256'][:16]}...")
    for arm in info["arms"]:
        print(f"  arm {arm['name']}: {arm['base']} -> {arm['tip']} ({len(arm['joints'])} joints)")
    for g in info["grippers"]:
        print(f"  gripper of arm{g['arm']}: {g['joint']} (open = {g['open']} limit)")
    print(f"  {'joint':<28} {'type':<10} {'role':<9} {'lower':>10} {'upper':>10} {'vel':>8}")
    for j in info["joints"]:
        vel = "-" if j["velocity"] is None else f"{j['velocity']:.3g}"
        print(f"  {j['name']:<28} {j['type']:<10} {j['role']:<9} {_fmt(j['lower']):>10} {_fmt(j['upper']):>10} {vel:>8}")
    print("  canonical slots filled: " + ", ".join(info["canonical_slots"]))
    return 0


def _cmd_urdf_check(args: argparse.Namespace) -> int:
    from .kinematics import RobotModel

    try:
        robot = RobotModel.from_urdf(args.path)
    except EmbodyHubError as exc:
        if args.json:
            print(json.dumps({"ok": False, "path": args.path, "error": str(exc)}))
        else:
            print(f"{args.path}: REJECTED: {exc}", file=sys.stderr)
        return 1
    types: dict[str, int] = {}
    for joint in robot.joints.values():
        types[joint.type] = types.get(joint.type, 0) + 1
    leaves = sorted(set(robot.links) - {j.parent for j in robot.joints.values()})
    summary = {
        "ok": True,
        "path": args.path,
        "name": robot.name,
        "root_link": robot.root_link,
        "links": len(robot.links),
        "joints": len(robot.joints),
        "joint_types": types,
        "actuated_joints": robot.actuated_joint_names,
        "mimic_joints": [j.name for j in robot.joints.values() if j.mimic is not None],
        "leaf_links": leaves,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
        print(f"{args.path}: OK: robot '{robot.name}', root '{robot.root_link}', {len(robot.links)} links, {len(robot.joints)} joints ({kinds})")
        print(f"  actuated: {len(summary['actuated_joints'])}; mimic: {len(summary['mimic_joints'])}; leaf links: {', '.join(leaves)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import run_demo

    report = run_demo(Path(args.out), robots=args.robot or None, smoke=args.smoke)
    print(f"report: {report.resolve()}")
    return 0


def _recipe_path(path: str) -> str:
    """A recipe file, or the name of a bundled one (``pretrain_tiny``)."""
    from importlib import resources
    from pathlib import Path

    if Path(path).is_file():
        return path
    bundled = Path(str(resources.files("embodyhub.recipes"))) / f"{Path(path).stem}.yaml"
    if bundled.is_file():
        return str(bundled)
    raise FileNotFoundError(f"no recipe file '{path}' and no bundled recipe named '{Path(path).stem}'")


def _report_eval(results: dict[str, Any], out: Any, title: str) -> None:
    from .training import plot_results

    out.mkdir(parents=True, exist_ok=True)
    summary = {
        name: {k: r[k] for k in ("episodes", "success_rate", "pos_err", "rot_err", "steps")} for name, r in results.items()
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    png = plot_results(results, out / "eval.png", title)
    print(f"{'robot':<14} {'success':>8} {'pos err (m)':>12} {'rot err':>8} {'steps':>6}")
    for name, r in summary.items():
        print(f"{name:<14} {r['success_rate']:>8.1%} {r['pos_err']:>12.4f} {r['rot_err']:>8.3f} {r['steps']:>6.1f}")
    print(f"eval: {out / 'eval.json'} and {png}")


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .embodiment import load_robot
    from .training import PretrainRecipe, build, evaluate_reach, prepare_data, train

    recipe = PretrainRecipe.from_yaml(_recipe_path(args.recipe), train_steps=args.steps, episodes_per_robot=args.episodes)
    out = Path(args.out)
    datasets = prepare_data(recipe, out / "data")
    model, processor = build(recipe)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"training a {n_params / 1e6:.2f}M-parameter WAM on {', '.join(recipe.robots)} for {recipe.train_steps} steps")
    log = train(
        model, processor, datasets, recipe.train_steps, recipe.batch_size, recipe.learning_rate,
        recipe.weight_decay, recipe.warmup_steps, recipe.seed,
    )
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    (out / "train_log.json").write_text(json.dumps(log))
    print(f"model: {out / 'model'} ({log[-1]['seconds']:.0f} s of training, final loss {log[-2]['loss']:.3f})")
    robots = [processor.resolve(n) for n in recipe.robots] + [load_robot(n) for n in recipe.held_out]
    results = evaluate_reach(
        model, processor, robots, recipe.eval_episodes, recipe.eval_max_steps, goal_distance=recipe.goal_distance
    )
    _report_eval(results, out, f"reach (held out: {', '.join(recipe.held_out) or 'none'})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from transformers import AutoModel, AutoProcessor

    from .embodiment import load_robot
    from .training import evaluate_reach

    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    names = args.robot or processor.embodiment_names
    robots = [processor.embodiments[n] if n in processor.embodiments else load_robot(n) for n in names]
    results = evaluate_reach(model, processor, robots, args.episodes, args.max_steps, args.seed, goal_distance=args.goal_distance)
    _report_eval(results, Path(args.out), "reach")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embodyhub", description="Robot World-Action Models from your URDF.")
    sub = parser.add_subparsers(dest="command", required=True)

    robots = sub.add_parser("robots", help="bundled robots").add_subparsers(dest="robots_command", required=True)
    p = robots.add_parser("list", help="list bundled robots")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_robots_list)
    p = robots.add_parser("show", help="DoF, chains, limits and canonical slots of one robot")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_robots_show)

    urdf = sub.add_parser("urdf", help="URDF tools").add_subparsers(dest="urdf_command", required=True)
    p = urdf.add_parser("check", help="validate a URDF (exit 0 if usable, 1 with the reason if not)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_urdf_check)

    p = sub.add_parser("train", help="pretrain a tiny WAM from a recipe, then evaluate it")
    p.add_argument("--recipe", default="pretrain_tiny", help="recipe YAML (or a bundled recipe name)")
    p.add_argument("--out", required=True, help="output folder: data/, model/, eval.json, eval.png")
    p.add_argument("--steps", type=int, help="override train_steps")
    p.add_argument("--episodes", type=int, help="override episodes_per_robot")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="closed-loop reach success of a saved WAM per robot")
    p.add_argument("--model", required=True, help="folder (or Hub id) with the model and processor")
    p.add_argument("--robot", action="append", help="bundled robot (repeatable; default: the model's robots)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--goal-distance", type=float, default=0.3, help="goal offset per joint from the start (rad or m)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", default="embodyhub-eval")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("demo", help="run the end-to-end walk-through and write a report")
    p.add_argument("--out", default="embodyhub-demo", help="output folder (default: ./embodyhub-demo)")
    p.add_argument("--robot", action="append", help="limit to these bundled robots (repeatable)")
    p.add_argument("--smoke", action="store_true", help="reduced size, for CI")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EmbodyHubError as exc:
        print(f"embodyhub: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
