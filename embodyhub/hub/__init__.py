"""Publishing to the Hugging Face Hub: model cards for base models, robot adapters and Thor export
bundles; ``publish`` (create_repo + one commit); embodiment checks run when a checkpoint or adapter loads."""

from .cards import KINDS, RenderedCard, detect_kind, embodiment_cards, render_card
from .checks import EmbodimentAdaptedWarning, check_adapter, check_checkpoint, check_embodiment
from .publish import PublishResult, find_eval, folder_files, publish, push_pretrained

__all__ = [
    "KINDS",
    "EmbodimentAdaptedWarning",
    "PublishResult",
    "RenderedCard",
    "check_adapter",
    "check_checkpoint",
    "check_embodiment",
    "detect_kind",
    "embodiment_cards",
    "find_eval",
    "folder_files",
    "publish",
    "push_pretrained",
    "render_card",
]
