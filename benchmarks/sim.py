"""Manipulation benchmark tables: FK of the simulator's arms vs MuJoCo, expert success, throughput.

    python benchmarks/sim.py                       # all four tables, 50 evaluation episodes per cell
    python benchmarks/sim.py --episodes 10 --tasks lift --robots panda,jaco --skip osc

1. FK check: every sim-derived embodiment's FK against MuJoCo's own grip-site pose, 100 random
   configurations per arm (max position error in m, max rotation error in rad).
2. Scripted experts in joint-position mode through embodyhub's IK, and the same expert through
   robosuite's OSC_POSE (the peer): success over evaluation seeds, mean steps, CPU-s per episode.
3. Throughput, side by side in one run: env-only steps per CPU-second (holding the joint target),
   closed-loop steps per CPU-second with the expert (expert + IK + env), and with the current model
   (the shipped tiny base: processor + predict_action + adapter decode + env), re-planning every step
   and executing whole chunks.
   The tiny base was trained on kinematic reach, so here it only measures cost, not skill.
4. Camera frames: env-only steps per CPU-second on Lift/Panda with an 84 px agentview camera,
   collision geoms only (what `collect --camera` renders) against the full visual meshes.
"""

from __future__ import annotations

import argparse
import time

import torch


def fk_table(robots: list[str]) -> None:
    from embodyhub.envs.sim import sim_embodiment
    from embodyhub.envs.sim.robots import fk_error_vs_mujoco

    print("\n## FK of the sim-derived embodiments vs MuJoCo's grip site (100 random configurations)\n")
    print(f"| {'robot':<8} | {'dof':>3} | {'max pos err (m)':>15} | {'max rot err (rad)':>17} |")
    print(f"|{'-' * 10}|{'-' * 5}|{'-' * 17}|{'-' * 19}|")
    for name in robots:
        pos, rot = fk_error_vs_mujoco(name, samples=100, seed=0)
        print(f"| {name:<8} | {sim_embodiment(name).chains[0].dof:>3} | {pos:>15.1e} | {rot:>17.1e} |")


def expert_table(robots: list[str], tasks: list[str], episodes: int, controls: list[str], workers: int) -> None:
    from embodyhub.envs.sim import evaluate_policy

    print(f"\n## Scripted experts, {episodes} evaluation episodes per cell (seeds from 1000000)\n")
    print(f"| {'robot':<8} | {'task':<5} | {'control':<7} | {'success':>7} | {'mean steps':>10} | {'CPU-s/episode':>13} |")
    print(f"|{'-' * 10}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 12}|{'-' * 15}|")
    for robot in robots:
        for task in tasks:
            for control in controls:
                r = evaluate_policy(task, robot, episodes, workers=workers, control=control, progress=False)
                print(f"| {robot:<8} | {task:<5} | {control:<7} | {r['success_rate']:>7.0%} | {r['mean_steps']:>10.1f} | "
                      f"{r['cpu_s_per_episode']:>13.2f} |", flush=True)


def throughput_table(robots: list[str], steps: int) -> None:
    from transformers import AutoModel, AutoProcessor

    from embodyhub.envs.sim import Expert, SimEnv
    from embodyhub.pretrained import tiny_base

    model = AutoModel.from_pretrained(tiny_base()).eval()
    processor = AutoProcessor.from_pretrained(tiny_base())
    print(f"\n## Throughput on Lift, {steps} steps each, one process, 1 torch thread\n")
    print(f"| {'robot':<8} | {'env-only':>8} | {'expert loop':>11} | {'WAM, re-plan each step':>22} | {'WAM, whole chunks':>17} |")
    print(f"|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 24}|{'-' * 19}|")
    for name in robots:
        env = SimEnv("lift", name)
        env.reset(2_000_000)
        q = env.joint_state()
        start = time.process_time()
        for _ in range(steps):
            env.step(q)
        env_only = steps / (time.process_time() - start)
        done = 0
        start = time.process_time()
        while done < steps:
            env.reset(2_000_000 + done)
            expert = Expert(env)
            for _ in range(min(60, steps - done)):
                env.step_canonical(expert.act())
                done += 1
        closed = steps / (time.process_time() - start)
        wam = [_wam_rate(env, model, processor, steps, execute) for execute in (1, None)]
        print(f"| {name:<8} | {env_only:>8.0f} | {closed:>11.0f} | {wam[0]:>22.0f} | {wam[1]:>17.0f} |")
    print("\nsteps per CPU-second; the control rate is 20 Hz")


def camera_table(steps: int) -> None:
    from embodyhub.envs.sim import SimEnv

    print(f"\n## Camera frames on Lift/Panda, agentview 84 px, {steps} steps each\n")
    print("| rendered | steps per CPU-second |\n|---|---:|")
    rates = {}
    for label, visual in (("collision geoms", False), ("visual meshes", True)):
        env = SimEnv("lift", "panda", camera="agentview", image_size=84, visual_meshes=visual)
        env.reset(2_000_000)
        q = env.joint_state()
        start = time.process_time()
        for _ in range(steps):
            env.step(q)
        rates[label] = steps / (time.process_time() - start)
        env.close()
        print(f"| {label} | {rates[label]:.0f} |")
    print(f"\nvisual meshes are {rates['collision geoms'] / rates['visual meshes']:.1f}x slower")


def _wam_rate(env, model, processor, steps: int, execute: int | None) -> float:
    """Closed-loop steps per CPU-second of the model holding the start pose, executing ``execute`` steps per chunk."""
    from embodyhub.envs import goal_vector

    env.reset(2_000_000)
    goal = goal_vector(torch.as_tensor(env.ee_pose(), dtype=torch.float32)[None, None])
    done = 0
    start = time.process_time()
    with torch.inference_mode():
        while done < steps:
            state = torch.as_tensor(env.joint_state(), dtype=torch.float32)[None]
            chunk = model.predict_action(**processor({"state": state, "goal": goal}, env.embodiment))
            for q in chunk[0, :execute][: steps - done]:
                env.step(q)
                done += 1
    return steps / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", default="panda,iiwa,ur5e,kinova3,xarm7,jaco")
    parser.add_argument("--tasks", default="lift,stack,can")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=600, help="throughput steps per robot")
    parser.add_argument("--skip", action="append", default=[], help="fk, expert, osc, throughput or camera (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    robots, tasks = args.robots.split(","), args.tasks.split(",")
    if "fk" not in args.skip:
        fk_table(robots)
    if "expert" not in args.skip:
        expert_table(robots, tasks, args.episodes, ["joint"] + ([] if "osc" in args.skip else ["osc"]), args.workers)
    if "throughput" not in args.skip:
        throughput_table(robots, args.steps)
    if "camera" not in args.skip:
        camera_table(min(args.steps, 200))


if __name__ == "__main__":
    main()
