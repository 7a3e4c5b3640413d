"""WAM pretraining on LeRobot-format episodes of several robots (an accelerate loop on CPU or GPU).

Each training sample is one frame: the state ``q_t``, what else the dataset observes (goal, object
keypoints, task string) and the next ``H`` commanded configurations (padded with the episode's last
command, so the model learns to hold at the end), plus the next ``H`` states and keypoints for the
keypoint-flow targets. Batches are drawn from one dataset at a time (robots differ in token count),
datasets in turn. Data come from the synthetic reach generator (``source: synthetic``) or from the
robosuite benchmark's scripted experts (``source: sim``, one dataset per robot and task).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from ..data import LeRobotDataset, generate, load_dataset
from ..data.features import camera_feature
from ..embodiment import Embodiment, load_robot
from ..errors import RecipeError
from ..models.wam import WamConfig, WamForActionPrediction, WamProcessor
from ..recipes import Recipe


@dataclass
class PretrainRecipe(Recipe):
    """What ``embodyhub train`` reads from ``recipes/pretrain_tiny.yaml`` or ``recipes/pretrain_sim.yaml``.

    ``source: synthetic`` generates kinematic reach demos (``episodes_per_robot``, ``steps_per_episode``,
    ``goal_distance``, ``reach_profile``); ``source: sim`` collects robosuite expert demos of ``tasks`` on
    simulator arms (``episodes_per_task`` each, collection seeds from 0, ``workers`` processes, each demo
    starting ``start_spread`` metres around the arm's home pose)."""

    robots: list[str]
    held_out: list[str] = field(default_factory=list)
    source: str = "synthetic"
    episodes_per_robot: int = 200
    episodes_per_task: int = 50
    workers: int = 1
    start_spread: float = 0.0
    tasks: list[str] = field(default_factory=lambda: ["reach"])
    steps_per_episode: int = 30
    goal_distance: float | None = 0.3
    reach_profile: str = "proportional"
    model: dict[str, Any] = field(default_factory=dict)
    processor: dict[str, Any] = field(default_factory=dict)
    train_steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    eval_episodes: int = 50
    eval_max_steps: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "sim"):
            raise RecipeError(f"recipe source must be 'synthetic' or 'sim', got {self.source!r}")


def chunk_samples(
    dataset: LeRobotDataset, chunk_length: int, episodes: int | None = None, camera: str | None = None
) -> dict[str, Any]:
    """Per frame of the first ``episodes`` of each task (all if None: one dataset may hold several tasks'
    demos), under the processor's observation names: ``state``,
    ``actions`` (the next ``chunk_length``, padded with the episode's last), ``future_state`` (the states after
    each of them, padded with the last), what the dataset has of ``goal``, ``environment_state`` (then
    also ``future_environment_state``) and ``task`` (one string per frame), and with ``camera`` (a camera
    feature) its frames as ``pixel_values``. Other cameras are not decoded."""
    per_task = dataset.task_episodes
    if episodes is not None and not 1 <= episodes <= min(len(ids) for ids in per_task.values()):
        held = ", ".join(f"{len(ids)} of {task!r}" for task, ids in per_task.items())
        raise ValueError(f"asked for {episodes} episodes per task; {dataset.root} holds {held}")
    vectors = ("observation.state", "action", "observation.goal", "observation.environment_state")
    read = [k for k in vectors if k in dataset.features]
    columns: dict[str, list[Any]] = {}
    for k in sorted(k for ids in per_task.values() for k in ids[:episodes]):
        ep = dataset.episode(k, read + ([camera] if camera else []))
        T = ep["action"].shape[0]
        now = torch.arange(T)[:, None] + torch.arange(chunk_length)[None]
        parts = {"state": ep["observation.state"].double(), "actions": ep["action"].double()[now.clamp_max(T - 1)]}
        parts["future_state"] = parts["state"][(now + 1).clamp_max(T - 1)]
        if "observation.goal" in ep:
            parts["goal"] = ep["observation.goal"].double()
        if "observation.environment_state" in ep:
            points = ep["observation.environment_state"].double()
            parts["environment_state"] = points
            parts["future_environment_state"] = points[(now + 1).clamp_max(T - 1)]
        if camera:
            parts["pixel_values"] = ep[camera]
        for key, value in parts.items():
            columns.setdefault(key, []).append(value)
        columns.setdefault("task", []).extend([ep["task"]] * T)
    return {k: v if k == "task" else torch.cat(v) for k, v in columns.items()}


