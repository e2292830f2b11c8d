"""Reading a robotworld dataset: its episodes, the behaviour mix, and integrity checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robotworld.data import format as fmt
from robotworld.stats import wilson_interval


class Dataset:
    """A dataset directory (see ``robotworld.data.format`` for the layout).

    Only published episodes (complete files under their final names) are visible; temporary
    files left by a killed writer are ignored.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.manifest = fmt.read_manifest(self.root)
        self.episode_dir = self.root / fmt.EPISODES

    @property
    def task(self) -> str:
        return self.manifest["task"]

    def indices(self) -> list[int]:
        """Sorted indices of the published episodes."""
        if not self.episode_dir.is_dir():
            return []
        found = (fmt.episode_index(n) for n in os.listdir(self.episode_dir))
        return sorted(i for i in found if i is not None)

    def path(self, index: int) -> Path:
        return self.episode_dir / fmt.episode_name(index)

    def __len__(self) -> int:
        return len(self.indices())

    def episode(self, index: int, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Arrays of one episode plus its attributes under ``attrs``."""
        path = self.path(index)
        if not path.exists():
            raise fmt.DatasetError(f"episode {index} is not in {self.root}")
        try:
            arrays, attrs = fmt.read_episode(path, fields)
        except fmt.DatasetError:
            raise
        except Exception as e:  # truncated or corrupted: HDF5 raises OSError, KeyError, ...
            raise fmt.DatasetError(f"episode file {path} is unreadable ({type(e).__name__}: {e}); "
                                   f"`robotworld data verify {self.root}` lists every bad episode, and "
                                   "deleting one and rerunning the collection collects it again") from e
        return dict(arrays, attrs=attrs)

    def episodes(self, fields: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
        """Every episode in index order, one at a time (never the whole dataset in memory)."""
        for i in self.indices():
            yield self.episode(i, fields)

    # ---- summaries ----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The behaviour mix: outcome rates, lengths, and action statistics."""
        idx = self.indices()
        n = len(idx)
        wins = grasps = hits = steps = slipped = near = 0
        tol = float(self.manifest.get("task_config", {}).get("success_tolerance", 0.04))
        placing = self.task in ("push", "pick_place", "pick_place_clutter")  # goal = object position
        seeds: list[int] = []
        asum = asq = amin = amax = None
        for i in idx:
            ep = self.episode(i, ("action", "obs/objects", "obs/goal"))
            a, attrs = ep["action"].astype(np.float64), ep["attrs"]
            wins += bool(attrs["success"])
            if not attrs["success"]:
                slipped += bool(attrs["grasped"])
                if placing:
                    gap = float(np.linalg.norm(ep["obs/objects"][-1, :2] - ep["obs/goal"][-1, :2]))
                    near += gap < 2 * tol
            grasps += bool(attrs["grasped"])
            hits += bool(attrs["collided"])
            steps += a.shape[0]
            seeds.append(int(attrs["seed"]))
            if asum is None:
                asum, asq = a.sum(0), (a * a).sum(0)
                amin, amax = a.min(0), a.max(0)
            else:
                asum, asq = asum + a.sum(0), asq + (a * a).sum(0)
                amin, amax = np.minimum(amin, a.min(0)), np.maximum(amax, a.max(0))
        m = self.manifest
        out: dict[str, Any] = {
            "path": str(self.root), "task": m["task"], "policy": m["policy"], "sim": m["sim"],
            "schema_version": m["schema_version"], "cameras": m.get("cameras", []),
            "episodes": n, "transitions": steps,
            "seeds": [min(seeds), max(seeds)] if seeds else [],
            "success_rate": wins / n if n else 0.0,
            "success_ci95": [round(x, 4) for x in wilson_interval(wins, n)] if n else [0.0, 1.0],
            "grasp_rate": grasps / n if n else 0.0,
            "collision_rate": hits / n if n else 0.0,
            # failures by kind: the object was held at some point (a grasp that slipped, was
            # dropped or ran out of time), and the object ended within twice the success
            # tolerance of the goal (a near miss)
            "failed_after_grasp_rate": slipped / n if n else 0.0,
            "near_miss_rate": (near / n if n else 0.0) if placing else None,
            "mean_episode_steps": steps / n if n else 0.0,
        }
        if steps:
            mean = asum / steps
            out["action_mean"] = np.round(mean, 4).tolist()
            out["action_std"] = np.round(np.sqrt(np.maximum(asq / steps - mean**2, 0.0)), 4).tolist()
            out["action_min"] = np.round(amin, 4).tolist()
            out["action_max"] = np.round(amax, 4).tolist()
        return out

    def verify(self, progress: bool = False) -> dict[str, str]:
        """{episode file name: what is wrong} for every episode that fails its checksum."""
        from tqdm import tqdm

        bad = {}
        for i in tqdm(self.indices(), desc="verify", disable=not progress, leave=False):
            why = fmt.verify_episode(self.path(i))
            if why:
                bad[fmt.episode_name(i)] = why
        return bad
