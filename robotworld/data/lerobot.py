"""Export to the LeRobotDataset v3.0 layout: ``robotworld data export DIR --format lerobot``.

The result loads with lerobot's own ``LeRobotDataset(repo_id, root=OUT)`` without conversion
(checked against lerobot 0.4.4; see the README). Layout written::

    OUT/meta/info.json                              codebase_version v3.0, fps, features
    OUT/meta/stats.json                             per feature: min max mean std count q01..q99
    OUT/meta/tasks.parquet                          one row per instruction (task_index)
    OUT/meta/episodes/chunk-000/file-000.parquet    per episode: length, tasks, file and video spans
    OUT/data/chunk-000/file-000.parquet             one row per frame
    OUT/videos/observation.images.<cam>/chunk-000/file-000.mp4   all episodes back to back (H.264)

Frame t of an episode pairs the observation before step t with the action taken at step t,
as LeRobot does; the final observation after the last step has no action and is left out.
Feature names: ``observation.state`` (proprio), ``observation.environment_state`` (object
poses then goal), ``observation.images.<cam>``, ``action``, ``next.reward``, ``next.done``,
``next.success``, plus ``next.is_grasped`` and ``next.collision``. The language instruction
is the LeRobot task. The export is written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from robotworld.data import format as fmt
from robotworld.data.dataset import Dataset

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
ROWS_PER_DATA_FILE = 200_000  # ~40 MB of state rows: under LeRobot's 100 MB per data file
FRAMES_PER_VIDEO_FILE = 50_000  # well under LeRobot's 200 MB per video file at 96x96
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_SAMPLE_ROWS = 100_000  # quantiles are estimated from a uniform sample of this many frames


def _chunk_file(n: int) -> tuple[int, int]:
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def _features(manifest: dict[str, Any], cams: list[str], fps: int) -> dict[str, Any]:
    obs = manifest["observation"]
    env_dim = obs["objects"]["shape"][0] + obs["goal"]["shape"][0]
    vec = {
        "observation.state": obs["proprio"]["shape"][0],
        "observation.environment_state": env_dim,
        "action": manifest["action_dim"],
    }
    feats: dict[str, Any] = {k: {"dtype": "float32", "shape": [n], "names": None} for k, n in vec.items()}
    for cam in cams:
        h, w, c = obs[f"image_{cam}"]["shape"]
        feats[f"observation.images.{cam}"] = {
            "dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": c, "has_audio": False}}
    feats["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("next.done", "next.success", "next.is_grasped", "next.collision"):
        feats[k] = {"dtype": "bool", "shape": [1], "names": None}
    for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                  ("index", "int64"), ("task_index", "int64")):
        feats[k] = {"dtype": dt, "shape": [1], "names": None}
    return feats


def _frame_columns(ep: dict[str, Any], e: int, start: int, task_index: int, fps: int) -> dict[str, np.ndarray]:
    T = int(ep["attrs"]["length"])
    return {
        "observation.state": ep["obs/proprio"][:T],
        "observation.environment_state": np.concatenate((ep["obs/objects"][:T], ep["obs/goal"][:T]), 1),
        "action": ep["action"],
        "next.reward": ep["reward"].astype(np.float32),
        "next.done": ep["terminated"] | ep["truncated"],
        "next.success": ep["is_success"],
        "next.is_grasped": ep["is_grasped"],
        "next.collision": ep["collision"],
        "timestamp": (np.arange(T) / fps).astype(np.float32),
        "frame_index": np.arange(T, dtype=np.int64),
        "episode_index": np.full(T, e, np.int64),
        "index": np.arange(start, start + T, dtype=np.int64),
        "task_index": np.full(T, task_index, np.int64),
    }


def _arrow_table(cols: dict[str, np.ndarray]):
    import pyarrow as pa

    arrays, names = [], []
    for k, v in cols.items():
        if v.ndim == 2:
            flat = pa.array(np.ascontiguousarray(v).ravel())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, v.shape[1]))
        else:
            arrays.append(pa.array(v))
        names.append(k)
    return pa.Table.from_arrays(arrays, names=names)


class _Stats:
    """Streaming min / max / mean / std / count, and quantiles from a uniform sample."""

    def __init__(self, seed: int = 0) -> None:
        self.n = 0
        self.sum = self.sq = self.min = self.max = None
        self.sample: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray, keep: float) -> None:
        x = x.reshape(x.shape[0], -1).astype(np.float64)
        if self.sum is None:
            self.sum, self.sq, self.min, self.max = x.sum(0), (x * x).sum(0), x.min(0), x.max(0)
        else:
            self.sum += x.sum(0)
            self.sq += (x * x).sum(0)
            self.min, self.max = np.minimum(self.min, x.min(0)), np.maximum(self.max, x.max(0))
        self.n += x.shape[0]
        self.sample.append(x[self.rng.random(x.shape[0]) < keep])

    def result(self, shape: tuple[int, ...]) -> dict[str, Any]:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean**2, 0.0))
        out = {"min": self.min, "max": self.max, "mean": mean, "std": std}
        sample = np.concatenate(self.sample) if self.sample else np.zeros((0, mean.shape[0]))
        for q in QUANTILES:
            out[f"q{int(round(q * 100)):02d}"] = np.quantile(sample, q, axis=0) if len(sample) else mean
        res = {k: v.reshape(shape).tolist() for k, v in out.items()}
        res["count"] = [self.n]
        return res


def _video_writers(tmp: Path, cams: list[str], fps: int, file_no: int):
    import imageio.v2 as imageio

    writers = {}
    for cam in cams:
        c, f = _chunk_file(file_no)
        path = tmp / "videos" / f"observation.images.{cam}" / f"chunk-{c:03d}" / f"file-{f:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        writers[cam] = imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=8,
                                          pixelformat="yuv420p", ffmpeg_log_level="error",
                                          output_params=["-g", "2"])  # short GOP: cheap random access
    return writers


def export_lerobot(src: str | os.PathLike, out: str | os.PathLike, fps: int | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Write dataset ``src`` as a LeRobotDataset v3.0 directory ``out`` (which must not exist)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    ds = Dataset(src)
    out = Path(out)
    if out.exists():
        raise fmt.DatasetError(f"export target '{out}' already exists; choose a new directory")
    idx = ds.indices()
    if not idx:
        raise fmt.DatasetError(f"'{ds.root}' holds no episodes to export")
    fps = int(fps or round(ds.manifest["control_hz"]))
    cams = list(ds.manifest.get("cameras", []))
    feats = _features(ds.manifest, cams, fps)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    total = sum(int(ds.episode(i, ())["attrs"]["length"]) for i in idx)
    keep = min(1.0, _SAMPLE_ROWS / max(total, 1))
    stat_keys = [k for k, f in feats.items() if f["dtype"] != "video"]
    stats = {k: _Stats(seed=n) for n, k in enumerate(stat_keys + [f"observation.images.{c}" for c in cams])}
    tasks: dict[str, int] = {}
    episodes: list[dict[str, Any]] = []
    try:
        data_file, rows_in_file, frames_in_video, video_file = 0, 0, 0, 0
        writer = None
        videos = _video_writers(tmp, cams, fps, 0) if cams else {}
        start = 0
        for e, i in enumerate(tqdm(idx, desc="export lerobot", disable=not progress, leave=False)):
            ep = ds.episode(i)
            T = int(ep["attrs"]["length"])
            task = str(ep["attrs"].get("instruction", "")) or ds.task
            t_idx = tasks.setdefault(task, len(tasks))
            cols = _frame_columns(ep, e, start, t_idx, fps)
            if writer is not None and rows_in_file + T > ROWS_PER_DATA_FILE:
                writer.close()
                writer, data_file, rows_in_file = None, data_file + 1, 0
            table = _arrow_table(cols)
            if writer is None:
                c, f = _chunk_file(data_file)
                path = tmp / "data" / f"chunk-{c:03d}" / f"file-{f:03d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            row = {"episode_index": e, "tasks": [task], "length": T,
                   "data/chunk_index": _chunk_file(data_file)[0], "data/file_index": _chunk_file(data_file)[1],
                   "dataset_from_index": start, "dataset_to_index": start + T}
            if cams and frames_in_video + T > FRAMES_PER_VIDEO_FILE:
                for w in videos.values():
                    w.close()
                video_file, frames_in_video = video_file + 1, 0
                videos = _video_writers(tmp, cams, fps, video_file)
            for cam in cams:
                frames = ep[f"obs/image_{cam}"][:T]
                for fr in frames:
                    videos[cam].append_data(fr)
                c, f = _chunk_file(video_file)
                row.update({f"videos/observation.images.{cam}/chunk_index": c,
                            f"videos/observation.images.{cam}/file_index": f,
                            f"videos/observation.images.{cam}/from_timestamp": frames_in_video / fps,
                            f"videos/observation.images.{cam}/to_timestamp": (frames_in_video + T) / fps})
                # image statistics per channel, in [0, 1] as LeRobot normalises them
                stats[f"observation.images.{cam}"].add(
                    frames[:, ::4, ::4].reshape(-1, 3).astype(np.float64) / 255.0, keep)
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            episodes.append(row)
            for k in stat_keys:
                stats[k].add(np.asarray(cols[k]), keep)
            frames_in_video += T
            rows_in_file += T
            start += T
        if writer is not None:
            writer.close()
        for w in videos.values():
            w.close()
        _write_meta(tmp, feats, stats, tasks, episodes, cams, fps, start, ds)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "episodes": len(idx), "frames": start, "tasks": len(tasks),
            "cameras": cams, "codebase_version": CODEBASE_VERSION}


def _write_meta(tmp: Path, feats: dict, stats: dict, tasks: dict[str, int], episodes: list[dict],
                cams: list[str], fps: int, frames: int, ds: Dataset) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = tmp / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": "robotworld_panda", "total_episodes": len(episodes),
        "total_frames": frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if cams else None,
        "features": feats,
        "robotworld": {"source": str(ds.root), "task": ds.task, "schema_version": fmt.SCHEMA_VERSION},
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    out_stats = {}
    for k, s in stats.items():
        shape = (3, 1, 1) if k.startswith("observation.images.") else (-1,)
        out_stats[k] = s.result(shape)
    (meta / "stats.json").write_text(json.dumps(out_stats, indent=4))
    task_df = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name=None))
    task_df.to_parquet(meta / "tasks.parquet")
    pq.write_table(pa.Table.from_pylist(episodes), meta / "episodes" / "chunk-000" / "file-000.parquet")
