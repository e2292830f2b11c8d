"""Several policies on several tasks and engines into one folder: ``robotworld eval --out DIR``.

    robotworld eval --policy expert,vla,vla+imagine --task lift,pick_place --sim both \\
        --episodes 100 --out runs/eval_all

writes, in DIR:
- ``episodes.jsonl``: one line per finished episode (policy, task, engine, seed, outcome,
  steps, collision, grasp and arm-link contact steps, what the policy counted), appended and
  flushed as each ends, so that a killed evaluation run again with the same command resumes
  and loses no finished episode;
- ``results.json``: every run's summary (success with its 95% Wilson interval, collision and
  grasp rates, steps), the paired comparisons, and the command, versions, machine and git
  revision that produced them;
- ``report.md``: the same as tables.

Paired comparisons: two policies on the same task, engine and seeds are compared episode by
episode (``robotworld.stats.paired_difference``): the episodes each solved that the other did
not, the difference with its 95% interval, and McNemar's exact p.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

from robotworld.stats import paired_difference, wilson_interval

SIMS = ("mujoco", "pybullet")


def split_policies(text: str) -> list[str]:
    """'expert,mpc-fast,collision=0,vla' -> ['expert', 'mpc-fast,collision=0', 'vla']: an item
    with '=' is an option of the policy before it (policy names take FIELD=VALUE options)."""
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if "=" in item and out:
            out[-1] += "," + item
        else:
            out.append(item)
    if not out:
        raise ValueError(f"policy '{text}': expected one or more policy names, comma-separated")
    return out


def split_list(text: str, what: str) -> list[str]:
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise ValueError(f"{what} '{text}': expected one or more names, comma-separated")
    return out


@dataclass
class Suite:
    """What a suite evaluates; a folder holds one suite (resumed only by the same one)."""

    policies: list[str]
    tasks: list[str]
    sims: list[str]
    episodes: int
    seed: int
    overrides: dict = field(default_factory=dict)
    paraphrases: str | None = None
    perturb: str = ""
    """``robotworld.perturb`` spelling; every arm runs beside the unperturbed one."""

    @staticmethod
    def parse(policy: str, task: str, sim: str, episodes: int, seed: int, overrides: dict,
              paraphrases: str | None = None, perturb: str | None = None) -> Suite:
        """From the command line's spelling; every name checked before any episode runs."""
        from policies import check_policy
        from sims.tasks import SAMPLERS

        policies = split_policies(policy)
        for p in policies:
            check_policy(p)
        tasks = split_list(task, "task")
        for t in tasks:
            if t not in SAMPLERS:
                raise ValueError(f"task '{t}': expected one of {', '.join(SAMPLERS)}")
        sims = list(SIMS) if sim.strip() == "both" else split_list(sim, "sim")
        for s in sims:
            if s not in SIMS:
                raise ValueError(f"sim '{s}': expected mujoco, pybullet or both")
        if episodes < 1:
            raise ValueError(f"episodes = {episodes}: expected at least 1")
        from robotworld import perturb as pt

        pt.parse(perturb)  # refused here, before any episode
        return Suite(policies, tasks, sims, episodes, seed, dict(overrides), paraphrases, perturb or "")

    def arms(self) -> dict:
        from robotworld import perturb as pt

        return {a.label: a for a in pt.parse(self.perturb)}

    def runs(self) -> list[tuple[str, str, str, str]]:
        """(sim, task, policy, perturbation) in the order they run."""
        return [(s, t, p, a) for s in self.sims for t in self.tasks for a in self.arms() for p in self.policies]


def _run(row: dict) -> tuple[str, str, str, str]:
    return row["sim"], row["task"], row["policy"], row.get("perturbation", "nominal")


def _key(row: dict) -> tuple[str, str, str, str, int]:
    return (*_run(row), int(row["seed"]))


