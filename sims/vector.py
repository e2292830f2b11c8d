"""Many copies of a task stepped at once.

Three forms, measured against each other by ``robotworld bench env`` (BENCHMARKS.md):

- ``ProcessVectorEnv``: one worker process per core, each stepping a slice of the copies
  whole (controller, physics, observation); observations come back through shared memory
  and each step costs one short message per worker. On the 2-core CI machine it runs level
  with ``ThreadedVectorEnv`` (BENCHMARKS.md); with more cores the Python parts scale too.
- ``ThreadedVectorEnv``: the physics of all copies on a thread pool (MuJoCo releases the GIL
  in ``mj_step``), the Python parts on one thread. No worker processes to start.
- ``make_vec``: Gymnasium's ``AsyncVectorEnv`` (one process per copy) or ``SyncVectorEnv``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


def make_vec(task: str, num_envs: int, sim: str = "mujoco", asynchronous: bool = True,
             **overrides: Any) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a task (processes when asynchronous); instructions as bytes."""
    import sims

    sims.make_config(task, **overrides)  # fail here, in this process, on bad overrides
    from sims.wrappers import NumericInstruction

    # The instruction travels as bytes so that every observation fits in shared memory.
    fns = [lambda: NumericInstruction(sims.make(task, sim=sim, **overrides))
           for _ in range(num_envs)]
    if asynchronous:
        return gym.vector.AsyncVectorEnv(fns, shared_memory=True, context="spawn")
    return gym.vector.SyncVectorEnv(fns)


class _Copies:
    """Copies of one task stepped as a batch, exactly as each would step alone.

    For MuJoCo copies the controller runs once over the batch (``sims.env.begin_steps``, with
    every Jacobian written into one array) and, without cameras, the observations are cast
    together (``sims.env.stacked_obs``); otherwise each copy runs its own ``begin_step`` and
    ``finish_step``. The physics (``advance(i)``) is left to the caller: a thread pool, or a
    loop. Finished episodes are reset in place: the observation is the new episode's first,
    ``infos[i]["final_info"]`` the finished one's last info and ``reset_infos[i]`` the reset's.
    """

    def __init__(self, envs: list) -> None:
        import numpy as np

        self.envs = envs
        self.jac = None
        if all(env.sim == "mujoco" for env in envs):
            self.jac = np.zeros((len(envs), 6, envs[0].physics.model.nv))
            for env, row in zip(envs, self.jac):
                env.physics.bind_jacobian(row)
        self.cast = self.jac is not None and not envs[0].cfg.cameras

    def begin(self, actions) -> None:
        from sims.env import begin_steps

        if self.jac is not None:
            begin_steps(self.envs, actions, self.jac)
        else:
            for env, a in zip(self.envs, actions):
                env.begin_step(a)

    def advance(self, i: int) -> None:
        self.envs[i].physics.advance()

    def finish(self) -> tuple[dict, list, list, list, list, dict]:
        """After every copy advanced: (obs, rewards, terminated, truncated, infos, reset_infos)
        with obs stacked and the rest as lists; reset_infos maps a reset copy to its reset info."""
        from sims.env import stacked_obs

        rew, term, trunc, infos, obs, reset_infos = [], [], [], [], [], {}
        for i, env in enumerate(self.envs):
            if self.cast:
                r, te, tr, info = env.finish_state()
            else:
                o, r, te, tr, info = env.finish_step()
            if te or tr:
                info = {"final_info": info}
                o, reset_infos[i] = env.reset()
            rew.append(r)
            term.append(te)
            trunc.append(tr)
            infos.append(info)
            if not self.cast:
                obs.append(o)
        return (stacked_obs(self.envs) if self.cast else _stack(obs)), rew, term, trunc, infos, reset_infos


def _stack(obs: list[dict]) -> dict:
    """Observations of copies, each key stacked (texts as a list)."""
    import numpy as np

    return {k: ([o[k] for o in obs] if isinstance(obs[0][k], str) else np.stack([o[k] for o in obs]))
            for k in obs[0]}


