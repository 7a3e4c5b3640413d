"""Training: tiny WAM pretraining, LoRA adapters per robot, closed-loop evaluation (GRPO joins with its issue)."""

from .evaluate import evaluate_reach, plot_results, wam_policy
from .lora import attach_adapter, load_adapter, lora_config, save_adapter
from .pretrain import PretrainRecipe, build, chunk_samples, prepare_data, train

__all__ = [
    "PretrainRecipe",
    "attach_adapter",
    "build",
    "chunk_samples",
    "evaluate_reach",
    "load_adapter",
    "lora_config",
    "plot_results",
    "prepare_data",
    "save_adapter",
    "train",
    "wam_policy",
]