class RobotBatches:
    """Encodes one robot's dataset once, then serves random batches of model inputs."""

    def __init__(self, processor: WamProcessor, embodiment: Embodiment, samples: dict[str, Any], generator: torch.Generator) -> None:
        self.embodiment = embodiment
        observation = {k: v for k, v in samples.items() if k != "actions"}
        encoded = processor(observation, embodiment, actions=samples["actions"])
        encoded.pop("action_decoder")
        self.tensors = {k: v.contiguous() for k, v in encoded.items()}
        self.size = samples["state"].shape[0]
        self.generator = generator

    def sample(self, batch_size: int) -> dict[str, Tensor]:
        idx = torch.randint(self.size, (batch_size,), generator=self.generator)
        return {k: v[idx] for k, v in self.tensors.items()}


def _cycle(batches: list[RobotBatches], batch_size: int) -> Iterator[dict[str, Tensor]]:
    while True:
        for b in batches:
            yield b.sample(batch_size)


def build(recipe: PretrainRecipe) -> tuple[WamForActionPrediction, WamProcessor]:
    """A freshly initialised model and its processor holding the training robots' cards. With ``source: sim``
    the robots are the simulator's MJCF-derived arms, the processor takes as many keypoints as the largest
    task observes and its task vocabulary holds the tasks' words (unless the recipe's ``processor`` says)."""
    torch.manual_seed(recipe.seed)
    options = dict(recipe.processor)
    if recipe.source == "sim":
        from ..envs.sim import POINTS_PER_OBJECT, keypoint_count, sim_embodiment, sim_task

        embodiments = [sim_embodiment(name) for name in recipe.robots]
        options.setdefault("max_keypoints", max(keypoint_count(t) for t in recipe.tasks))
        options.setdefault("keypoints_per_object", POINTS_PER_OBJECT)
        options.setdefault("task_vocab", WamProcessor.task_words([sim_task(t).description for t in recipe.tasks]))
    else:
        embodiments = [load_robot(name) for name in recipe.robots]
    processor = WamProcessor(**options)
    for emb in embodiments:
        processor.add_embodiment(emb)
    config = WamConfig(
        action_bins=processor.action_bins,
        action_dim=processor.space.dim,
        chunk_length=processor.chunk_length,
        max_arms=processor.max_arms,
        max_keypoints=processor.max_keypoints,
        keypoints_per_object=processor.keypoints_per_object,
        task_vocab_size=processor.task_vocab_size,
        max_task_tokens=processor.max_task_tokens,
        embodiments={e.name: e.urdf_sha256 for e in embodiments},
        **recipe.model,
    )
    return WamForActionPrediction(config), processor


