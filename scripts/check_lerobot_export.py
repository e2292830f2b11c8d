"""Load a robotworld LeRobot export with lerobot's own LeRobotDataset and compare it with the source.

Run it with a Python that has lerobot installed (it is not a robotworld dependency):

    robotworld data export data/pick_place --format lerobot --out /tmp/pick_place_lerobot
    python scripts/check_lerobot_export.py data/pick_place /tmp/pick_place_lerobot

Checks every frame's state, action, reward and flags against the source episodes (exact), the
camera frames against the source frames (mean absolute error of the lossy H.264 round trip),
and that action chunks load through delta_timestamps. Exits 1 on any mismatch.
"""

from __future__ import annotations

import sys

import h5py
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main(src: str, out: str, backend: str | None = None) -> int:
    ds = LeRobotDataset("robotworld/export", root=out, video_backend=backend)
    import glob

    files = sorted(glob.glob(f"{src}/episodes/ep_*.h5"))
    print(f"lerobot loaded {ds.num_episodes} episodes, {ds.num_frames} frames at {ds.fps} fps "
          f"(source: {len(files)} episodes)")
    assert ds.num_episodes == len(files), "episode count differs"
    cams = [k.split(".")[-1] for k in ds.meta.video_keys]
    worst_img = 0.0
    frame = 0
    for path in files:
        with h5py.File(path, "r") as f:
            T = int(f.attrs["length"])
            for t in range(0, T, max(1, T // 5)):  # five frames an episode
                item = ds[frame + t]
                np.testing.assert_array_equal(item["observation.state"].numpy(), f["obs/proprio"][t])
                np.testing.assert_array_equal(item["action"].numpy(), f["action"][t])
                assert float(item["next.reward"]) == float(f["reward"][t])
                assert bool(item["next.success"]) == bool(f["is_success"][t])
                assert item["task"] == f.attrs["instruction"]
                for cam in cams:
                    img = (item[f"observation.images.{cam}"].numpy().transpose(1, 2, 0) * 255.0)
                    worst_img = max(worst_img, float(np.abs(img - f[f"obs/image_{cam}"][t]).mean()))
        frame += T
    chunk = LeRobotDataset("robotworld/export", root=out, video_backend=backend,
                           delta_timestamps={"action": [i / ds.fps for i in range(8)]})[0]["action"]
    assert tuple(chunk.shape) == (8, ds.meta.features["action"]["shape"][0])
    print(f"state, action, reward, success and task match exactly; action chunks load {tuple(chunk.shape)}")
    if cams:
        print(f"camera frames: worst mean absolute error {worst_img:.2f} / 255 (lossy H.264)")
        if worst_img > 12:
            print("camera frames differ too much", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
