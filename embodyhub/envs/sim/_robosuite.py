"""Import robosuite quietly and check the one MuJoCo it works with.

robosuite 1.5.2 fails inside ``suite.make`` with MuJoCo 4 (``get_joint_qpos_addr``), so the version is
checked up front with a one-line error. Its import-time log lines (no private macro file, no mink,
no robosuite_models) are silenced through robosuite's own private-macro mechanism: a
``robosuite.macros_private`` module set before the import, which also picks the OpenCV image
convention (rows top to bottom). Headless rendering defaults to MuJoCo's EGL backend.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

from ...errors import EmbodyHubError

MUJOCO_VERSION = "3.3.7"
ROBOSUITE_VERSION = "1.5.2"
INSTALL_HINT = f'pip install "embodyhub[sim]" && pip install --no-deps robosuite=={ROBOSUITE_VERSION}'


class SimulatorError(EmbodyHubError, RuntimeError):
    """The simulator is missing, the wrong version, or cannot render here."""


def import_robosuite() -> Any:
    """``robosuite`` after checking MuJoCo's and robosuite's versions; silent on import."""
    _load_triton_first()  # every call: robosuite may have been imported directly, before any context exists
    if "robosuite" in sys.modules:
        return sys.modules["robosuite"]
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco
    except (ImportError, AttributeError, OSError, RuntimeError) as exc:
        if isinstance(exc, ImportError) and exc.name == "mujoco":
            raise SimulatorError(f"the simulator needs MuJoCo {MUJOCO_VERSION}: {INSTALL_HINT}") from None
        # MUJOCO_GL names a backend whose library is missing, or that PYOPENGL_PLATFORM contradicts
        raise SimulatorError(
            f"MuJoCo cannot load its MUJOCO_GL={os.environ['MUJOCO_GL']} rendering backend ({exc}); "
            "use MUJOCO_GL=egl (Mesa EGL) or install that backend"
        ) from None
    if mujoco.__version__ != MUJOCO_VERSION:
        raise SimulatorError(
            f"robosuite {ROBOSUITE_VERSION} needs mujoco=={MUJOCO_VERSION}, found {mujoco.__version__}: "
            f'pip install "mujoco=={MUJOCO_VERSION}"'
        )
    private = types.ModuleType("robosuite.macros_private")
    private.CONSOLE_LOGGING_LEVEL = "ERROR"  # type: ignore[attr-defined]
    private.IMAGE_CONVENTION = "opencv"  # type: ignore[attr-defined]
    sys.modules["robosuite.macros_private"] = private
    try:
        import robosuite
    except ImportError as exc:
        raise SimulatorError(f"robosuite is not installed or incomplete ({exc}): {INSTALL_HINT}") from None
    if robosuite.__version__ != ROBOSUITE_VERSION:
        raise SimulatorError(f"embodyhub's simulator needs robosuite=={ROBOSUITE_VERSION}, found {robosuite.__version__}")
    return robosuite


def _load_triton_first() -> None:
    """Load triton's native library (if installed) before MuJoCo can open a Mesa EGL context. Mesa's
    llvmpipe brings its own LLVM, and triton's LLVM loaded after it crashes the process: measured, a
    camera ``SimEnv`` then ``import triton`` (which transformers and torch._dynamo do lazily) died with
    SIGSEGV in ``triton._C.libtriton``; in the other order both work."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton._C.libtriton")
