"""GRPO vs more behaviour cloning at equal wall-clock, and the cost of G=8 paths vs G=1 per GRPO step.

Setting (printed with the table): a robot held out from the tiny base's pretraining (default
``kinova_jaco2``) gets a LoRA adapter from a few demonstrations (``--demos``, synthetic expert
reaches to goals within ``--goal-distance`` rad per joint of the start) and ``--start-steps`` of
behaviour cloning: 30 by default, a deliberately under-trained start (the issue's setting). Cloning
that slow, velocity-saturated demonstrator longer gives a policy that reaches but too slowly for the
episode's step budget. Starting from the saved adapter, the same wall-clock budget is spent on

- GRPO (``run_grpo`` with ``recipes/grpo_reach.yaml``: ``WamGRPOTrainer`` + ``ReachReward``,
  prompts from the adapter's own closed-loop episodes on task goals drawn with ``--prompt-seed``;
  collecting them counts), and
- more behaviour cloning of the adapter on the same demonstrations (``embodyhub.training.train``
  with the adapt recipe's learning rate, stopped when the budget is spent),

then both are scored by closed-loop reach success on held-out task goals drawn with
``--eval-seed`` (not the prompts' seed). Both budgets are measured elapsed time. The second table
times GRPO steps at 8 observations with ``num_generations`` 8 and 1, alternating rounds of steps
in one process so that machine load hits both alike.

    python benchmarks/grpo.py [--robot kinova_jaco2] [--budget 240] [--demos 20] [--goal-distance 0.6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor, PrinterCallback

import embodyhub  # noqa: F401
from embodyhub.embodiment import load_robot
from embodyhub.pretrained import tiny_base
from embodyhub.recipes import recipe_path
from embodyhub.training import evaluate_reach, train
from embodyhub.training.grpo import (
    GrpoRecipe,
    WamGRPOTrainer,
    grpo_config,
    reach_prompts,
    run_grpo,
    trainable_adapter,
)
from embodyhub.training.lora import AdaptRecipe, adapt, load_adapter, save_adapter
from embodyhub.training.pretrain import prepare_data
from embodyhub.training.rewards import ReachReward


def success(model, processor, emb, args) -> dict:
    model.eval()
    r = evaluate_reach(model, processor, [emb], args.episodes, 60, args.eval_seed, goal_distance=args.goal_distance)[emb.name]
    return {"success": r["success_rate"], "pos_err": r["pos_err"]}


def grpo_recipe(args, **overrides) -> GrpoRecipe:
    """The GRPO recipe with the task's goals and training seed (and ``--lr`` when given)."""
    if args.lr is not None:
        overrides["learning_rate"] = args.lr
    return GrpoRecipe.from_yaml(recipe_path(args.recipe), goal_distance=args.goal_distance, prompt_seed=args.prompt_seed, **overrides)


def load_start(args, emb, adapter_dir: Path):
    base = AutoModel.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    processor.add_embodiment(emb)
    model, emb = load_adapter(base, adapter_dir, emb)
    return trainable_adapter(model), processor, emb


