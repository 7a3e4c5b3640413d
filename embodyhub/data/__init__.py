"""Datasets: LeRobot v3.0 reader/writer and the synthetic multi-robot demonstration generator."""

from ..errors import DatasetError
from .lerobot import CODEBASE_VERSION, LeRobotDataset, load_dataset, write_dataset
from .synthetic import TASK_TEXT, generate

__all__ = [
    "CODEBASE_VERSION",
    "DatasetError",
    "LeRobotDataset",
    "TASK_TEXT",
    "generate",
    "load_dataset",
    "write_dataset",
]
