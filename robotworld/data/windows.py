"""Random windows of H steps for training, from a memory-mapped flat cache of a dataset.

Opening thousands of episode files at random would cost more than training on them, so the
first use streams the state fields of every episode, one episode at a time, into flat ``.npy``
arrays under ``DIR/cache/flat-<key>/`` (built in a temporary directory, then renamed). The
key covers the episodes' checksums, so a dataset that grows gets a fresh cache. Windows are
then gathered with fancy indexing on memory-mapped arrays: only the pages touched are read,
never the whole dataset.

Layout: episode e of T steps occupies T+1 rows from ``ep_start[e]``: observations are the T+1
states, step fields (action, reward, flags) the T steps plus one zero row. A window may start
at any real step; where it runs past the episode's end, observations repeat the final state,
actions are zero and ``mask`` is 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from robotworld.data import format as fmt
from robotworld.data.dataset import Dataset

CACHE_VERSION = 1
STEP_DTYPES = {"action": np.float32, "reward": np.float32, "is_success": bool, "is_grasped": bool,
               "collision": bool, "terminated": bool}


class Window(NamedTuple):
    """A batch of B windows of H steps (numpy arrays; ``to_torch`` for tensors)."""

    obs: dict[str, np.ndarray]  # each (B, H+1, ...): states o_t .. o_{t+H}
    action: np.ndarray  # (B, H, A)
    reward: np.ndarray  # (B, H)
    is_success: np.ndarray  # (B, H) bool
    is_grasped: np.ndarray  # (B, H) bool
    collision: np.ndarray  # (B, H) bool
    terminated: np.ndarray  # (B, H) bool
    mask: np.ndarray  # (B, H) bool: True where the step is inside the episode
    episode: np.ndarray  # (B,) dataset episode index of each window
    label: np.ndarray | None = None  # (B, H, A) a teacher's clean actions (labels=True), else None

    def to_torch(self, device: Any = "cpu") -> dict[str, Any]:
        import torch

        def t(a: np.ndarray):
            return torch.from_numpy(a).to(device, non_blocking=True)

        out = {f"obs/{k}": t(v) for k, v in self.obs.items()}
        out.update({k: t(getattr(self, k)) for k in Window._fields if k != "obs" and getattr(self, k) is not None})
        return out


def _cache_key(ds: Dataset, idx: list[int], attrs: list[dict], obs_keys: tuple[str, ...], labels: bool) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{','.join(obs_keys)}{'|label' if labels else ''}".encode())
    for i, a in zip(idx, attrs):
        h.update(f"{i}:{a['checksum']};".encode())
    return h.hexdigest()[:16]


def build_cache(ds: Dataset, obs_keys: tuple[str, ...] = fmt.STATE_OBS, progress: bool = False,
                labels: bool = False) -> Path:
    """The flat cache directory of ds, built if missing. Reads one episode at a time. labels:
    also cache the ``label`` field (a teacher's clean actions; the applied action in an episode
    that has none)."""
    from tqdm import tqdm

    idx = ds.indices()
    if not idx:
        raise fmt.DatasetError(f"'{ds.root}' holds no episodes to sample windows from")
    attrs = [ds.episode(i, ())["attrs"] for i in idx]
    final = ds.root / "cache" / f"flat-{_cache_key(ds, idx, attrs, obs_keys, labels)}"
    if (final / "meta.json").exists():
        return final
    lengths = np.array([int(a["length"]) for a in attrs], np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])).astype(np.int64)
    rows = int((lengths + 1).sum())
    first = ds.episode(idx[0], tuple(f"obs/{k}" for k in obs_keys) + ("action",))
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        arrays = {f"obs/{k}": np.lib.format.open_memmap(  # camera frames stay uint8: a quarter of the disk
            tmp / f"obs_{k}.npy", "w+", np.uint8 if first[f"obs/{k}"].dtype == np.uint8 else np.float32,
            (rows,) + first[f"obs/{k}"].shape[1:]) for k in obs_keys}
        steps = dict(STEP_DTYPES, **({"label": np.float32} if labels else {}))
        for name, dt in steps.items():
            shape = (rows,) + (first["action"].shape[1:] if name in ("action", "label") else ())
            arrays[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dt, shape)
        for e, i in enumerate(tqdm(idx, desc="window cache", disable=not progress, leave=False)):
            ep = ds.episode(i, tuple(k for k in arrays if k != "label"))
            if labels:
                ep["label"] = _label(ds, i, ep["action"])
            s, n = int(starts[e]), int(lengths[e])
            for name, arr in arrays.items():
                if name.startswith("obs/"):
                    arr[s:s + n + 1] = ep[name]
                else:
                    arr[s:s + n] = ep[name]
                    arr[s + n] = 0
        for arr in arrays.values():
            arr.flush()
        del arrays
        np.save(tmp / "ep_start.npy", starts)
        np.save(tmp / "ep_length.npy", lengths)
        np.save(tmp / "ep_index.npy", np.array(idx, np.int64))
        meta = {"cache_version": CACHE_VERSION, "obs_keys": list(obs_keys), "labels": labels, "rows": rows,
                "episodes": len(idx), "instructions": [a.get("instruction", "") for a in attrs]}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, final)
        except OSError:  # another process published the same cache first
            if not (final / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _label(ds: Dataset, i: int, action: np.ndarray) -> np.ndarray:
    """Episode i's teacher labels, or its applied actions where it was not collected by a teacher."""
    import h5py

    with h5py.File(ds.path(i), "r") as f:
        return f["label"][()] if "label" in f else action


