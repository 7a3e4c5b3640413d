"""The ``embodyhub`` command line (also ``python -m embodyhub.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn, Sequence

from . import __version__
from .console import choose_threads, describe_error, hub_unreachable_reason, quiet_output, using_threads
from .errors import EmbodyHubError
from .recipes import recipe_path as _recipe_path


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
    from .embodiment.registry import list_robots, robot_card

    rows = [robot_card(name) for name in list_robots()]  # the cards alone: no robot is built, torch is not imported
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
    from .kinematics.urdf import RobotModel

    if not Path(args.path).is_file():
        raise EmbodyHubError(f"no URDF file {args.path}" + (" (it is a folder)" if Path(args.path).is_dir() else ""))
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
    leaves = robot.leaf_links
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
    from .demo import run_demo

    report = run_demo(
        Path(args.out), robot=args.robot, smoke=args.smoke, skip=args.skip, recipe=args.recipe, verbose=_verbose(args)
    )
    print(f"report: {report.resolve()}")
    return 0


def _model_dir(value: str | None, what: str = "model") -> str:
    """``--model``/``--base``/``--adapter``: a folder or Hub id (the model defaults to the tiny base shipped in
    the package). A folder must hold a ``config.json`` (``adapter_config.json`` for an adapter); a Hub id is
    checked for reachability first, so an offline machine fails at once instead of after retries."""
    from .pretrained import tiny_base

    if value is None:
        return str(tiny_base())
    marker = "adapter_config.json" if what == "adapter" else "config.json"
    path = Path(value).expanduser()
    if path.exists():
        if not (path / marker).is_file():
            raise EmbodyHubError(f"{value} is not a saved {what} (no {marker} in it): give the folder `embodyhub "
                                 f"{'adapt' if what == 'adapter' else 'train'}` wrote, or a Hub id")
        return str(path)
    if value.startswith((".", "/", "~")) or value.count("/") > 1:
        raise EmbodyHubError(f"no {what} folder {value}: check the path")
    reason = hub_unreachable_reason()
    if reason is not None:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(value, marker), str):
            raise EmbodyHubError(f"{value} is not a folder here and the Hub is unreachable ({reason}), nor is it in the "
                                 f"local cache: give a local {what} folder, or connect and retry")
        import huggingface_hub.constants

        # Cached: load it without trying the network (the constant is what huggingface_hub reads once imported).
        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    return value


def _report_eval(results: dict[str, Any], out: Path, title: str, baselines: Sequence[str] = ()) -> None:
    """``eval.json`` + ``eval.png`` + a table; rows named in ``baselines`` are marked as comparisons (a card's
    model-index leaves them out)."""
    from .training import plot_results

    out.mkdir(parents=True, exist_ok=True)
    summary = {
        name: {k: r[k] for k in ("episodes", "success_rate", "pos_err", "rot_err", "steps")} | ({"baseline": True} if name in baselines else {})
        for name, r in results.items()
    }
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    png = plot_results(results, out / "eval.png", title)
    print(f"{'robot':<14} {'success':>8} {'pos err (m)':>12} {'rot err':>8} {'steps':>6}")
    for name, r in summary.items():
        print(f"{name:<14} {r['success_rate']:>8.1%} {r['pos_err']:>12.4f} {r['rot_err']:>8.3f} {r['steps']:>6.1f}")
    print(f"eval: {out / 'eval.json'} and {png}")


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .embodiment import load_robot
    from .training import PretrainRecipe, build, evaluate_reach, prepare_data, train

    recipe = PretrainRecipe.from_yaml(_recipe_path(args.recipe), train_steps=args.steps)
    if args.episodes is not None:
        recipe = dataclasses.replace(recipe, **{"episodes_per_task" if recipe.source == "sim" else "episodes_per_robot": args.episodes})
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
    if recipe.source == "sim":
        from .envs.sim import EVAL_SEED_BASE, ModelPolicy, evaluate_policy

        if recipe.eval_episodes:
            policy = ModelPolicy(str(out / "model"))
            rows = [evaluate_policy(task, robot, recipe.eval_episodes, EVAL_SEED_BASE, recipe.workers, policy=policy)
                    for robot in [*recipe.robots, *recipe.held_out] for task in recipe.tasks]
            _report_sim_eval(rows, out, f"wam success (held out: {', '.join(recipe.held_out) or 'none'}; {recipe.eval_episodes} episodes each)")
        return 0
    robots = [processor.resolve(n) for n in recipe.robots] + [load_robot(n) for n in recipe.held_out]
    results = evaluate_reach(
        model, processor, robots, recipe.eval_episodes, recipe.eval_max_steps, goal_distance=recipe.goal_distance
    )
    _report_eval(results, out, f"reach (held out: {', '.join(recipe.held_out) or 'none'})")
    return 0


def _cmd_transfer(args: argparse.Namespace, base: str) -> int:
    from .embodiment import Embodiment
    from .training import AdaptRecipe, plot_results
    from .training.transfer import format_table, transfer_benchmark

    if not args.robot or len(args.robot) != 1:
        raise EmbodyHubError("--transfer measures one robot: give exactly one --robot (one held out from pretraining)")
    emb = Embodiment.from_pretrained(args.robot[0])
    recipe = AdaptRecipe.from_yaml(
        _recipe_path(args.recipe), eval_episodes=args.episodes, eval_max_steps=args.max_steps, goal_distance=args.goal_distance
    )
    out = Path(args.out)
    rows, results = transfer_benchmark(base, emb, recipe, out / "data", args.demos)
    table = format_table(rows, emb.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(rows, indent=2))
    (out / "transfer.md").write_text(table + "\n")
    png = plot_results(results, out / "transfer.png", f"transfer to {emb.name}")
    print(table)
    print(f"transfer: {out / 'transfer.json'}, {out / 'transfer.md'} and {png}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.env:
        return _cmd_sim_eval(args)
    base = _model_dir(args.model)  # before the heavy imports: a wrong path fails at once
    from transformers import AutoModel, AutoProcessor

    from .embodiment import load_robot
    from .training import evaluate_reach

    if args.transfer:
        return _cmd_transfer(args, base)
    model = AutoModel.from_pretrained(base).eval()
    processor = AutoProcessor.from_pretrained(base)
    names = args.robot or processor.embodiment_names
    robots = [processor.embodiments[n] if n in processor.embodiments else load_robot(n) for n in names]
    seed = 1234 if args.seed is None else args.seed
    results = evaluate_reach(model, processor, robots, args.episodes, args.max_steps, seed, goal_distance=args.goal_distance)
    _report_eval(results, Path(args.out), "closed-loop reach success per robot")
    return 0


def _cmd_sim_eval(args: argparse.Namespace) -> int:
    """``eval --env``: closed-loop success on the manipulation benchmark (robosuite)."""
    from pathlib import Path

    from .envs.sim import EVAL_SEED_BASE, BundlePolicy, ModelPolicy, evaluate_policy, sim_robot, sim_task

    policy = args.policy or ("wam" if args.model or args.adapter or args.bundle else "expert")
    model: ModelPolicy | BundlePolicy | None = None
    if args.bundle and (args.model or args.adapter or policy == "expert"):
        raise EmbodyHubError("--bundle is the policy: give it without --model, --adapter or --policy expert")
    if policy == "wam" and args.bundle:
        model = BundlePolicy(_bundle_dir(args.bundle, args.robot or []))
    elif policy == "wam":
        if not args.model:
            raise EmbodyHubError("eval --env with a WAM needs --model (or --bundle): a model trained on the simulator "
                                 "(`embodyhub train --recipe pretrain_sim`), not the goal-based tiny base")
        model = ModelPolicy(_model_dir(args.model), _model_dir(args.adapter, "adapter") if args.adapter else None)
    elif args.adapter:
        raise EmbodyHubError("--adapter goes with --model (a WAM policy), not with --policy expert")
    if not args.robot:
        raise EmbodyHubError("eval --env needs --robot (repeatable)")
    tasks = [t.strip() for t in args.env.split(",")]
    for name in tasks:
        sim_task(name)
    for name in args.robot:
        sim_robot(name)
    seed = EVAL_SEED_BASE if args.seed is None else args.seed
    out = Path(args.out)
    rows = [evaluate_policy(task, robot, args.episodes, seed, args.workers, control=args.control,
                            videos=args.video, video_dir=out / "videos", policy=model)
            for robot in args.robot for task in tasks]
    _report_sim_eval(rows, out, f"{policy} success ({args.control} control, {args.episodes} episodes each)")
    return 0


def _bundle_dir(value: str, robots: Sequence[str]) -> str:
    """``eval --bundle``: an export bundle folder, verified against its manifest, with a graph for each of ``robots``
    (checked here, before any worker process starts)."""
    from .export.thor import verify_bundle

    manifest = verify_bundle(value)
    have = [e["robot"] for e in manifest["embodiments"]]
    missing = [r for r in robots if r.lower() not in have]
    if missing:
        raise EmbodyHubError(f"the bundle {value} has no policy graph for {', '.join(missing)} (it has {', '.join(have)}): "
                             f"export one with `embodyhub export --model DIR --robot {missing[0]}`")
    return value


def _report_sim_eval(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """``eval.json``, ``eval.png`` and a table of simulator evaluation rows (``evaluate_policy``)."""
    from .envs.sim.report import plot_success, row_label

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(rows, indent=2) + "\n")
    png = plot_success(rows, out / "eval.png", title)
    width = max(10, *(len(row_label(r)) for r in rows))
    print(f"{'robot':<{width}} {'task':<6} {'success':>8} {'mean steps':>11} {'CPU-s/ep':>9}")
    for r in rows:
        print(f"{row_label(r):<{width}} {r['task']:<6} {r['success_rate']:>8.0%} {r['mean_steps']:>11.1f} {r['cpu_s_per_episode']:>9.2f}")
    videos = [v for r in rows for v in r["videos"]]
    print(f"eval: {out / 'eval.json'} and {png}" + (f"; {len(videos)} rollout videos in {out / 'videos'}" if videos else ""))


def _cmd_collect(args: argparse.Namespace) -> int:
    from .envs.sim import collect

    tasks = [t.strip() for t in args.env.split(",")]
    out = collect(tasks, args.robot, args.episodes, args.out, workers=args.workers, gripper=args.gripper,
                  camera=args.camera, image_size=args.image_size, visual_meshes=args.visual_meshes, first_seed=args.first_seed,
                  start_spread=args.start_spread)
    print(f"dataset: {out}")
    return 0


def _embodiment_from_args(args: argparse.Namespace) -> Any:
    """``--robot``: a bundled robot name, a folder with ``embodiment.json``, or a URDF file with ``--arm``."""
    from .embodiment import Embodiment
    from .kinematics import RobotModel

    if not Path(args.robot).is_file():
        if args.robot.lower().endswith((".urdf", ".xml")):
            raise EmbodyHubError(f"no URDF file {args.robot}: check the path")
        return Embodiment.from_pretrained(args.robot)
    if not args.arm:
        robot = RobotModel.from_urdf(args.robot)
        raise EmbodyHubError(
            f"{args.robot} is a URDF: say which chains are arms with --arm BASE:TIP "
            f"(root link '{robot.root_link}'; leaf links: {', '.join(robot.leaf_links)})"
        )
    arms = [tuple(a.split(":", 1)) for a in args.arm]
    if any(len(a) != 2 for a in arms):
        raise EmbodyHubError(f"--arm takes BASE:TIP link names, got {args.arm}")
    return Embodiment.from_urdf(args.robot, arms=arms, grippers=args.gripper or (), control_hz=args.control_hz, name=args.name)


def _base_config(base: str) -> dict[str, Any] | None:
    """The base's ``config.json`` (a local folder, or a Hub id through huggingface_hub's cache and download),
    read without importing transformers; None where it cannot be had."""
    path = Path(base, "config.json")
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(base, "config.json"))
        except Exception:  # noqa: BLE001 - offline, no such repo, not a repo id: the loader will say which
            return None
    return json.loads(path.read_text())


def _adapt_tasks(args: argparse.Namespace) -> list[str] | None:
    """``adapt --env``: the robosuite tasks, checked with ``--robot`` (a simulator arm) before anything loads; None
    without ``--env``."""
    if not args.env:
        return None
    from .envs.sim import sim_robot, sim_task

    urdf_options = [flag for flag, value in (("--arm", args.arm), ("--gripper", args.gripper), ("--name", args.name)) if value]
    if urdf_options:
        raise EmbodyHubError(f"{', '.join(urdf_options)} describe a URDF robot; with --env, --robot is a simulator arm")
    tasks = [t.strip().lower() for t in args.env.split(",")]
    for task in tasks:
        sim_task(task)
    sim_robot(args.robot)
    return tasks


def _adapt_data(data: str | None, robot: str, tasks: list[str] | None) -> list[Path]:
    """``adapt --data``: the dataset folder, or with ``--env`` a folder holding one dataset per task named
    ``ROBOT-TASK`` (the ``data/`` folder of an earlier ``adapt --env`` or ``train`` run); none without ``--data``."""
    if data is None:
        return []
    path = Path(data)
    if not path.is_dir():
        raise EmbodyHubError(f"no dataset folder {data}: give a LeRobot v3 dataset folder, or leave --data out")
    if tasks is None or (path / "meta" / "info.json").is_file():
        return [path]
    folders = [path / f"{robot}-{task}" for task in tasks]
    missing = [f.name for f in folders if not (f / "meta" / "info.json").is_file()]
    if missing:
        raise EmbodyHubError(f"{data} is no LeRobot dataset and lacks {', '.join(missing)}: give a dataset of the arm's demos "
                             f"(`embodyhub collect`) or the data/ folder of an earlier `embodyhub adapt --env` run")
    return folders


def _cmd_adapt(args: argparse.Namespace) -> int:
    base = _model_dir(args.base)  # the arguments first: a wrong path or link fails before the model loads
    tasks = _adapt_tasks(args)
    recipe_file = _recipe_path(args.recipe or ("adapt_sim" if tasks else "adapt_lora"))
    from .data import check_features, is_v2, needed_features

    config = _base_config(base) if tasks or args.data else None
    if tasks and config is not None and not is_v2(config):
        raise EmbodyHubError(f"{base} is a goal-reaching base: --env needs a base trained on the simulator "
                             f"(`embodyhub train --recipe pretrain_sim`)")
    data = _adapt_data(args.data, args.robot.lower(), tasks)
    for folder in data if config is not None else ():  # else adapt() checks once the model is loaded
        check_features(folder, needed_features(config))
    if tasks:
        from .envs.sim import sim_embodiment

        emb = sim_embodiment(args.robot)
    else:
        emb = _embodiment_from_args(args)
    import dataclasses

    import yaml
    from transformers import AutoModel, AutoProcessor

    from .data import load_dataset
    from .training import AdaptRecipe, adapt, collect_sim, demos_per_task, evaluate_reach, prepare_data, save_adapter, trainable_share
    from .training.transfer import folder_bytes

    recipe = AdaptRecipe.from_yaml(recipe_file, episodes=args.episodes, train_steps=args.steps, workers=args.workers, tasks=tasks)
    out = Path(args.out)
    model = AutoModel.from_pretrained(base).eval()
    processor = AutoProcessor.from_pretrained(base)
    if data:
        datasets = {emb.name if len(data) == 1 else folder.name: load_dataset(folder) for folder in data}
    elif tasks:
        datasets = collect_sim(out / "data", [emb], tasks, recipe.episodes, recipe.workers, recipe.start_spread)
    else:
        datasets = prepare_data(recipe, out / "data", robots=[emb], episodes=recipe.episodes)
    if tasks and data:
        _check_tasks(datasets, tasks, args.data)
    used = demos_per_task(datasets, recipe.episodes)
    method, subject = ("full fine-tuning", "the fine-tuned model") if args.full_finetune else ("LoRA", "the adapter")
    reach_eval = recipe.eval_episodes and not tasks and not is_v2(model.config.to_dict())
    eval_args = (recipe.eval_episodes, recipe.eval_max_steps)
    before = evaluate_reach(model, processor, [emb], *eval_args, goal_distance=recipe.goal_distance) if reach_eval else None
    model, log = adapt(model, processor, emb, datasets, recipe, full_finetune=args.full_finetune)
    if args.full_finetune:
        folder = out / "model"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    else:
        folder = save_adapter(model, emb, out / "adapter")
    (out / "adapt_log.json").write_text(json.dumps(log))
    (out / "adapt_recipe.yaml").write_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False))
    print(
        f"{'model' if args.full_finetune else 'adapter'}: {folder} ({folder_bytes(folder) / 1e6:.2f} MB, {trainable_share(model):.2%} of the "
        f"parameters trained on {used} demos per task ({sum(ds.num_episodes for ds in datasets.values())} episodes in the data), "
        f"{log[-1]['seconds']:.0f} s)"
    )
    if tasks and recipe.eval_episodes:
        from .envs.sim import ModelPolicy

        adapted = ModelPolicy(str(folder)) if args.full_finetune else ModelPolicy(base, str(folder))
        _adapt_sim_eval(ModelPolicy(base), adapted, emb.name, tasks, recipe, out, method, subject, used)
    elif before is not None:
        after = evaluate_reach(model, processor, [emb], *eval_args, goal_distance=recipe.goal_distance)
        _report_eval({f"{emb.name} zero-shot": before[emb.name], f"{emb.name} {method}": after[emb.name]}, out,
                     f"reach before/after {method}", baselines=[f"{emb.name} zero-shot"])
        if after[emb.name]["success_rate"] < before[emb.name]["success_rate"]:
            # Cloning a slow, velocity-saturated demonstrator can do worse than the base (README, "Transfer").
            grpo = f"--model {folder} --robot {emb.name}" if args.full_finetune else f"--adapter {folder}"
            print(
                f"warning: {subject} reaches fewer targets than the base did zero-shot on the same goals "
                f"({after[emb.name]['success_rate']:.0%} vs {before[emb.name]['success_rate']:.0%}); post-train it on "
                f"the task with `embodyhub grpo {grpo}`, or keep the base for this robot"
            )
    elif recipe.eval_episodes and not tasks:
        print(f"reach evaluation skipped: {base} is a v2 base, not trained on kinematic reach; give --env TASKS to evaluate "
              f"in the simulator")
    _write_card(folder, base, out)
    return 0


def _check_tasks(datasets: dict[str, Any], tasks: list[str], where: str) -> None:
    """``adapt --env --data``: the data must hold demos of every task the adapter is evaluated on."""
    from .envs.sim import sim_task

    held = {task for ds in datasets.values() for task in ds.task_episodes}
    lacking = [t for t in tasks if sim_task(t).description not in held]
    if lacking:
        raise EmbodyHubError(f"{where} holds no demos of {', '.join(lacking)} (it has: {', '.join(sorted(held))})")


def _adapt_sim_eval(base: Any, adapted: Any, robot: str, tasks: list[str], recipe: Any, out: Path, method: str, subject: str,
                    demos: int) -> None:
    """``adapt --env``: the ``base`` policy zero-shot (baseline rows) and the ``adapted`` one (``ModelPolicy``), on
    each task's evaluation seeds; warns where the adapted model does worse than the base."""
    from .envs.sim import EVAL_SEED_BASE, evaluate_policy

    rows = [
        {**evaluate_policy(task, robot, recipe.eval_episodes, EVAL_SEED_BASE, recipe.workers, policy=policy), "method": label}
        | ({"baseline": True} if policy is base else {})
        for label, policy in (("zero-shot", base), (method, adapted)) for task in tasks
    ]
    _report_sim_eval(rows, out, f"{robot}: zero-shot vs {method} on {demos} demos per task ({recipe.eval_episodes} episodes each)")
    worse = [f"{a['task']} ({a['success_rate']:.0%} vs {z['success_rate']:.0%})"
             for z, a in zip(rows[: len(tasks)], rows[len(tasks):]) if a["success_rate"] < z["success_rate"]]
    if worse:
        print(f"warning: {subject} succeeds less often than the base "
              f"did zero-shot on the same evaluation seeds: {', '.join(worse)}; train on more demos (--episodes) or longer "
              f"(--steps), or keep the base for this robot")


