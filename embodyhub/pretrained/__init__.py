"""Checkpoints shipped inside the package, so the demo, benchmarks and tests need no download."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def tiny_base() -> Path:
    """Folder of the tiny WAM base (model + processor, 0.59M parameters).

    Made by ``embodyhub train --recipe pretrain_tiny --out RUN`` (seed 0: 1500 steps, 206 s on a 2-core
    CPU), then ``RUN/model`` plus that run's ``eval.json``/``eval.png`` (closed-loop reach success per
    robot, ur10/kinova_jaco2/so101 held out) copied here.
    """
    return Path(str(resources.files(__name__) / "wam_tiny"))
