"""LeRobot v3.0 datasets: a writer and a validating, in-memory reader for scalar, vector, image and video features.

Layout (the one ``lerobot`` reads and writes for codebase version v3.0)::

    meta/info.json                               codebase_version, fps, robot_type, totals, paths, features
    meta/stats.json                              per feature: min, max, mean, std, count, q01 ... q99
    meta/tasks.parquet                           task string (index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet     one row per episode: tasks, length, frame range,
                                                 data file, per-episode stats ("stats/<feature>/<stat>")
    data/chunk-000/file-000.parquet              one row per frame; many episodes per file
    videos/<camera>/chunk-000/file-000.mp4       video features only: many episodes per file, one after another

Episodes are never split across data files; a file is closed once it holds about
``data_files_size_in_mb`` and a chunk folder holds ``chunks_size`` files. Vector features are
fixed-size lists; every frame also carries ``timestamp``, ``frame_index``, ``episode_index``,
``index`` (global frame number) and ``task_index``.

Camera frames are LeRobot ``"image"`` features (shape ``[height, width, channels]``): each frame is a
PNG inside the data parquet, as the Hugging Face ``Image`` struct ``{bytes, path}`` that LeRobot
writes and reads. PNG is lossless, so a frame reads back bit for bit. Their statistics are per
channel in [0, 1] with shape ``[C, 1, 1]``, as LeRobot computes them.

``"video"`` features (LeRobot's default for cameras: MP4, AV1 by default) are read, not written. Each
episode's frames lie in ``video_path`` between its ``videos/<camera>/from_timestamp`` and ``to_timestamp``;
they are decoded with PyAV (imported only when a video frame is read) as LeRobot does: the frame nearest
each frame's ``from_timestamp + timestamp``, within 1e-4 s.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from ..errors import DatasetError

if TYPE_CHECKING:
    from ..embodiment import Embodiment

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/" + CHUNK_FILE
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE
EMBODIMENT_DIR = "meta/embodiment"  # embodyhub extra: embodiment.json + robot.urdf of the recording robot
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
_DTYPES = {"float32", "float64", "int32", "int64", "bool"}
_CAMERA_DTYPES = ("image", "video")
IMAGE_NAMES = ["height", "width", "channels"]
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # Hugging Face datasets' Image()
VIDEO_TOLERANCE_S = 1e-4  # LeRobotDataset's tolerance_s: a frame's video timestamp must lie this close
_VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp")  # per video feature: "videos/<camera>/<column>"
_REQUIRED_INFO = ("fps", "features", "total_episodes", "total_frames", "total_tasks", "data_path")
_EPISODE_COLUMNS = (
    "episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index", "data/file_index"
)


# ---------------------------------------------------------------------------------------- writing
def _as_numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise DatasetError(f"{what} must be numeric, got dtype {array.dtype}")
    return array


def _infer_feature(array: np.ndarray) -> dict[str, Any]:
    if array.ndim == 4:
        return {"dtype": "image", "shape": list(array.shape[1:]), "names": list(IMAGE_NAMES)}
    dtype = "bool" if array.dtype == np.bool_ else "int64" if array.dtype.kind in "iu" else "float32"
    return {"dtype": dtype, "shape": list(array.shape[1:]) or [1], "names": None}


def _check_feature(key: str, spec: Mapping[str, Any]) -> None:
    if "/" in key:
        raise DatasetError(f"feature name '{key}' must not contain '/'")
    dtype, shape = spec.get("dtype"), spec.get("shape")
    if dtype in _CAMERA_DTYPES:
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(n, int) and n >= 1 for n in shape)):
            raise DatasetError(f"feature '{key}': {dtype} shape must be [height, width, channels], got {shape!r}")
        return
    if dtype not in _DTYPES:
        raise DatasetError(f"feature '{key}': dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 1):
        raise DatasetError(f"feature '{key}': shape must be [n] with n >= 1, got {shape!r}")
    names = spec.get("names")
    if isinstance(names, list) and len(names) != shape[0]:
        raise DatasetError(f"feature '{key}': {len(names)} names for shape {list(shape)}")


def _encode_png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="png", compress_level=1)  # LeRobot's level: fast, still lossless
    return buffer.getvalue()


def _column(array: np.ndarray, spec: Mapping[str, Any]) -> pa.Array:
    """Frames ``[T]``, ``[T, n]`` or images ``[T, H, W, C]`` -> an arrow column: a fixed-size list for vectors
    and an ``Image`` struct of PNG bytes for images, as LeRobot stores them."""
    if spec["dtype"] == "image":
        png = pa.array([_encode_png(frame) for frame in array], pa.binary())
        return pa.StructArray.from_arrays([png, pa.nulls(len(array), pa.string())], fields=list(_IMAGE_TYPE))
    array = array.astype(spec["dtype"])
    if array.ndim == 1:
        return pa.array(array)
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])


def _stats(array: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot feature statistics over frames (axis 0) of ``[N]`` or ``[N, n]``; vectors of length n (1 for scalars)."""
    a = array.astype(np.float64).reshape(array.shape[0], -1)
    stats = {
        "min": a.min(0), "max": a.max(0), "mean": a.mean(0), "std": a.std(0), "count": np.array([a.shape[0]]),
    }
    stats.update({name: np.quantile(a, q, axis=0) for name, q in QUANTILES.items()})
    return stats


