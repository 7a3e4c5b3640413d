"""World-Action Model (``model_type="wam"``), registered with the transformers Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .action_tokenizer import BinningActionTokenizer
from .configuration_wam import WamConfig
from .modeling_wam import ActionQueue, WamForActionPrediction, WamModel, WamPreTrainedModel
from .processing_wam import WamProcessor

# Plain registration (no register_for_auto_class, no auto_map): loading never needs trust_remote_code.
# AutoModel gives the full action model, which is what a robot user loads.
AutoConfig.register("wam", WamConfig, exist_ok=True)
AutoModel.register(WamConfig, WamForActionPrediction, exist_ok=True)
AutoProcessor.register(WamConfig, WamProcessor, exist_ok=True)

__all__ = [
    "ActionQueue",
    "BinningActionTokenizer",
    "WamConfig",
    "WamForActionPrediction",
    "WamModel",
    "WamPreTrainedModel",
    "WamProcessor",
]
