"""Training: tiny WAM pretraining, LoRA adapters per robot, closed-loop evaluation, GRPO post-training through TRL."""

from .evaluate import evaluate_reach, plot_results, wam_policy
from .grpo import GrpoRecipe, WamGRPOTrainer, reach_prompts, run_grpo
from .lora import AdaptRecipe, adapt, attach_adapter, demos_per_task, load_adapter, lora_config, save_adapter, trainable_share
from .pretrain import PretrainRecipe, build, chunk_samples, collect_sim, prepare_data, train
from .rewards import ReachReward, WorldModelReward

__all__ = [
    "AdaptRecipe",
    "GrpoRecipe",
    "PretrainRecipe",
    "ReachReward",
    "WamGRPOTrainer",
    "WorldModelReward",
    "adapt",
    "attach_adapter",
    "build",
    "chunk_samples",
    "collect_sim",
    "demos_per_task",
    "evaluate_reach",
    "load_adapter",
    "lora_config",
    "plot_results",
    "prepare_data",
    "reach_prompts",
    "run_grpo",
    "save_adapter",
    "train",
    "trainable_share",
    "wam_policy",
]
