"""GRPO post-training of a WAM through TRL: ``WamGRPOTrainer(trl.GRPOTrainer)``.

TRL keeps everything that makes GRPO GRPO: prompt grouping (``RepeatSampler``), rewards and
group-relative advantages, the loss variants (``loss_type``), the KL term against a reference model
(a frozen copy of the policy, or the adapter's own copy / disabled adapters under PEFT),
accelerate/DDP, logging and saving. This subclass only replaces the seams where a language model's
token prompt would flow, because a WAM's prompt is a continuous observation:

- ``_tokenize_prompts``: the "prompt" is an observation ``{"robot", "q", "goal"}``; its token ids
  are just the action BOS, and the observation is kept for the two passes below.
- ``_generate_single_turn``: the ``num_generations`` copies of one observation that TRL's sampler
  places side by side are decoded together by ``WamForActionPrediction.sample_action_tokens``: the
  prefix (embodiment, state, goal tokens) is encoded once and its KV cache shared by all paths
  (an ``AppendingLayer`` cache, so the growing cache is not re-copied at every token).
- ``_get_per_token_logps_and_entropies``: log-probs of the action tokens from the model's forward
  (per robot, since robots differ in token count), with the same temperature and the same BOS mask
  as sampling; the prefix is again encoded once per distinct observation and its cache gathered
  for every path, so the pass (and its backward) does not grow with the prefix times G.
- ``_generate_and_score_completions`` / ``_compute_loss``: carry the observations with the batch
  through TRL's shuffle and split.
- ``_save``: write the ``WamProcessor`` (or, under PEFT, the robot's adapter folder) next to the weights.

``TRL_SEAMS`` lists the overridden private methods; ``tests/test_grpo.py`` fails loudly if TRL renames them.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from unittest import mock

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from torch import Tensor
from transformers import PreTrainedTokenizer, PrinterCallback, ProgressCallback, TrainerCallback
from transformers.cache_utils import Cache, DynamicLayer
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import unwrap_model_for_generation
from trl.trainer import grpo_trainer as _trl_grpo

from ..embodiment import Embodiment
from ..errors import EmbodyHubError, InvalidActionError
from ..models.wam import WamForActionPrediction, WamProcessor
from .evaluate import evaluate_reach, save_figure
from .lora import save_adapter
from ..recipes import Recipe
from .rewards import ReachReward, WorldModelReward, group_by_robot, observation_tensors

TRL_SEAMS = (
    "_tokenize_prompts",
    "_generate_single_turn",
    "_generate_and_score_completions",
    "_get_per_token_logps_and_entropies",
    "_compute_loss",
    "_save",
)

__all__ = ["ActionTokenizer", "AppendingLayer", "GRPOConfig", "GrpoRecipe", "TRL_SEAMS", "WamGRPOTrainer", "grpo_config", "reach_prompts", "run_grpo", "trainable_adapter"]


class ActionTokenizer(PreTrainedTokenizer):
    """The action-token vocabulary as a tokenizer (``<a0>`` ... ``<aN-1>``, then ``<bos>``), so TRL can
    pad, log and decode completions; BOS doubles as pad and EOS (action chunks have a fixed length)."""

    def __init__(self, action_bins: int = 256, **kwargs: Any) -> None:
        self.action_bins = action_bins
        for key in ("bos_token", "eos_token", "pad_token"):
            kwargs.setdefault(key, "<bos>")
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return self.action_bins + 1

    def get_vocab(self) -> dict[str, int]:
        return {self._convert_id_to_token(i): i for i in range(self.vocab_size)}

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return text.split()

    def _convert_token_to_id(self, token: str) -> int:
        if token == "<bos>":
            return self.action_bins
        if token.startswith("<a") and token.endswith(">") and token[2:-1].isdigit() and int(token[2:-1]) < self.action_bins:
            return int(token[2:-1])
        raise InvalidActionError(f"'{token}' is not an action token")

    def _convert_id_to_token(self, index: int) -> str:
        return "<bos>" if index == self.action_bins else f"<a{index}>"

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()


class AppendingLayer(DynamicLayer):
    """A ``DynamicLayer`` that appends into a buffer with spare room (doubling when full) instead of
    concatenating the whole cache at every token: decoding ``num_generations`` paths at once otherwise
    spends most of its time re-copying the shared prefix. For ``torch.no_grad`` decoding (in-place writes)."""

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self.get_seq_length(), key_states.shape[-2]
        storage = getattr(self, "_storage", None)
        # Re-allocate when full, or when keys were replaced (batch_repeat_interleave, batch_select_indices).
        if storage is None or n + m > storage[0].shape[-2] or (n and self.keys.data_ptr() != storage[0].data_ptr()):
            size = max(2 * (n + m), 64)
            storage = tuple(x.new_empty(*x.shape[:-2], size, x.shape[-1]) for x in (key_states, value_states))
            if n:
                storage[0][..., :n, :] = self.keys
                storage[1][..., :n, :] = self.values
            self._storage = storage
        storage[0][..., n : n + m, :] = key_states
        storage[1][..., n : n + m, :] = value_states
        self.keys, self.values = storage[0][..., : n + m, :], storage[1][..., : n + m, :]
        return self.keys, self.values


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


class WamGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` for World-Action Models: prompts are observations, completions are action tokens.

    Args:
        model: a ``WamForActionPrediction``, or a ``PeftModel`` around one whose active adapter is trained
            (``embodyhub.training.lora.attach_adapter`` / ``load_adapter``; the adapter must be trainable).
        reward_funcs: TRL reward callables (see ``embodyhub.training.rewards``).
        args: a ``trl.GRPOConfig``; ``temperature`` and ``beta`` act as in TRL. Nucleus/top-k sampling,
            repetition penalty, vLLM and tools do not apply to action tokens and are refused.
        train_dataset: a ``datasets.Dataset`` whose ``prompt`` column holds observations
            ``{"robot": name, "q": [dof], "goal": [n_arms * 9]}`` (``reach_prompts`` builds one).
        processor: the model's ``WamProcessor``.
        embodiments: robots by name that the processor has no card for (e.g. a new robot's adapter).
    """

    def __init__(
        self,
        model: WamForActionPrediction | Any,
        reward_funcs: Callable | list[Callable],
        args: GRPOConfig,
        train_dataset: Any,
        processor: WamProcessor,
        embodiments: dict[str, Embodiment] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        **kwargs: Any,
    ) -> None:
        unsupported = {
            "top_p": args.top_p != 1.0,
            "top_k": bool(args.top_k),
            "min_p": args.min_p is not None,
            "repetition_penalty": args.repetition_penalty != 1.0,
            "use_vllm": args.use_vllm,
            "use_transformers_continuous_batching": args.use_transformers_continuous_batching,
            "mask_truncated_completions": args.mask_truncated_completions,  # action chunks never end with EOS
        }
        refused = [k for k, bad in unsupported.items() if bad]
        if refused:
            raise ValueError(f"WamGRPOTrainer samples action tokens itself; unsupported GRPOConfig settings: {refused}")
        if args.ddp_find_unused_parameters is None:
            args.ddp_find_unused_parameters = True  # the world head gets no gradient from the policy loss
        self.wam_processor = processor
        self.embodiments = dict(embodiments or {})
        self._wam_observations: list[dict[str, Any]] = []
        # TRL copies a pretrained adapter into a frozen "ref" adapter only when it is named "default"; ours
        # are named after their robot, so alias the config while TRL adds "ref", then copy the weights.
        alias = None
        if is_peft_model(model) and args.beta != 0.0 and "default" not in model.peft_config:
            alias = model.active_adapter
            model.peft_config["default"] = model.peft_config[alias]
        # TRL 1.16 rebuilds the reference model from ``config._name_or_path`` and reads ``config.auto_map``,
        # which a natively registered model has no reason to carry: use a frozen copy of the policy instead.
        reference = mock.patch.object(_trl_grpo, "create_model_from_path", lambda *a, **k: _frozen_copy(model))
        with reference if not is_peft_model(model) else nullcontext():
            try:
                super().__init__(
                    model=model,
                    reward_funcs=reward_funcs,
                    args=args,
                    train_dataset=train_dataset,
                    processing_class=ActionTokenizer(processor.action_bins),
                    callbacks=callbacks,
                    **kwargs,
                )
            finally:
                if alias is not None:
                    del model.peft_config["default"]
        if alias is not None:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if f".{alias}." in name:
                        model.get_parameter(name.replace(f".{alias}.", ".ref.")).copy_(param)
            for name, param in model.named_parameters():
                if ".ref." in name:
                    param.requires_grad_(False)
            model.set_adapter(alias)

    # ------------------------------------------------------------------ observations
    def robot(self, name: str) -> Embodiment:
        """The embodiment a prompt names: one passed to the trainer, else the processor's card."""
        return self.embodiments[name] if name in self.embodiments else self.wam_processor.resolve(name)

    def _encode(self, observations: Sequence[dict[str, Any]], embodiment: Embodiment) -> dict[str, Tensor]:
        q, goal = observation_tensors(observations, list(range(len(observations))))
        batch = dict(self.wam_processor({"state": q, "goal": goal}, embodiment))
        batch.pop("action_decoder")
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def _tokenize_prompts(self, prompts: list) -> tuple[list[list[int]], None, dict]:
        """Observations in, BOS-only prompt ids out; the observations are kept for generation and log-probs."""
        for p in prompts:
            if not isinstance(p, dict) or not {"robot", "q", "goal"} <= set(p):
                raise InvalidActionError(f"a GRPO prompt must be an observation {{'robot', 'q', 'goal'}}, got {p!r:.200}")
        self._wam_observations = list(prompts)
        return [[self.wam_processor.action_bins] for _ in prompts], None, {}

    def _generate_single_turn(
        self, prompt_ids: list, images: Any, multimodal_fields: dict, num_generations: int, has_tool_images: bool = False
    ) -> tuple[list[list[int]], None]:
        """Sample every path of a run of identical observations in one cached decode (shared prefix)."""
        obs = self._wam_observations
        runs: list[tuple[int, int]] = []  # (first row, copies); TRL's sampler puts a prompt's copies side by side
        for i, o in enumerate(obs):
            if runs and o == obs[runs[-1][0]]:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((i, 1))
        groups: dict[tuple[str, int], list[int]] = {}
        for start, copies in runs:
            groups.setdefault((obs[start]["robot"], copies), []).append(start)
        completion_ids: list[list[int]] = [[] for _ in obs]
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
        ):
            for (name, copies), starts in groups.items():
                inputs = self._encode([obs[s] for s in starts], self.robot(name))
                dims, steps = inputs.pop("action_dims"), inputs.pop("action_steps")
                tokens = unwrapped.sample_action_tokens(
                    dims, steps, num_samples=copies, do_sample=True, temperature=self.temperature,
                    cache=Cache(layer_class_to_replicate=AppendingLayer), **inputs,
                )["tokens"].cpu()
                for j, s in enumerate(starts):
                    for g in range(copies):
                        completion_ids[s + g] = tokens[j * copies + g].tolist()
        return completion_ids, None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        output["observations"] = list(self._wam_observations)  # shuffled and split by TRL with the rest
        return output

    def _compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> Tensor:
        self._wam_observations = inputs["observations"]
        return super()._compute_loss(model, inputs)

    def _action_logits(
        self, model: torch.nn.Module, observations: list[dict[str, Any]], embodiment: Embodiment, completions: Tensor
    ) -> Tensor:
        """Action logits ``[n, L, vocab]`` for teacher-forced completions of one robot's observations.

        The ``num_generations`` paths of an observation share its prefix (embodiment, state, goal tokens):
        it is encoded once per distinct observation and its KV cache gathered for every path, like in
        sampling, so the pass costs one prefix per observation plus the action tokens of every path
        (not under activation checkpointing)."""
        keys: dict[str, int] = {}
        distinct: list[int] = []  # first row of each distinct observation
        inverse: list[int] = []  # row -> its distinct observation
        for i, o in enumerate(observations):
            key = json.dumps(o, sort_keys=True)
            if key not in keys:
                keys[key] = len(distinct)
                distinct.append(i)
            inverse.append(keys[key])
        inputs = self._encode([observations[i] for i in distinct], embodiment)
        dims, steps = inputs.pop("action_dims"), inputs.pop("action_steps")
        L = dims.shape[1]
        targets = completions[:, :L]
        bos = torch.full_like(targets[:, :1], self.wam_processor.action_bins)
        rows = torch.tensor(inverse, device=completions.device)
        with self.accelerator.autocast():
            # Nothing shared, or activation checkpointing (its recompute cannot replay a cache): one pass per row.
            if len(distinct) == len(observations) or self.args.activation_checkpointing:
                ids = torch.cat([bos, targets[:, :-1]], 1)
                expand = {k: v[rows] for k, v in inputs.items()}
                return model(input_ids=ids, action_dims=dims[rows], action_steps=steps[rows], **expand).logits
            first = model(input_ids=bos[: len(distinct)], action_dims=dims[:, :1], action_steps=steps[:, :1], use_cache=True, **inputs)
            if L == 1:
                return first.logits[rows]
            cache = first.cache
            cache.batch_select_indices(rows)
            mask = torch.cat([first.attention_mask[rows], first.attention_mask.new_ones(len(inverse), L - 1)], 1)
            rest = model(
                input_ids=targets[:, :-1], action_dims=dims[rows, 1:], action_steps=steps[rows, 1:],
                cache=cache, use_cache=True, attention_mask=mask,
            )
            return torch.cat([first.logits[rows], rest.logits], 1)

    def _get_per_token_logps_and_entropies(
        self,
        model: torch.nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        **multimodal: Any,
    ) -> tuple[Tensor, Tensor | None, None]:
        """Log-probs (and entropies) ``[B, logits_to_keep]`` of the sampled action tokens, zero past each robot's length."""
        obs = self._wam_observations
        if len(obs) != input_ids.shape[0]:
            raise RuntimeError(f"{len(obs)} observations for {input_ids.shape[0]} completions: TRL's batch layout changed")
        completions = input_ids[:, -logits_to_keep:]
        B, C = completions.shape
        logps = torch.zeros(B, C, device=input_ids.device)
        entropies = torch.zeros(B, C, device=input_ids.device) if compute_entropy else None
        bins = self.wam_processor.action_bins
        chunk = batch_size or B
        for name, rows in group_by_robot(obs).items():
            emb = self.robot(name)
            for start in range(0, len(rows), chunk):
                idx = rows[start : start + chunk]
                index = torch.tensor(idx, device=input_ids.device)
                logits = self._action_logits(model, [obs[i] for i in idx], emb, completions[index])
                L = logits.shape[1]
                targets = completions[index, :L]
                logits = logits.float() / self.temperature
                logits = logits.masked_fill(torch.arange(logits.shape[-1], device=logits.device) >= bins, float("-inf"))
                log_probs = torch.log_softmax(logits, -1)
                picked = log_probs.gather(-1, targets[..., None]).squeeze(-1)
                logps = logps.index_copy(0, index, F.pad(picked, (0, C - L)))
                if entropies is not None:
                    finite = torch.where(torch.isfinite(log_probs), log_probs, torch.zeros_like(log_probs))
                    ent = -(log_probs.exp() * finite).sum(-1)
                    entropies = entropies.index_copy(0, index, F.pad(ent, (0, C - L)))
        return logps, entropies, None

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Full model: weights + ``WamProcessor`` (loadable with ``AutoModel``/``AutoProcessor``). PEFT: the
        active robot adapter with its embodiment card and base signature (``lora.load_adapter``)."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        unwrapped = self.accelerator.unwrap_model(self.model)
        if is_peft_model(unwrapped):
            if self.args.should_save:
                save_adapter(unwrapped, self.robot(unwrapped.active_adapter), output_dir)
            return
        tokenizer, self.processing_class = self.processing_class, self.wam_processor
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.processing_class = tokenizer