def _histogram(images: np.ndarray) -> np.ndarray:
    """Per-channel counts ``[C, 256]`` of the uint8 values of images ``[T, H, W, C]``."""
    return np.stack([np.bincount(images[..., c].reshape(-1), minlength=256) for c in range(images.shape[-1])])


def _image_stats(histogram: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """LeRobot image statistics from per-channel histograms ``[C, 256]``: per channel over all pixels, scaled
    to [0, 1], shape ``[C, 1, 1]`` (``count`` is the number of frames). Exact, without holding the pixels."""
    values = np.arange(256) / 255.0
    n = histogram.sum(1, keepdims=True)
    mean = (histogram @ values)[:, None] / n
    seen = histogram > 0
    stats = {
        "min": values[seen.argmax(1)][:, None],
        "max": values[255 - seen[:, ::-1].argmax(1)][:, None],
        "mean": mean,
        "std": np.sqrt((histogram * (values[None] - mean) ** 2).sum(1, keepdims=True) / n),
    }
    cumulative = histogram.cumsum(1)
    for name, q in QUANTILES.items():  # numpy's default (linear) quantile over the sorted pixel values
        position = q * (n[:, 0] - 1)
        below = np.floor(position)
        rank = np.stack([below, np.minimum(below + 1, n[:, 0] - 1)], 1)
        at = values[np.stack([np.searchsorted(cumulative[c], rank[c], side="right") for c in range(len(histogram))])]
        stats[name] = (at[:, 0] + (position - below) * (at[:, 1] - at[:, 0]))[:, None]
    stats = {k: v[..., None] for k, v in stats.items()}
    stats["count"] = np.array([frames])
    return stats


def _episode_arrays(
    episodes: Sequence[Mapping[str, Any]], features: dict[str, dict[str, Any]] | None
) -> tuple[list[dict[str, np.ndarray]], list[str], dict[str, dict[str, Any]]]:
    """Validate the episodes; return their arrays, their tasks and the (inferred or checked) features."""
    if not episodes:
        raise DatasetError("a dataset needs at least one episode")
    keys = sorted(k for k in episodes[0] if k != "task")
    arrays, tasks = [], []
    for e, episode in enumerate(episodes):
        task = episode.get("task")
        if not isinstance(task, str) or not task:
            raise DatasetError(f"episode {e}: 'task' must be a non-empty string")
        if sorted(k for k in episode if k != "task") != keys:
            raise DatasetError(f"episode {e} has keys {sorted(episode)}; episode 0 has {keys + ['task']}")
        reserved = set(keys) & set(DEFAULT_FEATURES)
        if reserved:
            raise DatasetError(f"{sorted(reserved)} are written by the writer; do not pass them")
        data = {k: _as_numpy(episode[k], f"episode {e} '{k}'") for k in keys}
        lengths = {k: (v.shape[0] if v.ndim else 0) for k, v in data.items()}
        if not keys or len(set(lengths.values())) != 1 or min(lengths.values()) < 1:
            raise DatasetError(f"episode {e}: every feature needs the same number (>= 1) of frames, got {lengths}")
        for k, v in data.items():
            if v.ndim == 4 and (v.dtype != np.uint8 or v.shape[-1] != 3):
                raise DatasetError(
                    f"episode {e} '{k}': images must be uint8 [T, H, W, 3] (RGB), got {v.dtype} {list(v.shape)}"
                )
            if v.ndim not in (1, 2, 4):
                raise DatasetError(
                    f"episode {e} '{k}': frames must be scalars or vectors (or uint8 [H, W, 3] images), "
                    f"got shape {v.shape[1:]}"
                )
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise DatasetError(f"episode {e} '{k}' contains NaN or infinite values")
        arrays.append(data)
        tasks.append(task)
    if features is None:
        features = {k: _infer_feature(arrays[0][k]) for k in keys}
    else:
        features = {k: dict(v) for k, v in features.items()}
        if sorted(features) != keys:
            raise DatasetError(f"features {sorted(features)} do not match the episode keys {keys}")
    for k in keys:
        _check_feature(k, features[k])
        if features[k]["dtype"] == "video":
            raise DatasetError(f"feature '{k}': camera frames are written as 'image' features (PNG); "
                               "video features are only read")
        features[k]["shape"] = list(features[k]["shape"])
        features[k].setdefault("names", None)
        for e, data in enumerate(arrays):
            if (features[k]["dtype"] == "image") != (data[k].ndim == 4):
                raise DatasetError(f"episode {e} '{k}': image features need [T, H, W, 3] frames, and only they")
            if data[k].ndim == 4:
                if list(data[k].shape[1:]) != features[k]["shape"]:
                    raise DatasetError(
                        f"episode {e} '{k}' has images {list(data[k].shape[1:])}; feature shape is {features[k]['shape']}"
                    )
                continue
            width = data[k].shape[1] if data[k].ndim == 2 else 1
            if width != features[k]["shape"][0]:
                raise DatasetError(
                    f"episode {e} '{k}' has {width} values per frame; feature shape is {features[k]['shape']}"
                )
    return arrays, tasks, features


def write_dataset(
    root: str | os.PathLike,
    episodes: Sequence[Mapping[str, Any]],
    fps: float,
    robot_type: str | None,
    features: dict[str, dict[str, Any]] | None = None,
    extra_info: dict[str, Any] | None = None,
    data_files_size_in_mb: float = 100,
    chunks_size: int = 1000,
    overwrite: bool = False,
) -> Path:
    """Write ``episodes`` as a LeRobot v3.0 dataset at ``root``; returns ``root``.

    Each episode maps feature names to ``[T]`` or ``[T, n]`` arrays (numpy or torch) or to uint8
    camera frames ``[T, H, W, 3]`` (stored as PNG ``"image"`` features), plus ``"task"`` (a string).
    ``features`` (``{name: {"dtype", "shape": [n], "names"}}``; ``{"dtype": "image", "shape": [H, W, 3]}``)
    is inferred when omitted: floats are stored as float32. ``extra_info`` is merged into
    ``meta/info.json`` (embodyhub puts the embodiment card under ``"embodyhub"``). An existing
    dataset at ``root`` is replaced only with ``overwrite=True``.
    """
    root = Path(root)
    if not _valid_fps(fps):
        raise DatasetError(f"fps must be a positive finite number, got {fps!r}")
    if chunks_size < 1 or not data_files_size_in_mb > 0:
        raise DatasetError("chunks_size and data_files_size_in_mb must be positive")
    arrays, episode_tasks, features = _episode_arrays(episodes, features)
    all_features = {**features, **{k: dict(v) for k, v in DEFAULT_FEATURES.items()}}
    info: dict[str, Any] = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(arrays),
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": 500,
        "fps": int(fps) if float(fps).is_integer() else float(fps),
        "splits": {"train": f"0:{len(arrays)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": all_features,
    }
    clash = set(extra_info or {}) & set(info)
    if clash:
        raise DatasetError(f"extra_info must not override LeRobot keys {sorted(clash)}")
    if (root / INFO_PATH).exists():
        if not overwrite:
            raise DatasetError(f"{root} already holds a dataset; pass overwrite=True to replace it")
        for sub in ("meta", "data"):
            shutil.rmtree(root / sub, ignore_errors=True)

    task_index: dict[str, int] = {}
    for task in episode_tasks:
        task_index.setdefault(task, len(task_index))

    # Frame columns per episode, grouped into data files of about data_files_size_in_mb.
    rows: list[dict[str, Any]] = []
    columns: dict[str, list[np.ndarray]] = {k: [] for k, v in all_features.items() if v["dtype"] != "image"}
    histograms = {k: np.zeros((v["shape"][-1], 256), np.int64) for k, v in all_features.items() if v["dtype"] == "image"}
    pending: list[pa.Table] = []
    pending_bytes, chunk, file, start = 0, 0, 0, 0

    def flush() -> None:
        nonlocal pending, pending_bytes, chunk, file
        path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(pending), path)
        pending, pending_bytes = [], 0
        file += 1
        if file == chunks_size:
            chunk, file = chunk + 1, 0

    for e, (data, task) in enumerate(zip(arrays, episode_tasks)):
        length = next(iter(data.values())).shape[0]
        frame = np.arange(length)
        data = {
            **data,
            "timestamp": (frame / fps).astype(np.float32),
            "frame_index": frame,
            "episode_index": np.full(length, e),
            "index": start + frame,
            "task_index": np.full(length, task_index[task]),
        }
        table = pa.table({k: _column(data[k], all_features[k]) for k in all_features})
        if pending and pending_bytes + table.nbytes > data_files_size_in_mb * 2**20:
            flush()
        pending.append(table)
        pending_bytes += table.nbytes
        row: dict[str, Any] = {
            "episode_index": e,
            "tasks": [task],
            "length": length,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
        }
        for k in all_features:
            if k in histograms:
                histogram = _histogram(data[k])
                histograms[k] += histogram
                stats = _image_stats(histogram, length)
            else:
                stored = data[k].astype(all_features[k]["dtype"])
                columns[k].append(stored)
                stats = _stats(stored)
            row.update({f"stats/{k}/{name}": v.tolist() for name, v in stats.items()})
        rows.append(row)
        start += length
    flush()

    info["total_frames"] = start
    info["total_tasks"] = len(task_index)
    info.update(extra_info or {})
    all_stats = {k: _stats(np.concatenate(v)) for k, v in columns.items()}
    all_stats.update({k: _image_stats(h, start) for k, h in histograms.items()})
    stats = {k: {name: v.tolist() for name, v in all_stats[k].items()} for k in all_features}

    import pandas as pd  # the tasks table keeps LeRobot's pandas index ("task"), which pyarrow alone does not write

    (root / "meta").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"task_index": list(task_index.values())}, index=pd.Index(list(task_index), name="task")).to_parquet(
        root / TASKS_PATH
    )
    episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), episodes_path)
    (root / STATS_PATH).write_text(json.dumps(stats, indent=4) + "\n")
    (root / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n")  # last: its presence marks a complete dataset
    return root


# ---------------------------------------------------------------------------------------- reading
def _read_table(path: Path, what: str) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"{what} missing: {path}")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc}") from exc