def read_episodes(path: Path) -> list[dict]:
    """The finished episodes in episodes.jsonl; a line torn by a kill (the last) is dropped and
    cut from the file, so that appending goes on from a whole line."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in raw[:end].decode().splitlines() if line.strip()]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _provenance(argv: list[str] | None) -> dict[str, Any]:
    import mujoco
    import torch

    import robotworld

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {"command": " ".join(["robotworld", *(argv if argv is not None else sys.argv[1:])]),
            "git_revision": rev, "robotworld": robotworld.__version__, "python": platform.python_version(),
            "torch": torch.__version__, "mujoco": mujoco.__version__,
            "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def summarise(rows: list[dict]) -> dict[str, Any]:
    """One run's figures from its episodes (the keys of ``robotworld eval --json``)."""
    n, wins = len(rows), sum(r["success"] for r in rows)
    lo, hi = wilson_interval(wins, n)
    return {"sim": rows[0]["sim"], "task": rows[0]["task"], "policy": rows[0]["policy"],
            "perturbation": rows[0].get("perturbation", "nominal"), "episodes": n,
            "seeds": [min(r["seed"] for r in rows), max(r["seed"] for r in rows)],
            "success_rate": wins / n, "success_ci95": [round(lo, 4), round(hi, 4)],
            "collision_rate": sum(r["collision_steps"] > 0 for r in rows) / n,
            "collisions_per_episode": sum(r["collision_steps"] for r in rows) / n,
            "grasp_rate": sum(r["grasp_steps"] > 0 for r in rows) / n,
            "link_contacts_per_episode": sum(r["link_contact_steps"] for r in rows) / n,
            "mean_episode_steps": sum(r["steps"] for r in rows) / n,
            "mean_steps_to_success": (sum(r["steps"] for r in rows if r["success"]) / wins) if wins else None}


def pair_runs(where: dict, a: str, b: str, ea: dict, eb: dict) -> dict | None:
    """Two runs' episodes by seed, compared on their common seeds (None when they share none)."""
    seeds = sorted(set(ea) & set(eb))
    if not seeds:
        return None
    a_only = sum(ea[s]["success"] and not eb[s]["success"] for s in seeds)
    b_only = sum(eb[s]["success"] and not ea[s]["success"] for s in seeds)
    return {**where, "a": a, "b": b, "seeds": len(seeds), "a_only": a_only, "b_only": b_only,
            **paired_difference(a_only, b_only, len(seeds))}


