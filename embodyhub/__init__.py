"""embodyhub: cross-embodiment World-Action Models on the Hugging Face stack, driven by your robot's URDF.

Importing the package is cheap (no torch, no transformers): public names load on first use. The
``"wam"`` model type is registered with the transformers Auto classes as soon as transformers is
imported, before or after this package, so ``AutoModel.from_pretrained`` needs no ``trust_remote_code``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Sequence

from ._lazy import lazy_exports
from .errors import (
    EmbodimentMismatchError,
    EmbodyHubError,
    InvalidActionError,
    KinematicsError,
    URDFError,
)

__version__ = "0.1.0"

__all__ = [
    "EmbodimentMismatchError",
    "EmbodyHubError",
    "InvalidActionError",
    "KinematicChain",
    "KinematicsError",
    "RobotModel",
    "URDFError",
    "WamConfig",
    "WamForActionPrediction",
    "WamModel",
    "WamProcessor",
    "__version__",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "KinematicChain": ".kinematics",
        "RobotModel": ".kinematics",
        **{name: ".models.wam" for name in ("WamConfig", "WamForActionPrediction", "WamModel", "WamProcessor")},
    },
)

_MODELS = f"{__name__}.models.wam"  # importing it registers the Auto classes


class _RegisterOnTransformersImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``transformers`` is first imported, registers ``"wam"`` right after it loads."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            importlib.import_module(_MODELS)

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "transformers" in sys.modules:
    importlib.import_module(_MODELS)
else:
    sys.meta_path.insert(0, _RegisterOnTransformersImport())
