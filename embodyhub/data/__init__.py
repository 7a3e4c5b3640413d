"""Datasets: LeRobot v3.0 reader/writer and the synthetic multi-robot demonstration generator.

Names load on first use: checking a dataset's features (``check_features``) does not import torch."""

from .._lazy import lazy_exports

__all__ = [
    "CODEBASE_VERSION",
    "DatasetError",
    "LeRobotDataset",
    "TASK_TEXT",
    "check_features",
    "generate",
    "is_v2",
    "load_dataset",
    "needed_features",
    "write_dataset",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DatasetError": "..errors",
        "check_features": ".features",
        "is_v2": ".features",
        "needed_features": ".features",
        "CODEBASE_VERSION": ".lerobot",
        "LeRobotDataset": ".lerobot",
        "load_dataset": ".lerobot",
        "write_dataset": ".lerobot",
        "TASK_TEXT": ".synthetic",
        "generate": ".synthetic",
    },
)