def compare(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Every run's summary, and paired comparisons on common seeds: every two policies on a task,
    engine and perturbation, and each perturbed arm against the same policy's nominal one."""
    by_run: dict[tuple[str, str, str, str], dict[int, dict]] = {}
    for r in rows:
        by_run.setdefault(_run(r), {})[int(r["seed"])] = r
    runs = [summarise(sorted(v.values(), key=lambda r: r["seed"])) for v in by_run.values()]
    pairs = []
    for (sim, task, arm) in dict.fromkeys((s, t, a) for s, t, _, a in by_run):
        names = [p for s, t, p, a in by_run if (s, t, a) == (sim, task, arm)]
        for a, b in combinations(names, 2):
            pair = pair_runs({"sim": sim, "task": task, "perturbation": arm}, a, b, by_run[(sim, task, a, arm)],
                         by_run[(sim, task, b, arm)])
            if pair:
                pairs.append(pair)
        if arm != "nominal":
            for p in names:
                if (sim, task, p, "nominal") in by_run:
                    pair = pair_runs({"sim": sim, "task": task, "perturbation": arm}, f"{p} [{arm}]", f"{p} [nominal]",
                                 by_run[(sim, task, p, arm)], by_run[(sim, task, p, "nominal")])
                    if pair:
                        pairs.append(pair)
    return runs, pairs


def report_md(runs: list[dict], pairs: list[dict], meta: dict) -> str:
    lines = ["# Evaluation report", "", f"`{meta['command']}`", "",
             f"robotworld {meta['robotworld']} (git {meta['git_revision'] or 'unknown'}), torch {meta['torch']}, "
             f"mujoco {meta['mujoco']}, Python {meta['python']}, {meta['machine']['platform']}, "
             f"{meta['machine']['cpus']} CPUs; finished {meta['finished']}.", "",
             "| engine | task | policy | perturbation | episodes (seeds) | success [95% CI] | collision rate | grasp rate "
             "| steps to success |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lo, hi = r["success_ci95"]
        sts = "-" if r["mean_steps_to_success"] is None else f"{r['mean_steps_to_success']:.1f}"
        lines.append(f"| {r['sim']} | {r['task']} | `{r['policy']}` | {r['perturbation']} "
                     f"| {r['episodes']} ({r['seeds'][0]}-{r['seeds'][1]}) "
                     f"| {r['success_rate']:.1%} [{lo:.1%}, {hi:.1%}] | {r['collision_rate']:.1%} "
                     f"| {r['grasp_rate']:.1%} | {sts} |")
    if pairs:
        lines += ["", "Paired on the same seeds (A only / B only: episodes one solved and the other did not):", "",
                  "| engine | task | A | B | seeds | A only / B only | A - B [95% CI] | McNemar p |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in pairs:
            lo, hi = p["diff_ci95"]
            lines.append(f"| {p['sim']} | {p['task']} | `{p['a']}` | `{p['b']}` | {p['seeds']} | {p['a_only']} / "
                         f"{p['b_only']} | {p['diff']:+.1%} [{lo:+.1%}, {hi:+.1%}] | {p['mcnemar_p']:.3g} |")
    return "\n".join(lines) + "\n"


def make_policy(name: str, device: str = "auto"):
    """The policy a name spells, as ``robotworld eval`` makes it (a picklable factory for workers)."""
    from policies import make_policy as make
    from robotworld.device import pick_device

    pick_device(device)
    return make(name, seed=0, device=device)


_WORKER: dict[str, Any] = {}
"""A worker process's own policy and environment, built once per (engine, task, policy) run."""


def _worker_init(factory: Callable[[str], Any], overrides: dict, paraphrases: list[str], arms: dict) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.update(factory=factory, overrides=overrides, paraphrases=paraphrases, arms=arms, built={})


def _close_built() -> None:
    for _, env in _WORKER.get("built", {}).values():
        env.close()
    _WORKER.get("built", {}).clear()


def _episode(job: tuple[str, str, str, str, int]) -> dict:
    """One episode: (engine, task, policy, perturbation, seed) -> its episodes.jsonl row."""
    from robotworld.evaluation import run_episode

    sim, task, name, arm, seed = job
    if (sim, task, name, arm) not in _WORKER["built"]:
        import sims
        from sims.wrappers import ActionLatency

        _close_built()  # the jobs come run by run: one run's env at a time
        policy = _WORKER["factory"](name)
        overrides = {**getattr(policy, "env_overrides", {}), **_WORKER["overrides"]}
        p = _WORKER["arms"][arm]
        overrides.update(p.overrides(sims.make_config(task, **overrides)))
        env = sims.make(task, sim=sim, **overrides)
        if p.latency:
            env = ActionLatency(env, p.latency)
        _WORKER["built"][(sim, task, name, arm)] = (policy, env)
    policy, env = _WORKER["built"][(sim, task, name, arm)]
    ok, hits, steps, _, held, links = run_episode(env, policy, seed, False, _WORKER["paraphrases"])
    return {"policy": name, "task": task, "sim": sim, "perturbation": arm, "seed": seed, "success": bool(ok),
            "steps": int(steps),
            "collision_steps": int(hits), "grasp_steps": int(held), "link_contact_steps": int(links),
            **dict(getattr(policy, "episode_stats", None) or {})}


def run_suite(suite: Suite, out: str, factory: Callable[[str], Any] = make_policy, progress: bool = True,
              argv: list[str] | None = None, workers: int = 1) -> dict[str, Any]:
    """Run (or resume) every episode of the suite into the folder ``out``; returns results.json's
    content. Each episode runs on one torch thread, in this process (workers = 1) or in a pool of
    worker processes, so that its outcome is the same whatever the parallelism. factory(name)
    makes a policy (picklable when workers > 1)."""
    from tqdm import tqdm

    import sims
    from robotworld.evaluation import read_paraphrases
    from robotworld.paths import writable_dir

    if workers < 1:
        raise ValueError(f"workers = {workers}: expected at least 1")
    for task in suite.tasks:  # every arm's task config checked before any episode
        base = sims.make_config(task, **suite.overrides)
        for arm in suite.arms().values():
            try:
                sims.make_config(task, **{**suite.overrides, **arm.overrides(base)})
            except ValueError as e:
                raise ValueError(f"perturbation {arm.label} on {task}: {e}") from None
    folder = writable_dir(out, "evaluation folder")
    spec = asdict(suite)
    spec_path = folder / "suite.json"
    if spec_path.exists():
        held = json.loads(spec_path.read_text())
        if held != spec:
            raise ValueError(f"evaluation folder '{out}' holds another evaluation ({held['policies']} on "
                             f"{held['tasks']}, {held['episodes']} episodes from seed {held['seed']}, "
                             f"{held['sims']}); give another --out, or the same command to resume it")
    elif (folder / "episodes.jsonl").exists():
        raise ValueError(f"evaluation folder '{out}' holds an episodes.jsonl without its suite.json; "
                         "give another --out")
    else:
        _write_atomic(spec_path, json.dumps(spec, indent=2))
    paraphrases = read_paraphrases(suite.paraphrases)
    path = folder / "episodes.jsonl"
    rows = read_episodes(path)
    done = {_key(r) for r in rows}
    total = len(suite.runs()) * suite.episodes
    bar = tqdm(total=total, initial=len(done), desc="eval", disable=not progress)
    jobs = [(*run, suite.seed + k) for run in suite.runs() for k in range(suite.episodes)
            if (*run, suite.seed + k) not in done]
    with open(path, "a") as log:
        def keep(row: dict) -> None:
            log.write(json.dumps(row) + "\n")
            log.flush()
            os.fsync(log.fileno())
            rows.append(row)
            bar.update(1)
            bar.set_postfix_str(f"{row['policy']} on {row['task']} ({row['sim']})")

        if workers == 1 or len(jobs) <= 1:
            import torch

            threads = torch.get_num_threads()
            _worker_init(factory, suite.overrides, paraphrases, suite.arms())
            try:
                for job in jobs:
                    keep(_episode(job))
            finally:
                _close_built()
                _WORKER.clear()
                torch.set_num_threads(threads)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # no fork of a process that holds torch's thread pool
            with ctx.Pool(workers, _worker_init, (factory, suite.overrides, paraphrases, suite.arms())) as pool:
                for row in pool.imap_unordered(_episode, jobs):
                    keep(row)
    bar.close()
    order = {run: i for i, run in enumerate(suite.runs())}  # the suite's order, whatever finished first
    rows = sorted((r for r in rows if _run(r) in order), key=lambda r: (order[_run(r)], r["seed"]))
    runs, pairs = compare(rows)
    meta = _provenance(argv)
    result = {**meta, "suite": spec, "runs": runs, "paired": pairs}
    _write_atomic(folder / "results.json", json.dumps(result, indent=2))
    _write_atomic(folder / "report.md", report_md(runs, pairs, meta))
    return result


def merge(dirs: list[str], out: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Earlier evaluation folders compared without re-running them (``robotworld report``): their
    episodes together (an episode in two folders counted once, and refused if they disagree), each
    run's figures and the paired comparisons of every two policies on a task and engine. out: a
    folder for the merged results.json and report.md."""
    if not dirs:
        raise ValueError("no evaluation folder given: robotworld report DIR [DIR...]")
    seen: dict[tuple, dict] = {}
    for d in dirs:
        path = Path(d) / "episodes.jsonl"
        if not path.is_file():
            raise ValueError(f"'{d}' is not an evaluation folder: no episodes.jsonl (robotworld eval --out {d})")
        for r in [json.loads(x) for x in path.read_text().splitlines() if x.strip().endswith("}")]:
            k = _key(r)
            if k in seen and seen[k]["success"] != r["success"]:
                raise ValueError(f"'{d}' and an earlier folder disagree on {k[2]} on {k[1]} ({k[0]}), seed {k[3]}: "
                                 "the runs differ (checkpoints, versions or overrides); compare them apart")
            seen.setdefault(k, r)
    rows = sorted(seen.values(), key=lambda r: (r["sim"], r["task"], r["policy"], r["seed"]))
    runs, pairs = compare(rows)
    meta = _provenance(argv)
    result = {**meta, "merged": [str(d) for d in dirs], "runs": runs, "paired": pairs}
    if out is not None:
        from robotworld.paths import writable_dir

        folder = writable_dir(out, "report folder")
        _write_atomic(folder / "results.json", json.dumps(result, indent=2))
        _write_atomic(folder / "report.md", report_md(runs, pairs, meta))
    return result
