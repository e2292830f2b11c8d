"""The one device helper: ``--device auto|cpu|cuda[:N]`` to a torch.device."""

from __future__ import annotations

import re

import torch


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda' or 'cuda:N' as given, checked.
    Raises ValueError naming what was expected."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"device = '{name}': expected auto, cpu, cuda or cuda:N")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device = '{name}' but this machine has no CUDA device; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device = '{name}' but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
