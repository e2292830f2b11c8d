"""The on-disk schema of a robotworld dataset (version 1), and how one episode is encoded.

A dataset is a directory::

    DIR/
      robotworld_dataset.json      manifest: format, schema_version, task, collection settings,
                                   observation spec (written once, atomically)
      episodes/ep_000000.h5        one HDF5 file per episode, published by an atomic rename
      episodes/ep_000001.h5
      cache/                       derived, rebuildable (the flat window cache)

One episode of T steps is one HDF5 file:

    obs/proprio      (T+1, 22)     float32   observation before step 0 ... after step T-1
    obs/objects      (T+1, 7N)     float32
    obs/goal         (T+1, 3)      float32
    obs/image_<cam>  (T+1, H, W, 3) uint8    only when cameras were on; deflate, a chunk a frame
    action           (T, A)        float32   the action applied at step t, in [-1, 1]
    label            (T, A)        float32   only from a teacher policy (the noisy experts): the
                                             action it meant at step t before its noise (DART)
    reward           (T,)          float32   reward after step t
    is_success       (T,)          bool      info flags after step t
    is_grasped       (T,)          bool
    collision        (T,)          bool
    terminated       (T,)          bool      the episode ended on success at step t
    truncated        (T,)          bool      the episode hit its step limit at step t

and attributes: ``schema_version``, ``index``, ``seed``, ``task``, ``instruction`` (constant over
an episode: drawn at reset), ``length`` (T), ``success``, ``grasped`` and ``collided`` (whether
the flag was ever true), and ``checksum``: SHA-256 over every dataset's name, dtype, shape and
bytes in sorted name order. A flipped byte anywhere in the data changes it or makes HDF5 fail
to decode the chunk; either way ``robotworld data verify`` names the episode.

Why HDF5: one self-describing, chunked, compressed file per episode makes the per-episode
atomic append a plain ``os.replace`` (nothing half-written is ever visible under a final
name); deflate is built into every HDF5 reader, so no filter plugin is needed; and the format
is decades-stable and readable from any language. Training does not read these files at
random: ``robotworld.data.windows`` streams them once into a memory-mapped flat cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "robotworld-dataset"
SCHEMA_VERSION = 1
MANIFEST = "robotworld_dataset.json"
EPISODES = "episodes"
STEP_FIELDS = ("action", "reward", "is_success", "is_grasped", "collision", "terminated", "truncated")
STATE_OBS = ("proprio", "objects", "goal")
_EP_RE = re.compile(r"^ep_(\d{6,})\.h5$")


class DatasetError(Exception):
    """A dataset directory that cannot be used as asked; the message says why and what to do."""


def episode_name(index: int) -> str:
    return f"ep_{index:06d}.h5"


def episode_index(name: str) -> int | None:
    """The index in a published episode file name, or None for anything else."""
    m = _EP_RE.match(name)
    return int(m.group(1)) if m else None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path via a temporary name in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ---- manifest ---------------------------------------------------------------------------------
def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    body = dict(manifest, format=FORMAT, schema_version=SCHEMA_VERSION)
    atomic_write_bytes(root / MANIFEST, json.dumps(body, indent=2, sort_keys=True).encode())


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a dataset directory; DatasetError if it is missing, foreign or too new."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset directory '{root}' does not exist")
    path = root / MANIFEST
    if not path.exists():
        raise DatasetError(f"'{root}' is not a robotworld dataset: no {MANIFEST} in it "
                           "(collect one with `robotworld collect --out DIR`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a robotworld dataset manifest (format "
                           f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                           f"expected {FORMAT!r})")
    check_version(manifest.get("schema_version"), str(path))
    return manifest


def check_version(version: Any, where: str) -> None:
    if version != SCHEMA_VERSION:
        raise DatasetError(f"{where} was written with dataset schema version {version!r}; this "
                           f"robotworld reads version {SCHEMA_VERSION}. Re-collect it, or use the "
                           "robotworld release that wrote it")


# ---- one episode ------------------------------------------------------------------------------
def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def encode_episode(arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> bytes:
    """One episode as the bytes of an HDF5 file. arrays: names as in the module docstring."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for name, a in arrays.items():
            if a.dtype == np.uint8 and a.ndim == 4:  # camera frames: a chunk a frame, deflate
                f.create_dataset(name, data=a, chunks=(1,) + a.shape[1:], compression="gzip",
                                 compression_opts=1, shuffle=False)
            else:
                f.create_dataset(name, data=a)
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["checksum"] = checksum(arrays)
    return buf.getvalue()


def _walk(f) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def read_episode(path: Path, fields: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, attrs) of one episode file; fields limits which datasets are read."""
    import h5py

    with h5py.File(path, "r") as f:
        check_version(f.attrs.get("schema_version"), str(path))
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        names = list(_walk(f)) if fields is None else list(fields)
        return {n: f[n][()] for n in names}, attrs


def verify_episode(path: Path) -> str | None:
    """None if the episode's data matches its recorded checksum, else what is wrong."""
    try:
        arrays, attrs = read_episode(path)
    except DatasetError as e:
        return str(e)
    except Exception as e:  # a truncated or corrupted file: HDF5 raises OSError, KeyError, ...
        return f"unreadable ({type(e).__name__}: {e})"
    want = attrs.get("checksum")
    if want is None:
        return "no checksum recorded"
    got = checksum(arrays)
    if got != want:
        return f"checksum mismatch (recorded {str(want)[:12]}..., data {got[:12]}...)"
    if arrays["action"].shape[0] != attrs.get("length"):
        return f"length {attrs.get('length')} but {arrays['action'].shape[0]} actions"
    return None