def train(
    model: WamForActionPrediction,
    processor: WamProcessor,
    datasets: dict[str, LeRobotDataset],
    steps: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.01,
    warmup_steps: int = 100,
    seed: int = 0,
    progress: bool = True,
    parameters: list[torch.nn.Parameter] | None = None,
    episodes: int | None = None,
    time_budget_s: float | None = None,
) -> list[dict[str, float]]:
    """AdamW with linear warm-up and cosine decay through ``accelerate``; returns the loss log.

    ``datasets`` maps a robot name (or any label, the robot then read from the dataset's ``robot_type``) to
    its demos; a model with image input (config ``image_size``) trains on each dataset's first camera.
    ``parameters`` defaults to every parameter that requires grad (a LoRA-wrapped model: the
    adapter); ``episodes`` keeps only the first episodes of each dataset; ``time_budget_s`` stops
    after that many seconds of training (the schedule still spans ``steps``), and says so.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    gen = torch.Generator().manual_seed(seed)
    image_size = getattr(model.config, "image_size", 0)
    batches = []
    for name, ds in datasets.items():
        camera = camera_feature(ds.features, image_size, ds.root) if image_size else None
        samples = chunk_samples(ds, processor.chunk_length, episodes, camera)
        robot = name if name in processor.embodiments else ds.info.get("robot_type", name)
        batches.append(RobotBatches(processor, processor.resolve(robot), samples, gen))
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    log: list[dict[str, float]] = []
    stream = _cycle(batches, batch_size)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="train", disable=not progress)
    for step in bar:
        batch = {k: v.to(accelerator.device) for k, v in next(stream).items()}
        out = model(**batch)
        accelerator.backward(out.loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        entry = {"step": step, "loss": out.loss.item(), "action_loss": out.action_loss.item(), "world_loss": out.world_loss.item()}
        log.append(entry)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{entry['loss']:.3f}", act=f"{entry['action_loss']:.3f}")
        if time_budget_s is not None and time.perf_counter() - start >= time_budget_s and step + 1 < steps:
            print(f"train: stopped on the time budget ({time_budget_s:g} s) after {step + 1} of {steps} planned steps")
            break
    model.eval()
    log.append({"step": len(log), "seconds": time.perf_counter() - start})
    return log


def prepare_data(
    recipe: Any,
    data_dir: Path,
    progress: bool = True,
    robots: list[str | Embodiment] | None = None,
    episodes: int | None = None,
) -> dict[str, LeRobotDataset]:
    """Generate the synthetic episodes (unless already there) and open them, one dataset per robot; with
    ``source: sim`` collect the expert demos instead, one dataset per robot and task (``ROBOT-TASK``).

    ``recipe`` supplies the generator settings (tasks, seed, steps_per_episode, goal_distance,
    reach_profile); ``robots`` and ``episodes`` default to its ``robots`` and ``episodes_per_robot``
    (``episodes_per_task`` for sim).
    """
    if getattr(recipe, "source", "synthetic") == "sim":
        return collect_sim(data_dir, recipe.robots if robots is None else robots, recipe.tasks,
                           episodes or recipe.episodes_per_task, recipe.workers, recipe.start_spread, progress)
    robots = list(recipe.robots if robots is None else robots)
    names = [r if isinstance(r, str) else r.name for r in robots]
    missing = [r for r, n in zip(robots, names) if not (data_dir / n / "meta" / "info.json").is_file()]
    if missing:
        generate(
            missing,
            data_dir,
            episodes_per_robot=episodes or recipe.episodes_per_robot,
            tasks=recipe.tasks,
            seed=recipe.seed,
            steps_per_episode=recipe.steps_per_episode,
            goal_distance=recipe.goal_distance,
            progress=progress,
            reach_profile=recipe.reach_profile,
        )
    return {n: load_dataset(data_dir / n) for n in names}


def collect_sim(
    data_dir: str | Path,
    robots: Sequence[str | Embodiment],
    tasks: Sequence[str],
    episodes: int,
    workers: int = 1,
    start_spread: float = 0.0,
    progress: bool = True,
) -> dict[str, LeRobotDataset]:
    """Scripted-expert demos per simulator robot and task in ``data_dir/ROBOT-TASK`` (``embodyhub.envs.sim.collect``:
    collection seeds from 0, never the evaluation seeds; resumable), by that name; a folder that already holds
    ``episodes`` demos with the same ``start_spread`` is reused as is (pretraining and ``embodyhub adapt --env``
    share this layout, so one collection serves several runs)."""
    from ..envs.sim import collect

    datasets = {}
    for robot in robots:
        name = robot if isinstance(robot, str) else robot.name
        for task in tasks:
            folder = Path(data_dir) / f"{name}-{task}"
            have = load_dataset(folder) if (folder / "meta" / "info.json").is_file() else None
            recorded = ((have.info.get("embodyhub") or {}).get("collection") or {}) if have is not None else {}
            # another spread is not skipped: collect refuses the folder with a clear error
            if have is None or have.num_episodes < episodes or recorded.get("start_spread", 0.0) != start_spread:
                collect([task], name, episodes, folder, workers=workers, progress=progress, start_spread=start_spread)
                have = load_dataset(folder)
            datasets[f"{name}-{task}"] = have
    return datasets
