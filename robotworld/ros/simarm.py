"""robotworld's MuJoCo arm behind the bridge (``robotworld bridge --sim``), ROS-free.

It plays what a robot driver and a perception module would: it takes joint trajectories, tracks
them at the control rate (each point reached through the simulator's joint-position servo, within
its velocity limits), and hands back joint states, camera frames, object, zone and obstacle poses
as the bridge's message dicts. An episode that succeeds or runs out starts the next one (seed + 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sims import robot


class SimArm:
    """One simulated episode after another, driven by joint targets.

    Args:
        task: task name; cameras, image_size: what the policy sees; seed: the first episode's
        seed; joint_names, finger_names: the names its joint states carry; extra: task overrides.
    """

    def __init__(self, task: str, cameras: tuple[str, ...], image_size: tuple[int, int], seed: int,
                 joint_names: tuple[str, ...], finger_names: tuple[str, ...], extra: dict | None = None) -> None:
        import sims

        self.cfg = sims.make_config(task, **(extra or {}))
        dt = 1.0 / self.cfg.control_hz
        # joint actions in units of the largest step the velocity limits allow, so that a target
        # within the limits is reached in one control step (the servo's own clamp still applies)
        self.step_size = float(robot.DQ_MAX.max() * dt)
        self.env = sims.make(task, action_mode="joint", max_joint_step=self.step_size, cameras=tuple(cameras),
                             image_size=tuple(image_size), terminate_on_success=False, **(extra or {}))
        self.names = list(joint_names) + list(finger_names)
        self.seed, self.episodes, self.successes = seed, 0, 0
        self.plan: list[tuple[float, np.ndarray]] = []
        self.obs: dict[str, Any] = {}
        self.done_reason = ""
        self.reset()

    def reset(self) -> None:
        self.obs, _ = self.env.reset(seed=self.seed + self.episodes)
        self.steps, self.success, self.plan = 0, False, []

    @property
    def episode(self):
        return self.env.unwrapped.episode

    def command(self, times: np.ndarray, positions: np.ndarray, stamp: float) -> None:
        """A new trajectory replaces what was left of the last: point i is due at stamp + times[i]."""
        self.plan = [(stamp + float(t), np.asarray(p, np.float64)) for t, p in zip(times, positions)]

    def target(self, now: float) -> np.ndarray | None:
        """The joint target to track at ``now``: the first point not yet due, else the last."""
        while len(self.plan) > 1 and self.plan[0][0] < now - 1e-3:
            self.plan.pop(0)
        return self.plan[0][1] if self.plan else None

    def step(self, now: float) -> bool:
        """One control step towards the current target (or holding still); True when the
        episode ended (success or out of steps) and the next one began."""
        q = np.asarray(self.obs["proprio"][:7], np.float64)
        t = self.target(now)
        if t is None:
            action = np.zeros(8)
            action[7] = 2 * float(self.obs["proprio"][14]) / (2 * robot.FINGER_MAX) - 1
        else:
            action = np.concatenate(((t[:7] - q) / self.step_size, [2 * t[7] / robot.FINGER_MAX - 1]))
        self.obs, _, terminated, truncated, info = self.env.step(np.clip(action, -1, 1).astype(np.float32))
        self.steps += 1
        self.success = self.success or bool(info["is_success"])
        if self.success or truncated or terminated:
            self.episodes += 1
            self.successes += int(self.success)
            self.done_reason = "success" if self.success else "out of steps"
            self.reset()
            return True
        return False

    # ---- what the driver and the perception module publish ----------------------------------
    def joint_state(self, stamp: float) -> dict:
        p = self.obs["proprio"]
        half = float(p[14]) / 2
        return {"stamp": stamp, "name": self.names, "position": [*map(float, p[:7]), half, half],
                "velocity": [*map(float, p[7:14]), 0.0, 0.0]}

    def images(self, stamp: float) -> dict[str, dict]:
        out = {}
        for cam in self.cfg_cameras:
            img = self.obs[f"image_{cam}"]
            out[cam] = {"stamp": stamp, "height": img.shape[0], "width": img.shape[1], "encoding": "rgb8",
                        "data": np.ascontiguousarray(img).tobytes()}
        return out

    @property
    def cfg_cameras(self) -> tuple[str, ...]:
        return tuple(self.env.unwrapped.cfg.cameras)

    def objects(self, stamp: float) -> dict:
        o = np.asarray(self.obs["objects"], np.float64).reshape(-1, 7)  # x y z w qx qy qz
        return {"stamp": stamp, "poses": [(*r[:3], *r[4:7], r[3]) for r in o]}

    def goal(self, stamp: float) -> dict:
        return {"stamp": stamp, "position": tuple(map(float, self.obs["goal"]))}

    def obstacles(self) -> list[dict]:
        return [{"center": tuple(map(float, o.pos)), "size": tuple(2 * float(h) for h in o.half)}
                for o in self.episode.obstacles]

    def instruction(self) -> str:
        return str(self.obs["instruction"])