def step_times(args, emb, adapter_dir: Path, rounds: int = 3, steps: int = 4) -> dict[int, list[float]]:
    """TRL ``step_time`` of GRPO steps at 8 observations, ``num_generations`` 8 and 1, in alternating rounds."""
    times: dict[int, list[float]] = {1: [], 8: []}
    prompts = reach_prompts([emb], 64, seed=args.prompt_seed, goal_distance=args.goal_distance)
    for _ in range(rounds):
        for G in (1, 8):
            model, processor, robot = load_start(args, emb, adapter_dir)
            recipe = grpo_recipe(args, steps=steps + 1, num_generations=max(G, 2), observations_per_step=8)
            # GRPOConfig refuses num_generations=1 (no group, no advantage): build with 2, then sample 1 per observation.
            config = grpo_config(recipe, Path(tempfile.mkdtemp()) / "trainer", per_device_train_batch_size=8 * G, disable_tqdm=True)
            trainer = WamGRPOTrainer(model, [ReachReward(processor, {robot.name: robot})], config, prompts, processor, {robot.name: robot})
            trainer.num_generations = G
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            times[G] += [e["step_time"] for e in trainer.state.log_history if "step_time" in e][1:]  # first: warm-up
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(tiny_base()), help="base model folder (default: the shipped tiny base)")
    p.add_argument("--robot", default="kinova_jaco2", help="a robot the base was not pretrained on")
    p.add_argument("--demos", type=int, default=20, help="demonstrations the user has")
    p.add_argument("--goal-distance", type=float, default=0.6, help="the task: demonstrations, GRPO prompts and evaluation")
    p.add_argument("--demo-goal-distance", type=float, help="goals of the demonstrations (default: the task's)")
    p.add_argument("--start-steps", type=int, default=30, help="behaviour-cloning steps of the (deliberately under-trained) starting adapter")
    p.add_argument("--budget", type=float, default=240.0, help="seconds of training for each method")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    p.add_argument("--eval-seed", type=int, default=1234, help="held-out evaluation goals")
    p.add_argument("--prompt-seed", type=int, default=7, help="GRPO's training goals")
    p.add_argument("--recipe", default="grpo_reach", help="GRPO recipe (temperature, learning rate, reward, ...)")
    p.add_argument("--lr", type=float, help="override the recipe's GRPO learning rate")
    p.add_argument("--skip-cost", action="store_true", help="only the GRPO vs behaviour-cloning table")
    p.add_argument("--cost-only", action="store_true", help="only the step-cost table")
    args = p.parse_args()
    if args.demo_goal_distance is None:
        args.demo_goal_distance = args.goal_distance
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="embodyhub-grpo-bench-"))

    processor = AutoProcessor.from_pretrained(args.model)
    emb = processor.embodiments[args.robot] if args.robot in processor.embodiments else load_robot(args.robot)
    bc = AdaptRecipe(episodes=args.demos, goal_distance=args.demo_goal_distance, train_steps=args.start_steps)
    demos = prepare_data(bc, work / "demos", progress=False, robots=[emb], episodes=args.demos)[emb.name]

    # The starting point: a LoRA adapter cloned from the demonstrations, saved so both arms load the same one.
    model, processor = AutoModel.from_pretrained(args.model), AutoProcessor.from_pretrained(args.model)
    torch.manual_seed(0)
    model, _ = adapt(model, processor, emb, demos, bc, progress=False)
    adapter_dir = save_adapter(model, emb, work / "start")
    if not args.cost_only:
        compare(args, emb, demos, bc, adapter_dir)
    if not args.skip_cost:
        times = step_times(args, emb, adapter_dir)
        t1, t8 = statistics.median(times[1]), statistics.median(times[8])
        print("\n## GRPO step cost at 8 observations per step (median TRL step_time over alternating rounds, CPU, 1 thread)\n")
        print(f"Model: the tiny base with the {args.robot} LoRA adapter above.\n")
        print("| num_generations | completions | s / step | steps timed |")
        print("|---:|---:|---:|---:|")
        print(f"| 1 | 8 | {t1:.3f} | {len(times[1])} |")
        print(f"| 8 | 64 | {t8:.3f} | {len(times[8])} |")
        print(f"\nratio G=8 / G=1: {t8 / t1:.2f}x (acceptance: <= 3x)")


def compare(args, emb, demos, bc: AdaptRecipe, adapter_dir: Path) -> None:
    """Zero-shot, the starting adapter, then GRPO and more behaviour cloning for the same budget each."""
    base, processor = AutoModel.from_pretrained(args.model), AutoProcessor.from_pretrained(args.model)
    zero_shot = success(base, processor, emb, args)
    model, processor, robot = load_start(args, emb, adapter_dir)
    start = success(model, processor, robot, args)

    # (a) GRPO for the budget
    torch.manual_seed(0)
    model, processor, robot = load_start(args, emb, adapter_dir)
    recipe = grpo_recipe(args, steps=10**6, time_budget_s=args.budget, eval_every=0)
    res = run_grpo(model, processor, [robot], recipe, adapter_dir.parent / "grpo", progress=False, save=False)
    grpo = success(model, processor, robot, args) | {"seconds": res["seconds"], "steps": res["trainer"].state.global_step}

    # (b) more behaviour cloning for the same budget (the schedule's horizon is far: a constant rate after warm-up)
    model, processor, robot = load_start(args, emb, adapter_dir)
    log = train(
        model, processor, {robot.name: demos}, 10**6, bc.batch_size, bc.learning_rate, bc.weight_decay, bc.warmup_steps,
        seed=1, progress=False, episodes=args.demos, time_budget_s=args.budget,
    )
    more_bc = success(model, processor, robot, args) | {"seconds": log[-1]["seconds"], "steps": log[-1]["step"]}

    print(
        f"\n## GRPO vs more behaviour cloning: {args.robot} (held out from pretraining), LoRA adapter\n\n"
        f"Demonstrations: {args.demos} synthetic reaches to goals within {args.demo_goal_distance} rad/joint of the start. "
        f"Task and evaluation: goals within {args.goal_distance}; GRPO prompts seed {args.prompt_seed}, held-out evaluation "
        f"seed {args.eval_seed}, {args.episodes} episodes. Budget {args.budget:.0f} s each, measured; CPU, 1 torch thread.\n"
    )
    print("| method | train s | steps | success | pos err (m) | vs start (points) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| base, zero-shot (no adapter) | - | - | {zero_shot['success']:.0%} | {zero_shot['pos_err']:.4f} | - |")
    print(f"| start: adapter, {args.start_steps} BC steps | - | {args.start_steps} | {start['success']:.0%} | {start['pos_err']:.4f} | - |")
    for name, r in (("GRPO (ReachReward, G=8)", grpo), ("more behaviour cloning", more_bc)):
        gain = 100 * (r["success"] - start["success"])
        print(f"| {name} | {r['seconds']:.0f} | {r['steps']} | {r['success']:.0%} | {r['pos_err']:.4f} | {gain:+.0f} |")


if __name__ == "__main__":
    began = time.perf_counter()
    main()
    print(f"\nbenchmark wall time {time.perf_counter() - began:.0f} s")