def _to_numpy(column: pa.ChunkedArray, spec: Mapping[str, Any], where: str) -> np.ndarray:
    """An arrow column -> ``[N]`` (scalar features) or ``[N, n]`` numpy array of the feature's dtype."""
    array = column.combine_chunks()
    if array.null_count:
        raise DatasetError(f"{where}: {array.null_count} null values")
    n = spec["shape"][0]
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or pa.types.is_large_list(array.type):
        lengths = np.asarray(pc.list_value_length(array))
        if (lengths != n).any():
            raise DatasetError(f"{where}: rows must hold {n} values (feature shape {spec['shape']})")
        values = np.asarray(array.flatten()).reshape(len(array), n)
    elif n == 1:
        values = np.asarray(array)
    else:
        raise DatasetError(f"{where}: expected lists of {n} values, found {array.type}")
    return values.astype(spec["dtype"])


def _image_bytes(column: pa.ChunkedArray, where: str) -> list[bytes]:
    """An ``Image`` struct column -> the encoded frames; frames stored only as a path are refused."""
    array = column.combine_chunks()
    if not pa.types.is_struct(array.type) or array.type.get_field_index("bytes") < 0:
        raise DatasetError(f"{where}: expected an Image struct {{bytes, path}}, found {array.type}")
    frames = array.field("bytes")
    if frames.null_count or array.null_count:
        raise DatasetError(f"{where}: {max(frames.null_count, array.null_count)} frames carry no embedded image bytes")
    return frames.to_pylist()