class ThreadedVectorEnv:
    """``num_envs`` copies whose physics runs on a pool of threads, one per core.

    MuJoCo releases the GIL inside ``mj_step``, so the copies' physics runs on all cores while
    the light Python (controller, observation) runs on one: on two cores this beats one
    process per copy, whose pipes cost more than the physics they parallelise (docs/experiments.md).
    Finished episodes are reset in place (the returned observation is the new episode's first;
    ``infos[i]["final_info"]`` holds the finished episode's last info).
    """

    def __init__(self, task: str, num_envs: int, num_threads: int = 0, sim: str = "mujoco",
                 **overrides: Any) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        import sims

        if num_envs < 1:
            raise ValueError(f"num_envs = {num_envs}: expected at least 1")
        self.envs = [sims.make(task, sim=sim, **overrides) for _ in range(num_envs)]
        self.num_envs = num_envs
        threads = max(1, min(num_threads or os.cpu_count() or 1, num_envs))
        self._threads = threads
        self._pool = ThreadPoolExecutor(max(threads - 1, 1))
        self.single_action_space = self.envs[0].action_space
        self.single_observation_space = self.envs[0].observation_space
        self._raw = [env.unwrapped for env in self.envs]
        self._copies = _Copies(self._raw)

    def reset(self, seed: int | None = None):
        out = [env.reset(seed=None if seed is None else seed + i)
               for i, env in enumerate(self.envs)]
        return _stack([o for o, _ in out]), [i for _, i in out]

    def _advance(self, queue) -> None:
        # Copies are taken one at a time from a shared iterator (next() on it is atomic under
        # the GIL): a copy in contact costs several times one in free motion, so fixed slices
        # would leave a thread idle.
        for i in queue:
            self._copies.advance(i)

    def step(self, actions):
        """actions: (num_envs, A). Returns stacked obs, rewards, terminated, truncated, infos.

        Three phases: the controller of every copy on this thread (for MuJoCo, once over the
        batch: ``sims.env.begin_steps``), then the physics of all copies on this thread and
        the pool's (the GIL is released inside mj_step, so they run in parallel; this thread
        taking a share saves a hand-over, about 6% here; each copy's Jacobian for the next
        step is computed there too), then every copy's reward and observation on this thread.
        Interleaving whole steps across threads instead, or finishing each copy as soon as its
        physics is done, gained 1-3% (measured): the threads trade the GIL at each short
        MuJoCo call.
        """
        import numpy as np

        self._copies.begin(actions)
        # this thread steps copies too, beside threads - 1 pool workers: one hand-over fewer
        queue = iter(range(self.num_envs))
        helpers = [self._pool.submit(self._advance, queue) for _ in range(self._threads - 1)]
        self._advance(queue)
        for h in helpers:
            h.result()
        obs, rew, term, trunc, infos, _ = self._copies.finish()
        return obs, np.array(rew), np.array(term), np.array(trunc), infos

    def close(self) -> None:
        self._pool.shutdown()
        for env in self.envs:
            env.close()


def _worker(conn, task: str, sim: str, overrides: dict, lo: int, hi: int, shm_name: str,
            layout: dict) -> None:
    """Steps copies lo..hi-1 on each command; writes their results into shared memory."""
    from multiprocessing import shared_memory

    import sims

    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        views = _views(shm, layout)
        # the bare envs, as ThreadedVectorEnv steps them: the checker wrappers cost per step
        envs = [sims.make(task, sim=sim, **overrides).unwrapped for _ in range(lo, hi)]
        acts, rew, term, trunc = (views[k][lo:hi] for k in ("action", "reward", "terminated",
                                                             "truncated"))
        flags = views["flags"][lo:hi]
        numeric = [k for k in layout if k.startswith("obs/")]

        copies = _Copies(envs)

        def put(j: int, obs: dict, info: dict) -> None:
            for k in numeric:
                views[k][lo + j] = obs[k[4:]]
            flags[j] = (info.get("is_success", False), info.get("is_grasped", False),
                        info.get("collision", False))

        def put_all(obs: dict) -> None:  # the slice's stacked observations
            for k in numeric:
                views[k][lo:hi] = obs[k[4:]]

    except Exception as e:  # reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        _release(shm)
        return
    conn.send(None)  # ready
    try:
        while True:
            cmd, arg = conn.recv()
            try:
                reply = _command(cmd, arg, envs, copies, lo, acts, rew, term, trunc, flags, put, put_all)
            except Exception as e:  # bad action and the like: the parent raises it
                reply = ("error", f"{type(e).__name__}: {e}")
            conn.send(reply)
            if cmd == "close":
                return
    except (EOFError, KeyboardInterrupt):  # the parent went away
        pass
    finally:
        _release(shm)


def _release(shm) -> None:
    try:
        shm.close()
    except BufferError:  # numpy views still hold it; the mapping goes with the process
        pass


def _command(cmd, arg, envs, copies, lo, acts, rew, term, trunc, flags, put, put_all):
    if cmd == "step":
        copies.begin(acts)
        for j in range(len(envs)):
            copies.advance(j)
        obs, rew[:], term[:], trunc[:], infos, reset_infos = copies.finish()
        events = []  # (index, instruction, final info) of the copies that were reset
        for j, info in enumerate(infos):
            if j in reset_infos:
                events.append((lo + j, obs["instruction"][j], info["final_info"]))
                info = reset_infos[j]
            elif len(info) != 3:  # more than the usual flags, e.g. sim_unstable
                events.append((lo + j, None, info))
            flags[j] = (info.get("is_success", False), info.get("is_grasped", False),
                        info.get("collision", False))
        put_all(obs)
        return events
    if cmd == "reset":
        out = []
        for j, env in enumerate(envs):
            obs, info = env.reset(seed=None if arg is None else arg + lo + j)
            put(j, obs, info)
            out.append(obs["instruction"])
        return out
    if cmd == "close":
        for env in envs:
            env.close()
        return None
    raise ValueError(f"unknown command {cmd!r}")


def _views(shm, layout: dict) -> dict:
    import numpy as np

    return {k: np.ndarray(shape, dtype, buffer=shm.buf, offset=off)
            for k, (off, shape, dtype) in layout.items()}


