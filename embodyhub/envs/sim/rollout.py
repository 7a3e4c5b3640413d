"""Collection and closed-loop evaluation (the scripted expert or a saved WAM) on the manipulation benchmark,
in worker processes.

Seeds: collection attempt ``i`` of a task places the objects with seed ``i`` (0, 1, 2, ...), and
evaluation episode ``i`` uses ``EVAL_SEED_BASE + i``, so evaluation episodes never replay a
collected scene. ``collect`` keeps successful expert episodes only, stages each attempt in
``OUT/.staging/`` as it finishes (a killed run resumes where it stopped) and writes the LeRobot
v3.0 dataset once every task has its episodes; a folder staged or written for another robot,
gripper or camera is refused before any work starts.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ...errors import DatasetError

if TYPE_CHECKING:
    from .policy import BundlePolicy, ModelPolicy

EVAL_SEED_BASE = 1_000_000
VIDEO_SIZE = 160  # pixels (square) of evaluation rollout videos
_STAGING = ".staging"
_MAX_ATTEMPTS_PER_EPISODE = 3  # collection gives up when the expert fails this often

_worker_envs: dict[tuple, Any] = {}


def _env(task: str, robot: str, gripper: str | None, camera: str | None, image_size: int, visual_meshes: bool,
         control: str, start_spread: float = 0.0) -> Any:
    """This process's ``SimEnv`` for the arguments (made once per process and reused)."""
    from .env import SimEnv

    key = (task, robot, gripper, camera, image_size, visual_meshes, control, start_spread)
    if key not in _worker_envs:
        _worker_envs[key] = SimEnv(task, robot, gripper=gripper, camera=camera, image_size=image_size,
                                   visual_meshes=visual_meshes, control=control,  # type: ignore[arg-type]
                                   start_spread=start_spread)
    return _worker_envs[key]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _episode_job(args: tuple) -> tuple[int, dict[str, Any]]:
    """One episode of the scripted expert (``policy`` None) or of a ``ModelPolicy``/``BundlePolicy`` (loaded in this
    process)."""
    import torch

    from .env import run_episode
    from .experts import run_expert_episode

    *env_args, seed, video, policy = args
    env = _env(*env_args)
    start = time.process_time()
    if policy is None:
        out = run_expert_episode(env, seed)
    else:
        wam = policy.build(env.embodiment, env.task.description)

        def controller(env: Any) -> Any:
            wam.reset()
            if env.control == "osc":  # the same commands as end-effector targets (FK of the decoded joints)
                return lambda obs: env.step_canonical(env.adapter.to_canonical(torch.as_tensor(wam(obs)))[0])
            return lambda obs: (env.step(q := wam(obs)), q)

        out = run_episode(env, seed, controller)
    out["cpu_s"] = time.process_time() - start
    if video is not None:
        key = f"observation.images.{env.camera}"
        write_gif([f[key] for f in out["frames"]], video, env.embodiment.control_hz)
        out["frames"] = []
    return seed, out


