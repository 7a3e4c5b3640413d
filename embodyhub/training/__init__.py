"""Training: tiny WAM pretraining, closed-loop evaluation (LoRA and GRPO join as their issues land)."""

from .evaluate import evaluate_reach, plot_results, wam_policy
from .pretrain import PretrainRecipe, build, chunk_samples, prepare_data, train

__all__ = ["PretrainRecipe", "build", "chunk_samples", "evaluate_reach", "plot_results", "prepare_data", "train", "wam_policy"]