class WindowSampler:
    """Uniform random windows of ``horizon`` steps over every real step of a dataset.

    Args:
        dataset: a Dataset or its directory.
        horizon: H, steps per window.
        seed: seed of the sampling generator (same seed, same windows).
        episodes: which dataset episode indices to sample from (a train / held-out split);
            all by default.
        labels: windows carry ``label`` (B, H, A), a teacher's clean actions (DART): the
            behaviour-cloning target.
    """

    def __init__(self, dataset: Dataset | str | os.PathLike, horizon: int = 16, seed: int = 0,
                 obs_keys: tuple[str, ...] = fmt.STATE_OBS, progress: bool = False,
                 episodes: Callable[[int], bool] | None = None, labels: bool = False) -> None:
        if horizon < 1:
            raise ValueError(f"horizon = {horizon}: expected at least 1")
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        self.horizon = horizon
        path = build_cache(self.dataset, obs_keys, progress, labels)
        self.meta = json.loads((path / "meta.json").read_text())
        self.obs = {k: np.load(path / f"obs_{k}.npy", mmap_mode="r") for k in obs_keys}
        self.steps = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in (*STEP_DTYPES, *(("label",) if labels else ()))}
        ep_start, ep_len = np.load(path / "ep_start.npy"), np.load(path / "ep_length.npy")
        self.episode_index = np.load(path / "ep_index.npy")
        self.instructions: list[str] = self.meta["instructions"]
        # every real step can start a window; remember its episode's final-state row
        ep_of = np.repeat(np.arange(len(ep_len)), ep_len)
        self._start = (np.repeat(ep_start, ep_len) + np.arange(int(ep_len.sum()))
                       - np.repeat(np.cumsum(ep_len) - ep_len, ep_len))
        self._last = (ep_start + ep_len)[ep_of]
        self._ep = self.episode_index[ep_of]
        if episodes is not None:
            keep = np.array([bool(episodes(int(i))) for i in self.episode_index])[ep_of]
            if not keep.any():
                raise fmt.DatasetError(f"no episode of '{self.dataset.root}' is selected for sampling")
            self._start, self._last, self._ep = self._start[keep], self._last[keep], self._ep[keep]
        self.instruction_of = dict(zip(self.episode_index.tolist(), self.instructions))
        self._rng = np.random.default_rng(seed)
        self._ar = np.arange(horizon + 1)

    @property
    def transitions(self) -> int:
        return int(self._start.shape[0])

    def sample(self, batch_size: int, first_obs_only: bool = False) -> Window:
        """B random windows. Shapes in ``Window``; with ``first_obs_only`` the observations are
        o_t alone, (B, 1, ...): what a policy sees before it acts out the window's actions."""
        k = self._rng.integers(0, self._start.shape[0], batch_size)
        s, last = self._start[k, None], self._last[k, None]
        offset = s + self._ar  # (B, H+1)
        rows = np.minimum(offset, last)
        step_rows = rows[:, :-1]
        st = {name: arr[step_rows] for name, arr in self.steps.items()}
        obs_rows = rows[:, :1] if first_obs_only else rows
        return Window(obs={name: arr[obs_rows] for name, arr in self.obs.items()}, mask=offset[:, :-1] < last,
                      episode=self._ep[k], **st)