def _decode_image(data: bytes, spec: Mapping[str, Any], where: str) -> Tensor:
    """Encoded frame -> float32 ``[C, H, W]`` in [0, 1]: the layout and values LeRobot returns (torchvision's
    ``ToTensor``). The feature shape may be given as ``[H, W, C]`` (LeRobot's default) or ``[C, H, W]``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.array(image)
    except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise DatasetError(f"{where}: not a readable image ({exc})") from exc
    if array.dtype != np.uint8:
        raise DatasetError(f"{where}: only 8-bit images are supported, found {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if list(spec["shape"]) not in (list(array.shape), [array.shape[2], *array.shape[:2]]):
        raise DatasetError(
            f"{where}: image of [height, width, channels] {list(array.shape)} does not match the feature shape {spec['shape']}"
        )
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)


def _decode_video(path: Path, timestamps: Sequence[float], spec: Mapping[str, Any], where: str) -> Tensor:
    """The frames of the video at ``path`` nearest each of ``timestamps`` (seconds) -> float32 ``[T, C, H, W]`` in
    [0, 1], as LeRobot's PyAV backend decodes them: seek to the keyframe before the first, decode up to the last,
    take the nearest frame, which must lie within ``VIDEO_TOLERANCE_S``."""
    try:
        import av
    except ImportError as exc:
        raise DatasetError(f"{where}: video features are decoded with PyAV; install it (pip install av)") from exc
    first, last = min(timestamps), max(timestamps)
    times, frames = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(first / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                times.append(frame.time)
                frames.append(frame.to_ndarray(format="rgb24"))
                if frame.time >= last:
                    break
    except (av.error.FFmpegError, IndexError, TypeError) as exc:  # no video stream, a frame without a time
        raise DatasetError(f"{where}: cannot decode {path} ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise DatasetError(f"{where}: {path} has no frames from {first:.4f} s on")
    gap = np.abs(np.asarray(timestamps)[:, None] - np.asarray(times)[None])
    nearest = gap.argmin(1)
    late = gap[np.arange(len(timestamps)), nearest] >= VIDEO_TOLERANCE_S
    if late.any():
        raise DatasetError(
            f"{where}: {path} has no frame within {VIDEO_TOLERANCE_S} s of timestamp {np.asarray(timestamps)[late][0]:.4f} s "
            f"(decoded {times[0]:.4f} to {times[-1]:.4f} s)"
        )
    array = np.stack([frames[j] for j in nearest])
    if list(spec["shape"]) not in (list(array.shape[1:]), [array.shape[3], *array.shape[1:3]]):
        raise DatasetError(
            f"{where}: frames of [height, width, channels] {list(array.shape[1:])} do not match the feature shape {spec['shape']}"
        )
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().float().div(255)


def _valid_fps(fps: Any) -> bool:
    """A positive finite number (JSON's ``true`` and ``Infinity`` are not)."""
    return isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0


class LeRobotDataset(torch.utils.data.Dataset):
    """A LeRobot v3.0 dataset held in memory as torch tensors; validated on load.

    ``ds[i]`` is frame ``i`` (a dict of tensors plus its ``"task"`` string); ``ds.episode(k)``
    stacks episode ``k`` as ``[T, ...]`` tensors. Image and video features come back as float32
    ``[C, H, W]`` in [0, 1] (``[T, C, H, W]`` per episode), as LeRobot returns them; they are held
    encoded (videos: on disk) and decoded on access, a video an episode at a time. ``info``, ``stats``
    (tensors), ``tasks`` (task -> task_index) and ``episodes`` (one metadata dict per episode) mirror ``meta/``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = self._load_info()
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.fps: float = self.info["fps"]
        self.stats = self._load_stats()
        self.tasks = self._load_tasks()
        self._task_names = {i: t for t, i in self.tasks.items()}
        self.episodes = self._load_episodes()
        self._images: dict[str, list[bytes]] = {}  # per image feature: every frame's PNG
        self._videos: dict[str, list[Path]] = {}  # per video feature: each episode's file
        self._decoded: dict[str, tuple[int, Tensor]] = {}  # per video feature: the last episode decoded
        self._data = self._load_frames()

    # ---------------------------------------------------------------- loading and validation
    def _load_info(self) -> dict[str, Any]:
        path = self.root / INFO_PATH
        if not path.is_file():
            raise DatasetError(f"not a LeRobot dataset: {path} is missing")
        try:
            info = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(info, dict):
            raise DatasetError(f"{path} must hold a JSON object")
        version = info.get("codebase_version")
        if version != CODEBASE_VERSION:
            raise DatasetError(
                f"{path}: codebase_version {version!r} is not supported; this reader reads LeRobot {CODEBASE_VERSION} "
                "datasets (convert older ones with lerobot's v2.1 -> v3.0 converter)"
            )
        missing = [k for k in _REQUIRED_INFO if k not in info]
        if missing:
            raise DatasetError(f"{path} lacks {missing}")
        if not isinstance(info["features"], dict) or not all(k in info["features"] for k in DEFAULT_FEATURES):
            raise DatasetError(f"{path}: features must be an object including {list(DEFAULT_FEATURES)}")
        for key, spec in info["features"].items():
            if not isinstance(spec, dict):
                raise DatasetError(f"{path}: feature '{key}' must be an object")
            _check_feature(key, spec)
        if not _valid_fps(info["fps"]):
            raise DatasetError(f"{path}: fps must be a positive finite number, got {info['fps']!r}")
        if any(spec["dtype"] == "video" for spec in info["features"].values()) and not isinstance(info.get("video_path"), str):
            raise DatasetError(f"{path}: video features need a 'video_path' template, got {info.get('video_path')!r}")
        return info

    def _load_stats(self) -> dict[str, dict[str, Tensor]]:
        path = self.root / STATS_PATH
        if not path.is_file():
            return {}
        try:
            raw = json.loads(path.read_text())
            return {k: {s: torch.from_numpy(np.asarray(v)) for s, v in stats.items()} for k, stats in raw.items()}
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path} is malformed: {exc}") from exc

    def _load_tasks(self) -> dict[str, int]:
        table = _read_table(self.root / TASKS_PATH, "task table")
        name = "task" if "task" in table.column_names else "__index_level_0__"
        if name not in table.column_names or "task_index" not in table.column_names:
            raise DatasetError(f"{self.root / TASKS_PATH} needs a 'task' index and a 'task_index' column")
        tasks = dict(zip(table[name].to_pylist(), table["task_index"].to_pylist()))
        if len(tasks) != self.info["total_tasks"] or sorted(tasks.values()) != list(range(len(tasks))):
            raise DatasetError(
                f"{self.root / TASKS_PATH}: {len(tasks)} tasks with indices {sorted(tasks.values())}; "
                f"info.json says total_tasks={self.info['total_tasks']}"
            )
        return tasks

    def _load_episodes(self) -> list[dict[str, Any]]:
        paths = sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not paths:
            raise DatasetError(f"no episode metadata under {self.root / EPISODES_DIR}")
        rows = [row for p in paths for row in _read_table(p, "episode metadata").to_pylist()]
        videos = [k for k, spec in self.features.items() if spec["dtype"] == "video"]
        columns = [*_EPISODE_COLUMNS, *(f"videos/{k}/{c}" for k in videos for c in _VIDEO_COLUMNS)]
        missing = [c for c in columns if rows and c not in rows[0]]
        if missing:
            raise DatasetError(f"episode metadata under {self.root / EPISODES_DIR} lacks columns {missing}")
        if len(rows) != self.info["total_episodes"]:
            raise DatasetError(f"{len(rows)} episodes in metadata; info.json says {self.info['total_episodes']}")
        end = 0
        for k, row in enumerate(rows):
            ok = (
                (row["episode_index"], row["dataset_from_index"]) == (k, end)
                and isinstance(row["length"], int) and row["length"] >= 1
                and row["dataset_to_index"] == end + row["length"]
                and isinstance(row["tasks"], list) and len(row["tasks"]) >= 1
            )
            if not ok:
                raise DatasetError(f"episode metadata row {k} is inconsistent (indices, frame range, length or tasks)")
            unknown = [t for t in row["tasks"] if t not in self.tasks]
            if unknown:
                raise DatasetError(f"episode {k} names tasks {unknown} missing from {TASKS_PATH}")
            end = row["dataset_to_index"]
        if end != self.info["total_frames"]:
            raise DatasetError(f"episodes cover {end} frames; info.json says total_frames={self.info['total_frames']}")
        return rows

    def _file(self, template: str, **fields: Any) -> Path:
        """The path that ``info[template]`` (``data_path``, ``video_path``) gives for ``fields``, inside the dataset."""
        try:
            path = self.root / self.info[template].format(**fields)
        except (AttributeError, KeyError, IndexError, ValueError) as exc:
            raise DatasetError(f"info.json {template} {self.info[template]!r} is malformed: {exc}") from exc
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise DatasetError(f"info.json {template} {self.info[template]!r} leads outside the dataset ({path})")
        return path

    def _video_files(self, key: str) -> list[Path]:
        """Each episode's file of video feature ``key``, checked to exist (decoding waits for a frame's access)."""
        paths = []
        for row in self.episodes:
            path = self._file("video_path", video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                              file_index=row[f"videos/{key}/file_index"])
            start = row[f"videos/{key}/from_timestamp"]
            if not path.is_file():
                raise DatasetError(f"episode {row['episode_index']} '{key}': video file missing: {path}")
            if not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
                raise DatasetError(f"episode {row['episode_index']} '{key}': from_timestamp must be a time >= 0, got {start!r}")
            paths.append(path)
        return paths

    def _load_frames(self) -> dict[str, Tensor]:
        files = list(dict.fromkeys((r["data/chunk_index"], r["data/file_index"]) for r in self.episodes))
        images = {k: spec for k, spec in self.features.items() if spec["dtype"] == "image"}
        videos = [k for k, spec in self.features.items() if spec["dtype"] == "video"]  # not in the data files
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.features if k not in images and k not in videos}
        self._images = {k: [] for k in images}
        self._videos = {k: self._video_files(k) for k in videos}
        for chunk, file in files:
            path = self._file("data_path", chunk_index=chunk, file_index=file)
            table = _read_table(path, "data file")
            missing = [k for k in self.features if k not in table.column_names and k not in videos]
            if missing:
                raise DatasetError(f"{path} lacks feature columns {missing}")
            for k, spec in self.features.items():
                where = f"{path} column '{k}'"
                if k in images:
                    frames = _image_bytes(table[k], where)
                    _decode_image(frames[0], spec, where)  # shape checked on one frame per file; the rest on access
                    self._images[k].extend(frames)
                elif k in parts:
                    parts[k].append(_to_numpy(table[k], spec, where))
        data = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
        n = self.info["total_frames"]
        if data["index"].shape[0] != n or not torch.equal(data["index"], torch.arange(n)):
            raise DatasetError(f"data files hold {data['index'].shape[0]} frames whose 'index' is not 0..{n - 1}")
        lengths = torch.tensor([r["length"] for r in self.episodes])
        if not torch.equal(data["episode_index"], torch.arange(len(self.episodes)).repeat_interleave(lengths)):
            raise DatasetError("the frames' episode_index does not match the episode metadata frame ranges")
        if not all(int(i) in self._task_names for i in data["task_index"].unique()):
            raise DatasetError(f"frames reference task indices missing from {TASKS_PATH}")
        return data

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return self.info["total_frames"]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        i %= len(self)
        item: dict[str, Any] = {k: v[i] for k, v in self._data.items()}
        item.update({k: self._image(k, i) for k in self._images})
        if self._videos:
            k = int(item["episode_index"])
            item.update({key: self._video(key, k)[i - self.episodes[k]["dataset_from_index"]] for key in self._videos})
        item["task"] = self._task_names[int(item["task_index"])]
        return item

    def _image(self, key: str, i: int) -> Tensor:
        return _decode_image(self._images[key][i], self.features[key], f"{self.root} '{key}' frame {i}")

    def _video(self, key: str, k: int) -> Tensor:
        """Episode ``k``'s frames of video feature ``key``, ``[T, C, H, W]``; the last episode decoded is kept, so
        reading an episode frame by frame decodes it once."""
        if key not in self._decoded or self._decoded[key][0] != k:
            row = self.episodes[k]
            offset = row[f"videos/{key}/from_timestamp"]
            timestamps = self._data["timestamp"][row["dataset_from_index"] : row["dataset_to_index"]].double() + offset
            where = f"{self.root} '{key}' episode {k}"
            self._decoded[key] = (k, _decode_video(self._videos[key][k], timestamps.tolist(), self.features[key], where))
        return self._decoded[key][1]

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def task_episodes(self) -> dict[str, list[int]]:
        """Episode indices per task (an episode's first task), in recorded order: what selecting the first N
        demos of each task of a multi-task dataset needs."""
        out: dict[str, list[int]] = {}
        for k, row in enumerate(self.episodes):
            out.setdefault(row["tasks"][0], []).append(k)
        return out

    def episode(self, k: int, features: Sequence[str] | None = None) -> dict[str, Any]:
        """Episode ``k`` as ``[T, ...]`` tensors (a view of the loaded frames; camera frames decoded to
        ``[T, C, H, W]``) plus its ``"task"``: every feature, or only ``features`` (cameras left out are not
        decoded)."""
        if not 0 <= k < self.num_episodes:
            raise IndexError(f"episode {k} out of range for {self.num_episodes} episodes")
        keys = list(self.features if features is None else features)
        unknown = [key for key in keys if key not in self.features]
        if unknown:
            raise KeyError(f"{self.root} has no features {unknown}")
        row = self.episodes[k]
        frames = slice(row["dataset_from_index"], row["dataset_to_index"])
        item: dict[str, Any] = {key: self._data[key][frames] for key in keys if key in self._data}
        item.update({key: torch.stack([self._image(key, i) for i in range(frames.start, frames.stop)])
                     for key in keys if key in self._images})
        item.update({key: self._video(key, k) for key in keys if key in self._videos})
        item["task"] = row["tasks"][0]
        return item

    @property
    def embodiment_card(self) -> dict[str, Any] | None:
        """The embodiment card the dataset was recorded with (``info["embodyhub"]["embodiment"]``), if any."""
        return (self.info.get("embodyhub") or {}).get("embodiment")

    def load_embodiment(self) -> "Embodiment":
        """The recording robot: from ``meta/embodiment/`` when stored, else the bundled robot of the card's
        name, checked against the card (URDF sha256, joints)."""
        from ..embodiment import Embodiment, load_robot

        card = self.embodiment_card
        if card is None:
            raise DatasetError(f"{self.root} records no embodiment card (info.json has no 'embodyhub.embodiment')")
        stored = self.root / EMBODIMENT_DIR
        emb = Embodiment.from_pretrained(stored) if stored.is_dir() else load_robot(card["name"])
        emb.check_compatible(card)
        return emb

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, robot_type={self.info.get('robot_type')!r}, "
            f"episodes={self.num_episodes}, frames={len(self)}, fps={self.fps}, features={list(self.features)})"
        )


def load_dataset(root: str | os.PathLike) -> LeRobotDataset:
    """Read and validate the LeRobot v3.0 dataset at ``root`` (raises ``DatasetError`` when malformed)."""
    return LeRobotDataset(root)