class ProcessVectorEnv:
    """``num_envs`` copies stepped by ``num_workers`` processes (default: one per core).

    Each worker owns a contiguous slice of the copies and steps each of them whole, so the
    controller and observation Python runs on all cores too, not only the physics (the limit
    of ``ThreadedVectorEnv``). Worker processes are spawned: a script that makes one must
    guard its entry point with ``if __name__ == "__main__":``. Actions and results travel
    through one shared-memory block; per step the parent sends each worker one short message
    and waits for its reply. Copy
    ``i`` is seeded ``seed + i`` and steps exactly as a single env would, bit for bit.
    Finished episodes are reset in place, as in ``ThreadedVectorEnv``
    (``infos[i]["final_info"]`` holds the finished episode's last info).
    """

    def __init__(self, task: str, num_envs: int, num_workers: int = 0, sim: str = "mujoco",
                 **overrides: Any) -> None:
        import multiprocessing as mp
        import os
        from multiprocessing import shared_memory

        import numpy as np

        import sims

        if num_envs < 1:
            raise ValueError(f"num_envs = {num_envs}: expected at least 1")
        if num_workers < 0:
            raise ValueError(f"num_workers = {num_workers}: expected 0 (one per core) or more")
        probe = sims.make(task, sim=sim, **overrides)  # bad task or overrides fail here
        self.single_action_space = probe.action_space
        self.single_observation_space = probe.observation_space
        probe.close()
        self.num_envs = num_envs
        n = num_envs
        fields = {"action": ((n, *self.single_action_space.shape), np.float32),
                  "reward": ((n,), np.float64), "terminated": ((n,), np.bool_),
                  "truncated": ((n,), np.bool_), "flags": ((n, 3), np.bool_)}
        for k, sp in self.single_observation_space.spaces.items():
            if isinstance(sp, gym.spaces.Box):
                fields["obs/" + k] = ((n, *sp.shape), sp.dtype)
        layout, off = {}, 0
        for k, (shape, dtype) in fields.items():
            off = -(-off // 64) * 64  # each array cache-line aligned
            layout[k] = (off, shape, np.dtype(dtype).str)
            off += int(np.prod(shape)) * np.dtype(dtype).itemsize
        self._shm = shared_memory.SharedMemory(create=True, size=max(off, 1))
        self._views = _views(self._shm, layout)
        self._numeric = [k[4:] for k in layout if k.startswith("obs/")]
        self._instructions = [""] * n
        workers = max(1, min(num_workers or os.cpu_count() or 1, n))
        bounds = [round(i * n / workers) for i in range(workers + 1)]
        ctx = mp.get_context("spawn")  # fork is unsafe once torch or a GL context is loaded
        self._conns, self._procs = [], []
        try:
            for w in range(workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, daemon=True,
                                args=(child, task, sim, overrides, bounds[w], bounds[w + 1],
                                      self._shm.name, layout))
                p.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(p)
            replies = [c.recv() for c in self._conns]
            errors = [r[1] for r in replies if isinstance(r, tuple) and r[0] == "error"]
            if errors:
                raise RuntimeError(f"vector env worker failed: {errors[0]}")
        except BaseException:
            self.close()
            raise

    def _command(self, cmd: str, arg=None) -> list:
        """Send cmd to every worker and collect every reply before raising any worker's
        error, so that no reply is left in a pipe to be read as the next command's."""
        for c in self._conns:
            c.send((cmd, arg))
        replies = [c.recv() for c in self._conns]
        for r in replies:
            if isinstance(r, tuple) and len(r) == 2 and r[0] == "error":
                raise RuntimeError(f"vector env worker failed: {r[1]}")
        return replies

    def _obs(self) -> dict:
        out = {k: self._views["obs/" + k].copy() for k in self._numeric}
        out["instruction"] = list(self._instructions)
        return out

    def _infos(self) -> list[dict]:
        return [{"is_success": bool(a), "is_grasped": bool(b), "collision": bool(c)}
                for a, b, c in self._views["flags"].tolist()]

    def reset(self, seed: int | None = None):
        self._instructions = [s for r in self._command("reset", seed) for s in r]
        return self._obs(), self._infos()

    def step(self, actions):
        """actions: (num_envs, A). Returns stacked obs, rewards, terminated, truncated, infos."""
        from sims.env import check_actions

        # checked here, before any worker steps, so that no copy steps and another not
        self._views["action"][:] = check_actions(actions, self._views["action"].shape)
        events = [e for r in self._command("step") for e in r]
        infos = self._infos()
        for i, instruction, info in events:
            if instruction is None:
                infos[i] = info
            else:
                self._instructions[i] = instruction
                infos[i] = {"final_info": info}
        v = self._views
        return (self._obs(), v["reward"].copy(), v["terminated"].copy(), v["truncated"].copy(),
                infos)

    def close(self) -> None:
        for c, p in zip(self._conns, self._procs):
            try:
                if p.is_alive():
                    c.send(("close", None))
                    c.poll(10) and c.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []
        if getattr(self, "_shm", None) is not None:
            self._views = {}
            self._shm.close()
            self._shm.unlink()
            self._shm = None