def _write_card(folder: Path, base: str, out: Path) -> None:
    """The saved folder's ``README.md``: its model card (robot card and sha256, recipe, evaluation with the command
    that reruns it) as ``embodyhub push`` renders it, with the local paths in place of Hub ids."""
    from .hub import render_card
    from .hub.cards import EVAL_FILE

    evaluation = out / EVAL_FILE
    card = render_card(folder, str(folder), base_model=base, eval_path=evaluation if evaluation.is_file() else None,
                       recipe_path=out / "adapt_recipe.yaml")
    (folder / "README.md").write_text(card.text)


def _cmd_grpo(args: argparse.Namespace) -> int:
    base = _model_dir(args.model)  # the arguments first: a wrong path fails before the model loads
    adapter = _model_dir(args.adapter, "adapter") if args.adapter else None
    if not (adapter or args.robot):
        raise EmbodyHubError("give --robot (or --adapter, whose folder names the robot)")
    recipe_file = _recipe_path(args.recipe)
    import torch
    from transformers import AutoModel, AutoProcessor

    from .embodiment import load_robot
    from .training.grpo import GrpoRecipe, run_grpo, trainable_adapter
    from .training.lora import attach_adapter, load_adapter, lora_config

    recipe = GrpoRecipe.from_yaml(recipe_file, steps=args.steps, time_budget_s=args.time_budget)
    model = AutoModel.from_pretrained(base)
    processor = AutoProcessor.from_pretrained(base)
    if adapter:  # the adapter folder carries its robot's card and URDF
        model, emb = load_adapter(model, adapter)
        if args.robot and args.robot != emb.name:
            raise EmbodyHubError(f"--robot {args.robot} but the adapter {args.adapter} is for '{emb.name}'")
        trainable_adapter(model)
    else:
        emb = processor.embodiments[args.robot] if args.robot in processor.embodiments else load_robot(args.robot)
    torch.manual_seed(recipe.seed)  # before a new adapter: peft draws its initial weights from the global generator
    if args.lora and not args.adapter:
        model = attach_adapter(model, emb, lora_config(**recipe.lora))
    result = run_grpo(model, processor, [emb], recipe, Path(args.out), verbose=_verbose(args))
    history = result["history"]
    print(f"{'step':>6} {'success':>8} {'seconds':>8}")
    for entry in history:
        print(f"{entry['step']:>6} {entry[emb.name]:>8.1%} {entry['seconds']:>8.0f}")
    print(f"grpo: {Path(args.out) / 'model'}, {Path(args.out) / 'grpo_log.json'} and {result.get('curve')}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from .hub import find_eval, publish, render_card

    eval_path = args.eval or find_eval(args.dir)
    try:  # render once offline first: a folder or card problem is a usage error, reported before any upload
        render_card(args.dir, args.repo, kind=args.kind, base_model=args.base_model, eval_path=eval_path, recipe_path=args.recipe)
    except (FileNotFoundError, ValueError) as exc:
        raise EmbodyHubError(str(exc)) from exc
    try:
        result = publish(
            args.dir, args.repo, private=args.private or None, kind=args.kind, base_model=args.base_model,
            license=args.license, datasets=args.dataset or (), eval_path=eval_path, recipe_path=args.recipe,
            commit_message=args.message, revision=args.revision, dry_run=args.dry_run,
        )
    except HfHubHTTPError.__bases__ as exc:  # the HTTP client's errors and OSError (a dropped connection)
        print(f"embodyhub: upload to {args.repo} failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); nothing was committed "
              f"and {args.dir} is untouched: run the same command again to retry", file=sys.stderr)
        return 1
    verb = "would upload" if result.dry_run else "uploaded"
    print(f"{result.kind} {Path(args.dir)} -> {result.repo_id}: {verb} {len(result.files)} files"
          + (f" (eval: {eval_path})" if eval_path else ""))
    for path, size in result.files:
        print(f"  {size:>12,d}  {path}")
    for note in result.notes:
        print(f"  {note}")
    if result.dry_run:
        print("\n" + result.card)
    else:
        print(f"commit {result.commit_oid}: {result.commit_url}")
    return 0


def _export_robot(processor: Any, name: str) -> Any:
    """``export --robot`` for a robot the model's processor has no card for: a simulator arm when the model's
    robots are (cards read from robosuite's MJCF), else a bundled robot or an embodiment folder."""
    from .embodiment import Embodiment

    if any(emb.mjcf for emb in processor.embodiments.values()):
        from .envs.sim import sim_embodiment

        return sim_embodiment(name)
    return Embodiment.from_pretrained(name)


def _cmd_export(args: argparse.Namespace) -> int:
    base = _model_dir(args.model)  # the arguments first: a wrong path fails before the heavy imports
    adapter = _model_dir(args.adapter, "adapter") if args.adapter else None
    recipe_file = _recipe_path(args.recipe)
    from .export.thor import ExportRecipe, build_bundle, load_model

    recipe = ExportRecipe.from_yaml(recipe_file, precision=args.precision)
    model, processor, robot = load_model(base, adapter)
    robots = args.robot or ([robot.name] if robot is not None else None)
    for name in args.robot or []:
        if name not in processor.embodiments:
            processor.add_embodiment(_export_robot(processor, name))
    source = {"model": base, "adapter": str(args.adapter) if args.adapter else None}
    manifest = build_bundle(
        model, processor, args.out, recipe.quant_config(), robots, recipe.batch_size, recipe.check_trials,
        recipe.latency_repeats, source,
    )
    print(f"bundle: {args.out} ({manifest['precision']}, {manifest['bytes_total'] / 1e6:.2f} MB)")
    print(f"{'robot':<14} {'onnx max diff':>14} {'tokens':>7} {'chunk ms':>9} {'budget ms':>10}")
    for e in manifest["embodiments"]:
        c = e["onnx_check"]
        print(f"{e['robot']:<14} {c['max_abs_canonical']:>14.2e} {c['token_agreement']:>7.1%} "
              f"{e['latency_ms']['onnxruntime_graph_and_native_decode']:>9.2f} {e['budget_ms']:>10.1f}" + ("" if e["within_budget"] else "  OVER BUDGET"))
        print(f"  on the Thor: {e['trtexec']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .export.thor import verify_bundle
    from .export.runtime import bench_bundle

    manifest = verify_bundle(args.bundle)
    if args.compile_for:
        return _compile_for(args)
    if args.multiprocessors:
        raise EmbodyHubError("--multiprocessors sizes the GPU of --compile-for; give a --compile-for target")
    rows = bench_bundle(args.bundle, args.repeats, args.max_seconds)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"bundle {args.bundle}: {manifest['precision']}, hashes verified. Milliseconds per action chunk: median of the runs "
          f"(repeated until it moved < 5% in a round of {args.repeats}), [middle half of the runs]; chunk = graph + native decode")
    print(f"{'robot':<14} {'backend':<26} {'graph ms':>9} {'graph IQR':>15} {'runs':>5} {'chunk ms':>9} {'chunk IQR':>15} {'runs':>5} {'budget ms':>10}")
    for r in rows:
        flag = "" if r["total_ms"] <= r["budget_ms"] else "  OVER BUDGET"
        flag += "" if r["graph_stable"] and r["total_stable"] else f"  (median still moving after {args.max_seconds:g} s: noisy machine)"
        graph_iqr, chunk_iqr = ("{:.2f}-{:.2f}".format(*r[k]) for k in ("graph_iqr_ms", "total_iqr_ms"))
        print(f"{r['robot']:<14} {r['backend']:<26} {r['graph_ms']:>9.2f} {graph_iqr:>15} {r['graph_runs']:>5} "
              f"{r['total_ms']:>9.2f} {chunk_iqr:>15} {r['total_runs']:>5} {r['budget_ms']:>10.1f}{flag}")
    for e in manifest["embodiments"]:
        if "default_session_check" in e:  # bundles from before the manifest listed the session options lack it
            print(f"{e['robot']}: ONNX vs PyTorch, max |canonical difference|: {e['onnx_check']['max_abs_canonical']:.1e} with the "
                  f"bundle's session options (README.md), {e['default_session_check']['max_abs_canonical']:.1e} with onnxruntime's defaults")
    return 0


def _compile_for(args: argparse.Namespace) -> int:
    """``bench --compile-for``: the bundle's GPU kernels compiled for each target, one table per target."""
    from .export.kernels.compile_check import arch_number, launch_rows
    from .export.runtime import compile_bundle

    results = {}
    for arch in map(arch_number, args.compile_for):
        results[f"sm_{arch}"] = compile_bundle(args.bundle, arch, args.multiprocessors)
    if args.json:
        print(json.dumps({t: [{**r, "prefill": launch_rows(r["prefill"]), "decode": launch_rows(r["decode"])} for r in rows] for t, rows in results.items()}, indent=2))
        return 0
    for target, rows in results.items():
        for r in rows:
            per_step, prefill = sum(r["decode"].values()) / r["steps"], sum(r["prefill"].values())
            print(f"\n{target} ({r['gpu']}, {r['multiprocessors']} multiprocessors), {r['robot']}: every kernel compiled; "
                  f"{per_step:.0f} launches per step x {r['steps']} steps + {prefill} in the prefill")
            print(f"{'kernel':<28} {'phase':<7} {'per':>5} {'grid':>14} {'warps':>5} {'stages':>6} {'regs':>5} {'stack B':>7} {'shared B':>8} {'progs/SM':>8}  constants")
            for phase, per in (("prefill", 1), ("decode", r["steps"])):
                for launch, n in sorted(r[phase].items(), key=lambda item: item[0].kernel):
                    grid = "x".join(map(str, launch.grid))
                    print(f"{launch.kernel:<28} {phase:<7} {n / per:>5.0f} {grid:>14} {launch.num_warps:>5} {launch.num_stages:>6} {launch.registers:>5} "
                          f"{launch.stack:>7} {launch.shared:>8} {launch.programs_per_sm:>8}  {launch.constants}")
    spills = sorted({f"{t} {launch.kernel}" for t, rows in results.items() for r in rows for phase in ("prefill", "decode") for launch in r[phase] if launch.stack})
    print("\n" + (f"register spills (stack > 0): {', '.join(spills)}" if spills else "no kernel spills registers (stack 0 everywhere)"))
    return 0


def _threads_arg(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a positive whole number, got {value!r}")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error, and the common options on every (sub)command.

    ``add_subparsers`` builds subcommands with the parent's class, so a new subcommand gets both for free.
    The common options default to SUPPRESS: a subcommand's default must not overwrite a value given
    before the subcommand's name (``embodyhub --debug eval ...``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        common = self.add_argument_group("common options")
        common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
        common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                            help="trainer logs (TRL's metrics per step) and library deprecation warnings")
        common.add_argument("--threads", type=_threads_arg, default=argparse.SUPPRESS, metavar="N",
                            help="torch/OpenMP threads (default: $EMBODYHUB_THREADS, $OMP_NUM_THREADS, else half the CPUs, at most 4)")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _verbose(args: argparse.Namespace) -> bool:
    return getattr(args, "verbose", False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embodyhub", description="Robot World-Action Models from your URDF.")
    parser.add_argument("--version", action="version", version=f"embodyhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    robots = sub.add_parser("robots", help="bundled robots").add_subparsers(dest="robots_command", required=True)
    p = robots.add_parser("list", help="list bundled robots")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_robots_list, compute=False)
    p = robots.add_parser("show", help="DoF, chains, limits and canonical slots of one robot")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_robots_show, compute=False)

    urdf = sub.add_parser("urdf", help="URDF tools").add_subparsers(dest="urdf_command", required=True)
    p = urdf.add_parser("check", help="validate a URDF (exit 0 if usable, 1 with the reason if not)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_urdf_check, compute=False)

    p = sub.add_parser("train", help="pretrain a tiny WAM from a recipe, then evaluate it")
    p.add_argument("--recipe", default="pretrain_tiny", help="recipe YAML (or a bundled recipe name)")
    p.add_argument("--out", required=True, help="output folder: data/, model/, eval.json, eval.png")
    p.add_argument("--steps", type=int, help="override train_steps")
    p.add_argument("--episodes", type=int, help="override episodes_per_robot (episodes_per_task with source: sim)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("adapt", help="train a LoRA adapter for a new robot (its URDF or a bundled name)")
    p.add_argument("--base", help="folder (or Hub id) of the base model and processor (default: the shipped tiny base)")
    p.add_argument("--robot", required=True, help="bundled robot name, embodiment folder, or URDF file (with --arm)")
    p.add_argument("--arm", action="append", help="BASE:TIP links of an arm of a URDF robot (repeatable)")
    p.add_argument("--gripper", action="append", help="gripper joint of a URDF robot (repeatable, one per arm)")
    p.add_argument("--control-hz", type=float, default=30.0, help="control rate of a URDF robot")
    p.add_argument("--name", help="name of a URDF robot (default: the URDF's robot name); also the adapter's name")
    p.add_argument("--env", help="robosuite task(s), comma-separated: lift, stack, can. --robot is then a simulator arm "
                                 "(e.g. the held-out xarm7, jaco), demos come from the scripted expert (or --data) and the "
                                 "evaluation runs in the simulator, zero-shot vs adapted")
    p.add_argument("--data", help="LeRobot v3 dataset of the robot (default: generate synthetic demos; with --env: collect "
                                  "expert demos into OUT/data); with --env also a folder of ROBOT-TASK datasets (an earlier OUT/data)")
    p.add_argument("--recipe", help="recipe YAML (or a bundled recipe name; default: adapt_lora, adapt_sim with --env)")
    p.add_argument("--episodes", type=int, help="override the number of demos (per task)")
    p.add_argument("--steps", type=int, help="override train_steps")
    p.add_argument("--workers", type=int, help="with --env: simulator processes collecting and evaluating (default: the recipe's)")
    p.add_argument("--full-finetune", action="store_true",
                   help="train every weight instead of a LoRA adapter (at the recipe's full_learning_rate), the baseline LoRA is "
                        "measured against: writes OUT/model")
    p.add_argument("--out", required=True, help="output folder: adapter/ (or model/), adapt_log.json, adapt_recipe.yaml, eval.json, eval.png")
    p.set_defaults(func=_cmd_adapt)

    p = sub.add_parser("eval", help="closed-loop reach success of a saved WAM per robot")
    p.add_argument("--model", help="folder (or Hub id) with the model and processor (default: the shipped tiny base)")
    p.add_argument("--robot", action="append", help="bundled robot (repeatable; default: the model's robots)")
    p.add_argument("--transfer", action="store_true", help="zero-shot vs LoRA vs full fine-tuning on one --robot")
    p.add_argument("--demos", type=int, nargs="+", default=[10, 50, 200], help="with --transfer: demo counts")
    p.add_argument("--recipe", default="adapt_lora", help="with --transfer: adaptation recipe")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--goal-distance", type=float, default=0.3, help="goal offset per joint from the start (rad or m)")
    p.add_argument("--seed", type=int, help="first episode's seed (default: 1234 for reach, 1000000 on --env)")
    p.add_argument("--env", help="manipulation benchmark task(s), comma-separated: lift, stack, can (robosuite)")
    p.add_argument("--policy", choices=["expert", "wam"],
                   help="with --env: the scripted expert or the --model WAM (default: wam when --model is given, else expert)")
    p.add_argument("--adapter", help="with --env and --model: a LoRA adapter folder to load onto the model")
    p.add_argument("--bundle", help="with --env: an export bundle folder (`embodyhub export`) run on onnxruntime instead of --model")
    p.add_argument("--control", default="joint", choices=["joint", "osc"],
                   help="with --env: joint targets through embodyhub's IK, or robosuite's OSC")
    p.add_argument("--workers", type=int, default=1, help="with --env: simulator worker processes")
    p.add_argument("--video", type=int, default=0, metavar="K", help="with --env: record the first K episodes per robot and task as GIFs")
    p.add_argument("--out", default="embodyhub-eval")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("collect", help="scripted-expert demos on the manipulation benchmark as a LeRobot v3.0 dataset")
    p.add_argument("--env", required=True, help="task(s), comma-separated: lift, stack, can")
    p.add_argument("--robot", required=True, help="simulator arm: panda, iiwa, ur5e, kinova3, xarm7, jaco")
    p.add_argument("--gripper", help="robosuite gripper (default: the arm's usual one)")
    p.add_argument("--episodes", type=int, default=50, help="successful episodes per task")
    p.add_argument("--camera", help="also record this robosuite camera's frames, e.g. agentview (PNG image features)")
    p.add_argument("--image-size", type=int, default=84, help="with --camera: frame height and width in pixels")
    p.add_argument("--visual-meshes", action="store_true",
                   help="with --camera: render the full visual meshes (about 6x slower than the default collision geoms)")
    p.add_argument("--workers", type=int, default=1, help="simulator worker processes")
    p.add_argument("--first-seed", type=int, default=0, help="try episode seeds from this one on (another range: disjoint episodes)")
    p.add_argument("--start-spread", type=float, default=0.0, metavar="M",
                   help="start each demo from a seeded pose up to M metres around the arm's home (default: the home)")
    p.add_argument("--out", required=True, help="dataset folder (resumes an interrupted run of the same robot and camera)")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("grpo", help="GRPO post-training on closed-loop reach (TRL), with periodic evaluation")
    p.add_argument("--model", help="folder (or Hub id) with the model and processor (default: the shipped tiny base)")
    p.add_argument("--robot", help="robot to train on (the model's or a bundled one; optional with --adapter)")
    p.add_argument("--adapter", help="train this LoRA adapter folder (embodyhub adapt) instead of the full model")
    p.add_argument("--lora", action="store_true", help="train a new LoRA adapter for --robot instead of the full model")
    p.add_argument("--recipe", default="grpo_reach", help="recipe YAML (or a bundled recipe name)")
    p.add_argument("--steps", type=int, help="override the recipe's GRPO steps")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds of training")
    p.add_argument("--out", required=True, help="output folder: model/ (or the adapter), grpo_log.json, grpo_curve.png")
    p.set_defaults(func=_cmd_grpo)

    p = sub.add_parser("demo", help="run the end-to-end walk-through and write a report (resumes finished stages)")
    p.add_argument("--out", default="embodyhub-demo", help="output folder (default: ./embodyhub-demo)")
    p.add_argument("--robot", help="bundled robot to adapt to (default: the recipe's, one held out from the base)")
    p.add_argument("--skip", action="append", help="leave a stage out (repeatable): kinematics, base, adapt, grpo, export or publish")
    p.add_argument("--recipe", default="demo", help="recipe YAML (or a bundled recipe name)")
    p.add_argument("--smoke", action="store_true", help="reduced size, for CI")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("export", help="quantize a WAM and write a Jetson Thor bundle (ONNX + manifest)")
    p.add_argument("--model", help="folder (or Hub id) with the model and processor (default: the shipped tiny base)")
    p.add_argument("--adapter", help="LoRA adapter folder to merge before quantizing")
    p.add_argument("--target", default="thor", choices=["thor"], help="deployment target")
    p.add_argument("--precision", choices=["int8", "int4", "fp8", "float32", "float16"], help="override the recipe's precision")
    p.add_argument("--robot", action="append",
                   help="robots to export graphs for (default: the adapter's or all the model's); one the model lacks is a "
                        "simulator arm for a model trained on the simulator, else a bundled robot")
    p.add_argument("--recipe", default="export_thor", help="recipe YAML (or a bundled recipe name)")
    p.add_argument("--out", required=True, help="bundle folder")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="latency per chunk of a bundle (onnxruntime on CPU; PyTorch+Triton on a GPU)")
    p.add_argument("--bundle", required=True, help="bundle folder written by `embodyhub export`")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per round; rounds repeat until the median settles (default 20)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="stop repeating a timing after this long, settled or not (default 10)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--compile-for", action="append", metavar="ARCH",
                   help="instead of timing: compile the GPU runtime's kernels for this CUDA target (90, sm_110, thor; repeatable) on this machine, "
                        "no GPU needed, and list each launch's registers, spills and shared memory")
    p.add_argument("--multiprocessors", type=int, help="with --compile-for: the GPU's multiprocessor count (default: the target's usual)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("push", help="publish a model, adapter or export bundle folder to the Hub with its model card")
    p.add_argument("dir", help="save_pretrained folder, adapter folder or export bundle")
    p.add_argument("--repo", required=True, help="ORG/NAME on the Hub (HF_ENDPOINT picks the server)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--kind", choices=["base", "adapter", "export"], help="default: detected from the folder")
    p.add_argument("--base-model", help="Hub id of the base model (adapters and exports)")
    p.add_argument("--eval", help="eval.json of `embodyhub eval` (default: DIR/eval.json or beside DIR)")
    p.add_argument("--recipe", help="training recipe YAML shown on the card")
    p.add_argument("--dataset", action="append", help="Hub dataset id trained on (repeatable)")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--message", help="commit message")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument("--dry-run", action="store_true", help="show the file list and the card; upload nothing")
    p.set_defaults(func=_cmd_push, compute=False)
    return parser


def _check_out(args: argparse.Namespace) -> None:
    """Every command's ``--out`` is a folder (created if missing): refuse an existing file before any work."""
    out = getattr(args, "out", None)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise EmbodyHubError(f"--out {out} is a file, not a folder: give a folder (created if missing)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error ends in one line on stderr (what is wrong, what to do) and a non-zero
    status: 2 for usage errors, 1 for other failures, 130 on Ctrl-C; ``--debug`` adds the traceback."""
    args = build_parser().parse_args(argv)
    try:
        _check_out(args)
        with contextlib.ExitStack() as stack:
            if getattr(args, "compute", True):  # not for the quick look-ups (robots, urdf, push)
                threads, source = choose_threads(getattr(args, "threads", None))
                stack.enter_context(using_threads(threads))
                print(f"embodyhub: {threads} torch thread{'s' * (threads > 1)} ({source}; --threads N to change)", file=sys.stderr)
            stack.enter_context(quiet_output(_verbose(args)))
            return args.func(args)
    except KeyboardInterrupt:
        print("embodyhub: interrupted; finished stages and files are kept: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # the one error path: no traceback unless asked for
        if getattr(args, "debug", False):
            traceback.print_exc()
        message, status = describe_error(exc)
        print(f"embodyhub: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