def _run(jobs: Sequence[tuple], workers: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Episodes for ``jobs`` in this process (``workers <= 1``) or a spawned pool, as they finish."""
    if workers <= 1:
        _init_worker()
        yield from map(_episode_job, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        yield from pool.map(_episode_job, jobs)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ep", disable=not enabled)


def _check_staging(out: Path, config: dict[str, Any]) -> Path:
    staging = out / _STAGING
    info = out / "meta" / "info.json"
    recorded = None
    if (staging / "config.json").is_file():
        recorded = json.loads((staging / "config.json").read_text())
    elif info.is_file():
        recorded = (json.loads(info.read_text()).get("embodyhub") or {}).get("collection")
    # one robot and one camera setting per folder; a key missing from an older record means its default
    defaults = {"robot": None, "gripper": None, "camera": None, "image_size": None, "visual_meshes": False, "first_seed": 0,
                "start_spread": 0.0}
    for key, default in defaults.items():
        if recorded is not None and recorded.get(key, default) != config[key]:
            what = {"robot": "one robot", "gripper": "one robot", "first_seed": "one seed range",
                    "start_spread": "one start spread"}.get(key, "one camera setting")
            raise DatasetError(
                f"{out} holds a dataset of {key}={recorded.get(key)!r}; this run asks for {key}={config[key]!r}: "
                f"{what} per dataset, pick another --out"
            )
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return staging


def collect(
    tasks: Sequence[str],
    robot: str,
    episodes: int,
    out: str | os.PathLike,
    workers: int = 1,
    gripper: str | None = None,
    camera: str | None = None,
    image_size: int = 84,
    visual_meshes: bool = False,
    progress: bool = True,
    first_seed: int = 0,
    start_spread: float = 0.0,
) -> Path:
    """Collect ``episodes`` successful expert demos per task on ``robot`` as a LeRobot v3.0 dataset at ``out``
    (proprioception, keypoints, actions, task strings), trying seeds from ``first_seed`` on (another range
    gives episodes disjoint from a first dataset's, e.g. held-out data). With ``camera`` (a robosuite camera
    such as ``"agentview"``) each frame also records ``observation.images.<camera>``, ``image_size`` pixels
    square, rendering collision geoms only unless ``visual_meshes`` (about 6x slower); stored as PNG image
    features. A ``start_spread`` (metres, ``SimEnv``) starts each demo from a seeded pose around the arm's home
    instead of the home itself."""
    from ...data.lerobot import EMBODIMENT_DIR, write_dataset
    from .env import sim_task
    from .robots import sim_embodiment

    for task in tasks:
        sim_task(task)
    if first_seed < 0 or first_seed + episodes * _MAX_ATTEMPTS_PER_EPISODE > EVAL_SEED_BASE:
        raise DatasetError(f"{episodes} episodes per task from seed {first_seed} could reach the evaluation seeds "
                           f"(from {EVAL_SEED_BASE}); collect fewer or from a lower seed")
    if camera is not None and image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    emb = sim_embodiment(robot, gripper)
    out = Path(out)
    config = {"robot": emb.name, "gripper": gripper, "camera": camera, "image_size": image_size if camera else None,
              "visual_meshes": bool(camera and visual_meshes),
              "tasks": sorted(t.lower() for t in tasks), "episodes_per_task": episodes, "first_seed": first_seed,
              "start_spread": float(start_spread)}
    staging = _check_staging(out, config)
    done: dict[str, list[Path]] = {}
    for task in tasks:
        task = task.lower()
        kept = sorted(staging.glob(f"{task}-*.npz"))
        tried = {int(p.stem.split("-")[1]) for p in staging.glob(f"{task}-*.*") if p.suffix in (".npz", ".fail")}
        seed, limit = first_seed, first_seed + episodes * _MAX_ATTEMPTS_PER_EPISODE
        bar = _progress(episodes, f"collect {task}/{emb.name}", progress)
        bar.update(min(len(kept), episodes))
        while len(kept) < episodes:
            need = episodes - len(kept)
            seeds = []
            while len(seeds) < need and seed < limit:
                if seed not in tried:
                    seeds.append(seed)
                seed += 1
            if not seeds:
                raise DatasetError(f"{task}/{emb.name}: the expert succeeded in only {len(kept)} of {limit} attempts")
            jobs = [(task, robot, gripper, camera, image_size, visual_meshes, "joint", start_spread, s, None, None)
                    for s in seeds]
            for s, result in _run(jobs, min(workers, len(jobs))):
                tried.add(s)
                if not result["success"]:
                    (staging / f"{task}-{s:07d}.fail").touch()
                    continue
                frames = result["frames"]
                arrays = {k: np.stack([f[k] for f in frames]) for k in frames[0]}
                path = staging / f"{task}-{s:07d}.npz"
                partial = path.with_suffix(".partial")  # not matched by the *.npz globs if the run dies here
                with partial.open("wb") as f:
                    np.savez_compressed(f, **arrays)
                os.replace(partial, path)
                kept.append(path)
                bar.update(1)
        bar.close()
        done[task] = sorted(kept)[:episodes]
    episodes_data = []
    for task, paths in done.items():
        for path in paths:
            with np.load(path) as data:
                episodes_data.append({**{k: data[k] for k in data.files}, "task": sim_task(task).description})
    extra = {"embodyhub": {"embodiment": emb.to_card(), "collection": config,
                           "observation.environment_state": "per object: centre then one point on each of its x, y, z "
                                                            "axes at the object's half extent (m), in the arm's base frame"}}
    write_dataset(out, episodes_data, emb.control_hz, emb.name, None, extra, overwrite=True)
    emb.save_pretrained(out / EMBODIMENT_DIR)
    return out


def write_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Frames (uint8 HWC) as a looping GIF at ``fps`` (Pillow; plays in browsers and Markdown viewers)."""
    from PIL import Image

    images = [Image.fromarray(np.asarray(f)) for f in frames]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return path


def evaluate_policy(
    task: str,
    robot: str,
    episodes: int = 50,
    seed: int = EVAL_SEED_BASE,
    workers: int = 1,
    gripper: str | None = None,
    control: str = "joint",
    progress: bool = True,
    videos: int = 0,
    video_dir: str | os.PathLike | None = None,
    camera: str = "sideview",
    policy: ModelPolicy | BundlePolicy | None = None,
) -> dict[str, Any]:
    """Closed-loop success of the scripted expert (``policy`` None) or of a saved WAM (``ModelPolicy``, or an
    export bundle on onnxruntime, ``BundlePolicy``; each worker process loads it) on evaluation seeds ``seed ..
    seed + episodes - 1``; with ``control="osc"`` the WAM's decoded commands go to robosuite's OSC as end-effector
    targets instead of joint targets. The first ``videos`` episodes are also rendered from ``camera`` (full
    visual meshes) as GIFs in ``video_dir``.
    Rendering does not touch the physics, so recorded episodes score as unrecorded ones."""
    name = "expert" if policy is None else "wam"
    jobs: list[tuple] = [(task.lower(), robot, gripper, None, 84, False, control, seed + i, None, policy) for i in range(episodes)]
    if videos:
        if video_dir is None:
            raise DatasetError("videos need a video_dir")
        Path(video_dir).mkdir(parents=True, exist_ok=True)
        for i in range(min(videos, episodes)):
            jobs[i] = (task.lower(), robot, gripper, camera, VIDEO_SIZE, True, control, seed + i,
                       Path(video_dir) / f"{robot.lower()}-{task.lower()}-{name}-{control}-seed{seed + i}.gif", policy)
    results: dict[int, dict[str, Any]] = {}
    bar = _progress(episodes, f"eval {task}/{robot} ({name}, {control})", progress)
    for s, out in _run(jobs, min(workers, episodes)):
        results[s] = {"success": bool(out["success"]), "steps": int(out["steps"]), "cpu_s": float(out["cpu_s"])}
        bar.update(1)
    bar.close()
    ordered = [results[s] for s in sorted(results)]
    return {
        "task": task.lower(), "robot": robot.lower(), "control": control,
        **({"policy": "expert", "adapter": None} if policy is None else policy.describe()),
        "episodes": episodes, "seeds": [seed, seed + episodes - 1],
        "success_rate": sum(r["success"] for r in ordered) / episodes,
        "mean_steps": float(np.mean([r["steps"] for r in ordered])),
        "cpu_s_per_episode": float(np.mean([r["cpu_s"] for r in ordered])),
        "per_episode": [r["success"] for r in ordered],
        "videos": [str(j[8]) for j in jobs if j[8] is not None],
    }
