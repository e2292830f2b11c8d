"""VLA checkpoints: weights, config, data statistics and a format version in one file.

Written atomically, read with ``torch.load(weights_only=True)`` and checked against the weights'
checksum (``robotworld.model.checkpoint.read_format``). ``default`` is the shipped
``robotworld/checkpoints/vla.pt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from robotworld.model.checkpoint import CheckpointError, read_format, save_atomic, weights_checksum
from robotworld.vla.configs import VLAConfig
from robotworld.vla.language import DIM, ENCODER
from robotworld.vla.network import VLA, VLASpec, config_dict

FORMAT = "robotworld-vla"
FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "vla.pt"


class VLACheckpointError(CheckpointError):
    """A file that is not a usable VLA checkpoint; the message says why."""


def resolve(path: str | os.PathLike) -> Path:
    """'default' is the shipped checkpoint; anything else is a path."""
    if str(path) == "default":
        if not SHIPPED.exists():
            raise VLACheckpointError(f"no shipped VLA at {SHIPPED}; train one with `make vla` or "
                                     "`robotworld train policy` and pass its checkpoint")
        return SHIPPED
    return Path(path)


def save(path: str | os.PathLike, model: VLA, extra: dict[str, Any] | None = None) -> None:
    """Write a checkpoint atomically. extra: train config, step, optimizer state, metrics."""
    sd = model.state_dict()
    save_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION,
                       "config": config_dict(model.spec, model.cfg), "state_dict": sd,
                       "checksum": weights_checksum(sd), **(extra or {})})


def read(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, after the format, version and checksum checks."""
    return read_format(resolve(path), FORMAT, FORMAT_VERSION, "VLA", map_location, VLACheckpointError)


def load(path: str | os.PathLike, device: Any = "cpu") -> VLA:
    """A VLA from a checkpoint, in eval mode on device."""
    body = read(path, map_location=device)
    cfg = body["config"]
    s = cfg["spec"]
    if s.get("encoder") != ENCODER or s.get("lang_dim") != DIM:
        raise VLACheckpointError(f"'{path}' was trained with the language encoder {s.get('encoder')!r} "
                                 f"({s.get('lang_dim')}-d); this robotworld embeds with {ENCODER} ({DIM}-d)")
    spec = VLASpec(**{**s, "cameras": tuple(s["cameras"])})
    model = VLA(spec, VLAConfig(**{**cfg["model"], "channels": tuple(cfg["model"]["channels"])}))
    try:
        model.load_state_dict(body["state_dict"])
    except RuntimeError as e:
        raise VLACheckpointError(f"checkpoint '{path}' weights do not match its own config: "
                                 f"{str(e).splitlines()[0]}") from e
    return model.to(device).eval()


def export_shipped(src: str | os.PathLike, dst: str | os.PathLike = SHIPPED) -> Path:
    """Copy a training checkpoint without its optimizer and sampler state: what ships as
    robotworld/checkpoints/vla.pt."""
    body = read(src)
    keep = {k: body[k] for k in ("train_config", "step", "metrics") if k in body}
    save(dst, load(src), keep)
    return Path(dst)


__all__ = ["FORMAT", "FORMAT_VERSION", "SHIPPED", "VLACheckpointError", "load", "read", "resolve", "save",
           "export_shipped"]
