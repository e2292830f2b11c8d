"""World-model checkpoints: one file with weights, config, data statistics and a format version.

Written to a temporary name and renamed; read with ``torch.load(weights_only=True)``, so no
pickled code in a file is ever executed. ``default`` resolves to the checkpoint shipped inside
the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from robotworld.model.world_model import ModelConfig, ModelSpec, WorldModel

FORMAT = "robotworld-world-model"
FORMAT_VERSION = 2
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "world_model.pt"


class CheckpointError(ValueError):
    """A file that is not a usable world-model checkpoint; the message says why."""


def resolve(path: str | os.PathLike) -> Path:
    """'default' is the shipped checkpoint; anything else is a path."""
    if str(path) == "default":
        if not SHIPPED.exists():
            raise CheckpointError(f"no shipped world model at {SHIPPED}; train one with "
                                  "`robotworld train world-model` and pass --checkpoint PATH")
        return SHIPPED
    return Path(path)


def weights_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the weights' names, dtypes, shapes and bytes: a tampered file fails it."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(path: str | os.PathLike, model: WorldModel, extra: dict[str, Any] | None = None) -> None:
    """Write a checkpoint atomically. extra: train config, step, optimizer state, metrics."""
    from robotworld.model.world_model import config_dict

    body = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config_dict(model.spec, model.cfg),
            "state_dict": model.state_dict(), "checksum": weights_checksum(model.state_dict()), **(extra or {})}
    save_atomic(path, body)


def save_atomic(path: str | os.PathLike, body: dict[str, Any]) -> None:
    """torch.save to a temporary name beside path, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(body, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, after the format and version checks."""
    return read_format(resolve(path), FORMAT, FORMAT_VERSION, "world-model", map_location)


def read_format(path: Path, fmt: str, version: int, what: str, map_location: Any = "cpu",
                error: type[CheckpointError] = CheckpointError) -> dict[str, Any]:
    """A robotworld checkpoint of format ``fmt`` and ``version`` (what: its kind, for the
    messages), read with weights_only=True and checked against its weights' checksum; each
    kind's loader raises its own ``error``."""
    if not path.is_file():
        raise error(f"checkpoint '{path}' does not exist")
    try:
        body = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holding pickled objects
        raise error(f"'{path}' is not a robotworld {what} checkpoint "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if not isinstance(body, dict) or body.get("format") != fmt:
        raise error(f"'{path}' is not a robotworld {what} checkpoint (format "
                    f"{body.get('format') if isinstance(body, dict) else type(body).__name__!r})")
    if body.get("format_version") != version:
        raise error(f"'{path}' has {what} checkpoint format version {body.get('format_version')!r}; "
                    f"this robotworld reads version {version}. Retrain, or use the release "
                    "that wrote it")
    if body.get("checksum") != weights_checksum(body.get("state_dict", {})):
        raise error(f"'{path}' weights do not match their recorded checksum: the file was "
                    "modified or corrupted after it was written")
    return body


def load(path: str | os.PathLike, device: Any = "cpu") -> WorldModel:
    """A WorldModel from a checkpoint, in eval mode on device."""
    body = read(path, map_location=device)
    cfg = body["config"]
    spec = ModelSpec(**{**cfg["spec"], "tasks": tuple(cfg["spec"]["tasks"])})
    model = WorldModel(spec, ModelConfig(**cfg["model"]))
    try:
        model.load_state_dict(body["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint '{path}' weights do not match its own config: "
                    f"{str(e).splitlines()[0]}") from e
    return model.to(device).eval()


def export_shipped(src: str | os.PathLike, dst: str | os.PathLike = SHIPPED) -> Path:
    """Copy a training checkpoint without its optimizer and sampler state (a few hundred kB):
    what ships as robotworld/checkpoints/world_model.pt."""
    body = read(src)
    model = load(src)
    keep = {k: body[k] for k in ("train_config", "step", "metrics") if k in body}
    save(dst, model, keep)
    return Path(dst)