def trainable_adapter(model: Any) -> Any:
    """Make the active adapter of a ``PeftModel`` trainable (``load_adapter`` loads it for inference)."""
    for name, param in model.named_parameters():
        if f".{model.active_adapter}." in name:
            param.requires_grad_(True)
    return model


# ---------------------------------------------------------------------------------------------- recipe & driver
@dataclass
class GrpoRecipe(Recipe):
    """What ``embodyhub grpo`` reads from ``recipes/grpo_reach.yaml``."""

    prompts: int = 256
    rollout_prompts: bool = True
    goal_distance: float | None = 0.3
    prompt_seed: int = 7
    steps: int = 60
    time_budget_s: float | None = None
    num_generations: int = 8
    observations_per_step: int = 8
    learning_rate: float = 1e-4
    beta: float = 0.0
    temperature: float = 1.0
    loss_type: str = "dapo"
    epsilon: float = 0.2
    num_iterations: int = 1
    reward: dict[str, float] = field(default_factory=dict)
    world_model_weight: float = 0.0
    lora: dict[str, Any] = field(default_factory=lambda: {"r": 8, "alpha": 16})
    eval_every: int = 20
    eval_episodes: int = 50
    eval_max_steps: int = 60
    eval_seed: int = 1234
    seed: int = 0
    checkpoint_every: int = 20  # steps between the resumable checkpoints in OUT/trainer (0: none)


PROGRESS_FILE = "grpo_progress.json"  # beside each checkpoint: evaluations, training seconds, recipe
RESUMABLE_CHANGES = ("steps", "time_budget_s", "checkpoint_every")  # recipe fields a resumed run may change


def reach_prompts(
    embodiments: Sequence[Embodiment],
    n: int,
    seed: int = 7,
    goal_distance: float | None = 0.3,
    model: WamForActionPrediction | None = None,
    processor: WamProcessor | None = None,
    max_steps: int = 60,
) -> Any:
    """A ``datasets.Dataset`` of ``n`` observations per robot (``prompt`` column) on training targets.

    Without a model: start states of random reaches. With one: every state where the model's own
    closed-loop episodes re-plan (on-policy states, near the goal as well as at the start), drawn from
    episodes seeded apart from the evaluation's held-out targets."""
    from datasets import Dataset

    from ..envs import ReachEnv, goal_vector
    from .evaluate import wam_policy

    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(seed)
    for emb in embodiments:
        seen: list[tuple[Tensor, Tensor]] = []
        if model is None or processor is None:
            env = ReachEnv(emb, batch_size=n, seed=seed, goal_distance=goal_distance)
            obs = env.reset()
            seen.append((obs["q"], goal_vector(obs["goal"])))
        else:
            episodes = max(1, n // 4)
            env = ReachEnv(emb, batch_size=episodes, seed=seed, goal_distance=goal_distance, max_steps=max_steps)
            policy = wam_policy(model, processor, emb)

            def recording(o: dict[str, Tensor]) -> Tensor:
                seen.append((o["q"], goal_vector(o["goal"])))
                return policy(o)

            env.evaluate(recording, episodes, seed=seed)
        q = torch.cat([s[0] for s in seen])
        goal = torch.cat([s[1] for s in seen])
        pick = torch.randperm(q.shape[0], generator=gen)[:n]
        rows += [{"robot": emb.name, "q": q[i].tolist(), "goal": goal[i].tolist()} for i in pick.tolist()]
    return Dataset.from_list([{"prompt": r} for r in rows])


class _BarOnly(ProgressCallback):
    """transformers' progress bar (steps, ETA) without its logs: TRL's metrics dict per step is for ``verbose``."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        return None


class _EvalCallback(TrainerCallback):
    """Closed-loop reach success every ``every`` steps (main process), a wall-clock budget, and a progress line.

    The clock starts at ``start`` (so collecting prompts counts) and leaves out the evaluations. Stopping on
    the budget is said on the console and kept in ``budget_stop`` (the run then has fewer steps than planned)."""

    def __init__(
        self, trainer_ref: list, embodiments: list[Embodiment], recipe: GrpoRecipe, progress: bool, start: float,
        resumed: dict[str, Any] | None = None,
    ) -> None:
        """``resumed``: the ``PROGRESS_FILE`` of the checkpoint a killed run resumes from (its evaluations and
        training seconds carry on)."""
        self.trainer_ref, self.embodiments, self.recipe, self.progress = trainer_ref, embodiments, recipe, progress
        self.history: list[dict[str, Any]] = list((resumed or {}).get("history", []))
        self.start, self.eval_seconds, self.carried = start, 0.0, float((resumed or {}).get("seconds", 0.0))
        self.budget_stop: dict[str, Any] | None = None

    def seconds(self) -> float:
        """Training wall-clock so far, evaluations excluded (a resumed run's earlier seconds included)."""
        return time.perf_counter() - self.start - self.eval_seconds + self.carried

    def evaluate(self, step: int) -> None:
        began = time.perf_counter()
        trainer = self.trainer_ref[0]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        r = self.recipe
        results = evaluate_reach(
            model, trainer.wam_processor, self.embodiments, r.eval_episodes, r.eval_max_steps, r.eval_seed, goal_distance=r.goal_distance
        )
        model.train(was_training)
        entry = {"step": step, "seconds": self.seconds()}
        entry.update({name: res["success_rate"] for name, res in results.items()})
        self.history.append(entry)
        self.eval_seconds += time.perf_counter() - began
        if self.progress:
            rates = ", ".join(f"{n} {100 * res['success_rate']:.0f}%" for n, res in results.items())
            print(f"[grpo] step {step}: closed-loop reach success {rates} ({entry['seconds']:.0f} s)", flush=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        budget = self.recipe.time_budget_s
        if budget is not None and self.seconds() >= budget and state.global_step < state.max_steps:
            control.should_training_stop = True
            self.budget_stop = {"time_budget_s": budget, "steps": state.global_step, "planned_steps": state.max_steps}
            print(f"[grpo] stopped on the time budget ({budget:g} s) after {state.global_step} of {state.max_steps} "
                  "planned steps: results are from a shorter run than the recipe asks", flush=True)
        every = self.recipe.eval_every
        if state.is_world_process_zero and every and (state.global_step % every == 0 or control.should_training_stop):
            self.evaluate(state.global_step)
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Beside the checkpoint just written: what a resumed run needs that the Trainer does not keep."""
        if state.is_world_process_zero:
            progress = {"history": self.history, "seconds": self.seconds(), "recipe": asdict(self.recipe)}
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
        return control


def _resumable(checkpoint: Path, recipe: GrpoRecipe) -> dict[str, Any]:
    """The progress saved beside ``checkpoint``, if the run that wrote it had the same recipe (but for
    ``RESUMABLE_CHANGES``); else ``EmbodyHubError``."""
    path = checkpoint / PROGRESS_FILE
    progress = json.loads(path.read_text()) if path.is_file() else {}
    saved, mine = progress.get("recipe", {}), asdict(recipe)
    changed = sorted(k for k in mine if k not in RESUMABLE_CHANGES and k in saved and saved[k] != mine[k])
    if changed:
        raise EmbodyHubError(
            f"{checkpoint} is a killed run with another recipe ({', '.join(changed)} differ): resume with the same recipe, "
            f"or delete {checkpoint.parent} to start over"
        )
    return progress


def plot_curve(rewards: list[tuple[int, float]], success: list[dict[str, Any]], path: str | Path, title: str = "GRPO") -> Path:
    """Mean reward per step and closed-loop reach success (%) per evaluation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    robots = [k for k in (success[0] if success else {}) if k not in ("step", "seconds")]
    fig, axes = plt.subplots(1, 2 if robots else 1, figsize=(10 if robots else 5.5, 3.6), squeeze=False)
    a = axes[0, 0]
    steps, values = [s for s, _ in rewards], [v for _, v in rewards]
    if len(rewards) < 20:
        a.plot(steps, values, "o-", color="tab:blue", label="mean group reward")
    else:  # one step's reward is noisy: show it faint, and its running mean over 10 steps
        a.plot(steps, values, "-", color="tab:blue", alpha=0.3, lw=1, label="mean group reward per step")
        window = [sum(values[max(0, i - 9) : i + 1]) / len(values[max(0, i - 9) : i + 1]) for i in range(len(values))]
        a.plot(steps, window, "-", color="tab:blue", lw=2, label="running mean, 10 steps")
        a.legend(fontsize=8)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_xlabel("GRPO step")
    a.set_ylabel("mean reward")
    a.set_title(f"{title}: reward per step" if rewards else f"{title}: no reward logged")
    if robots:  # a second panel only when evaluations ran (eval_every > 0)
        b = axes[0, 1]
        for name in robots:
            b.plot([e["step"] for e in success], [100 * e[name] for e in success], "o-", label=name)
        b.set_ylim(0, 105)
        b.set_xlabel("GRPO step")
        b.set_ylabel("closed-loop success (%)")
        b.set_title(f"{title}: held-out reach")
        b.legend()
    return save_figure(fig, path)


def grpo_config(recipe: GrpoRecipe, output_dir: str | Path, **overrides: Any) -> GRPOConfig:
    """The ``GRPOConfig`` a recipe stands for (``overrides`` win): constant learning rate, one log line per
    step, the latest resumable checkpoint every ``recipe.checkpoint_every`` steps (weights or adapter,
    optimizer, scheduler, RNG states; none when 0). Activation checkpointing (TRL's default) is off: it
    trades a second forward for memory that a small WAM does not need; pass ``activation_checkpointing=True``
    for a large one."""
    config = dict(
        output_dir=str(output_dir),
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.observations_per_step * recipe.num_generations,
        num_generations=recipe.num_generations,
        learning_rate=recipe.learning_rate,
        beta=recipe.beta,
        temperature=recipe.temperature,
        loss_type=recipe.loss_type,
        epsilon=recipe.epsilon,
        num_iterations=recipe.num_iterations,
        reward_weights=[1.0] + ([recipe.world_model_weight] if recipe.world_model_weight else []),
        logging_steps=1,
        save_strategy="steps" if recipe.checkpoint_every else "no",
        **({"save_steps": recipe.checkpoint_every, "save_total_limit": 1} if recipe.checkpoint_every else {}),
        report_to="none",
        seed=recipe.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # TRL's bf16 default would autocast on CPU
        activation_checkpointing=False,
        lr_scheduler_type="constant",
        warmup_steps=0,
    )
    config.update(overrides)
    return GRPOConfig(**config)


def run_grpo(
    model: WamForActionPrediction | Any,
    processor: WamProcessor,
    embodiments: list[Embodiment],
    recipe: GrpoRecipe,
    out: str | Path,
    progress: bool = True,
    save: bool = True,
    resume: bool = True,
    verbose: bool = False,
    **config_overrides: Any,
) -> dict[str, Any]:
    """GRPO on closed-loop reach for ``embodiments``: prompts, rewards, trainer, periodic evaluation, curve PNG.

    A run killed before it finished leaves its latest checkpoint in ``out/trainer``; with ``resume`` the next
    call with the same ``out`` and recipe (``steps`` and ``time_budget_s`` may change) continues from it:
    weights or adapter, optimizer, scheduler, RNG states, step count, evaluations and training seconds. (The
    prompt order after resuming may differ from an unbroken run's: TRL's sampler does not save its shuffle
    state.) A run that finishes deletes its checkpoints, so running again starts over.

    Returns ``{"history": [...], "rewards": [(step, mean reward)], "trainer": ..., "seconds": ...}`` where
    ``seconds`` is the training wall-clock (prompt collection included, evaluations excluded) that
    ``recipe.time_budget_s`` bounds, and ``budget_stop`` (None, or the steps done when the budget stopped the run);
    ``progress`` shows a progress bar and evaluation lines, ``verbose`` also TRL's metrics each step;
    with ``save`` writes ``out/model`` (or the adapter folder), ``out/grpo_log.json`` and ``out/grpo_curve.png``."""
    start = time.perf_counter()
    out = Path(out)
    base = model.get_base_model() if is_peft_model(model) else model
    base.eval()
    prompts = reach_prompts(
        embodiments, recipe.prompts, recipe.prompt_seed, recipe.goal_distance,
        base if recipe.rollout_prompts else None, processor, recipe.eval_max_steps,
    )
    by_name = {e.name: e for e in embodiments}
    rewards: list[Any] = [ReachReward(processor, by_name, model=model, **recipe.reward)]  # model: for rollout_steps
    if recipe.world_model_weight:
        rewards.append(WorldModelReward(base, processor, by_name))
    config = grpo_config(recipe, out / "trainer", disable_tqdm=not progress, **config_overrides)
    checkpoint = get_last_checkpoint(str(out / "trainer")) if resume and (out / "trainer").is_dir() else None
    resumed = _resumable(Path(checkpoint), recipe) if checkpoint else None
    holder: list = []
    callback = _EvalCallback(holder, embodiments, recipe, progress, start, resumed)
    trainer = WamGRPOTrainer(model, rewards, config, prompts, processor, by_name, callbacks=[callback])
    holder.append(trainer)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    elif not verbose:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_BarOnly)
    if recipe.eval_every and trainer.accelerator.is_main_process and not checkpoint:
        callback.evaluate(0)
    if checkpoint and progress:
        print(f"[grpo] resuming a killed run from {checkpoint}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = callback.seconds()
    if trainer.accelerator.is_main_process:  # finished: nothing to resume, the next run starts over
        for done in (out / "trainer").glob("checkpoint-*"):
            shutil.rmtree(done)
    if callback.history and callback.history[-1]["step"] != trainer.state.global_step and trainer.accelerator.is_main_process:
        callback.evaluate(trainer.state.global_step)
    reward_curve = [(e["step"], e["reward"]) for e in trainer.state.log_history if "reward" in e]
    log = {"history": callback.history, "rewards": reward_curve, "seconds": seconds, "budget_stop": callback.budget_stop}
    result = {**log, "trainer": trainer}
    if save and trainer.accelerator.is_main_process:
        trainer.save_model(str(out / "model"))
        (out / "grpo_log.json").write_text(json.dumps(log, indent=2))
        result["curve"] = plot_curve(reward_curve, callback.history, out / "grpo_curve.png", f"GRPO ({', '.join(by_name)})")
    return result
