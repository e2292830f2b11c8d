"""The ``robotworld`` command line.

Usage examples:

    robotworld demo                                   # vla vs vla+imagine (and the expert), table + videos
    robotworld eval --policy expert --task pick_place --episodes 100 --seed 0 --json
    robotworld eval --policy expert --task lift --sim pybullet --video runs/videos
    robotworld eval --policy zero --task push --set episode_length=50
    robotworld bench env --task pick_place --json
    robotworld bench twin --task pick_place --episodes 20 --json
    robotworld collect --task pick_place --policy noisy-expert --episodes 2000 --workers 2 \\
        --out data/pick_place [--cameras front,wrist] [--backend ray]
    robotworld data info data/pick_place --json
    robotworld data verify data/pick_place
    robotworld data export data/pick_place --format lerobot --out data/pick_place_lerobot
    robotworld bench data --json
    robotworld train world-model --data data/wm/pick_place,data/wm/lift --out runs/wm [--device auto] [--resume]
    robotworld eval world-model --checkpoint default --data data/wm/pick_place --json
    robotworld bench imagine --json
    robotworld train collision --out robotworld/checkpoints/collision.pt
    robotworld collect --task lift --policy noisy-expert --episodes 800 --cameras front,wrist \
        --set image_size=64,64 --seed 1000000 --out data/vla/lift
    robotworld train policy --data data/vla/reach,data/vla/lift --out runs/vla [--resume]
    robotworld eval --policy vla --task lift --episodes 100 --json
    robotworld eval --policy vla+imagine,candidates=16,state=estimated --task pick_place
    robotworld bench collision --json
"""

from __future__ import annotations

import argparse
import json
import sys

from robotworld import configs

EXIT_BAD_INPUT = 2


def _table(rows: list[dict]) -> str:
    """The rows as an aligned text table; the task and policy columns as wide as their longest entry."""
    tw = max([len("task"), *(len(r["task"]) for r in rows)])
    pw = max([len("policy"), *(len(r["policy"]) for r in rows)])
    head = (f"{'task':{tw}s} {'policy':{pw}s} {'sim':9s} {'episodes':>8s} {'success':>8s} {'95% CI':>15s} {'steps':>7s}"
            f" {'collide':>8s} {'grasped':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lo, hi = r["success_ci95"]
        lines.append(f"{r['task']:{tw}s} {r['policy']:{pw}s} {r['sim']:9s} {r['episodes']:8d} {r['success_rate']:8.1%}"
                     f" {f'[{lo:.1%}, {hi:.1%}]':>15s} {r['mean_episode_steps']:7.1f}"
                     f" {r['collision_rate']:8.1%} {r['grasp_rate']:8.1%}")
    return "\n".join(lines)


def _emit(out: dict, as_json: bool) -> None:
    """Print a result as JSON, or as one aligned ``key value`` line per field."""
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        width = max(map(len, out), default=0) + 2
        print("\n".join(f"{k:{width}s} {v}" for k, v in out.items()))


def _config_and_env(cls: type, args: argparse.Namespace):
    """The run config (defaults < --config file < flags) and the task overrides (the file's
    'env' mapping < --set). --json turns the progress bar off."""
    file_values = configs.load_yaml(args.config) if args.config else {}
    overrides = file_values.pop("env", {}) or {}
    cfg = configs.build(cls, args, file_values)
    if args.json:
        cfg.progress = False
    overrides.update(configs.parse_overrides(args.set))
    return cfg, overrides


def eval_policy(cfg):
    """The policy an EvalConfig names. One episode at a time, each episode's randomness (a
    planner's noise, a noisy expert's) restarts from its own seed, so that episode k of a run
    replays the same alone; batched, the planner's noise is shared and drawn from the run's
    first seed."""
    from policies import make_policy
    from robotworld.device import pick_device

    pick_device(cfg.device)  # refused up front, whichever policy reads it
    return make_policy(cfg.policy, seed=cfg.seed if cfg.batch > 1 else 0, device=cfg.device)


def cmd_eval(args: argparse.Namespace) -> int:
    from robotworld.evaluation import EvalConfig, as_dict, evaluate

    cfg, overrides = _config_and_env(EvalConfig, args)
    from robotworld.suite import split_policies

    several = len(split_policies(cfg.policy)) > 1 or "," in cfg.task or cfg.sim == "both" or bool(cfg.perturb)
    if cfg.out is not None or several:
        return _eval_suite(cfg, overrides, args.json)
    result = as_dict(evaluate(cfg, eval_policy(cfg), **overrides))
    print(json.dumps(result, indent=2) if args.json else _table([result]))
    return 0


def _eval_suite(cfg, overrides: dict, as_json: bool) -> int:
    """``robotworld eval`` over several policies, tasks or engines into a folder (``robotworld.suite``)."""
    import functools
    import os

    from robotworld.suite import Suite, make_policy, run_suite

    if cfg.batch != 1 or cfg.video is not None:
        raise ValueError("an evaluation folder (--out, or several policies, tasks or engines) runs one episode "
                         "at a time without video: drop --batch and --video")
    suite = Suite.parse(cfg.policy, cfg.task, cfg.sim, cfg.episodes, cfg.seed, overrides, cfg.paraphrases,
                        cfg.perturb)
    out = cfg.out or "runs/eval"
    if cfg.workers < 0:
        raise ValueError(f"workers = {cfg.workers}: expected 0 (one per CPU core) or more")
    from robotworld.device import pick_device

    pick_device(cfg.device)  # refused before any worker starts
    workers = cfg.workers or os.cpu_count() or 1
    result = run_suite(suite, out, functools.partial(make_policy, device=cfg.device), cfg.progress,
                       workers=workers)
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    _print_suite(result)
    print(f"\nwritten: {out}/results.json, {out}/report.md, {out}/episodes.jsonl")
    return 0


def _print_suite(result: dict) -> None:
    print(_table([{**r, "policy": r["policy"] + ("" if r["perturbation"] == "nominal" else f" [{r['perturbation']}]")}
                  for r in result["runs"]]))
    for p in result["paired"]:
        lo, hi = p["diff_ci95"]
        print(f"{p['task']} ({p['sim']}): {p['a']} solved {p['a_only']} that {p['b']} did not, {p['b_only']} the "
              f"other way ({p['seeds']} seeds); difference {p['diff']:+.1%} [{lo:+.1%}, {hi:+.1%}], "
              f"McNemar p = {p['mcnemar_p']:.3g}")


def cmd_report(args: argparse.Namespace) -> int:
    from robotworld.suite import merge

    result = merge(args.dirs, args.out)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_suite(result)
    return 0


DEMO_POLICIES = ("expert", "vla", "vla+imagine")
"""The main job: the VLA alone against the VLA that imagines before it acts, with the scripted
expert (privileged state) as the reference."""


def paired(a: dict, b: dict) -> dict:
    """Episodes solved by one of two runs on the same seeds and not by the other (the pairing of
    ``robotworld.suite``, with its interval and McNemar's p)."""
    from robotworld.suite import pair_runs

    p = pair_runs({}, a["policy"], b["policy"], {e["seed"]: e for e in a["per_episode"]},
                  {e["seed"]: e for e in b["per_episode"]})
    return {"seeds": p["seeds"], f"{b['policy']}_only": p["b_only"], f"{a['policy']}_only": p["a_only"],
            "diff_ci95": p["diff_ci95"], "mcnemar_p": p["mcnemar_p"]}


def cmd_demo(args: argparse.Namespace) -> int:
    from robotworld.evaluation import EvalConfig, as_dict, evaluate

    if args.episodes < 1:
        raise ValueError(f"episodes = {args.episodes}: expected at least 1")
    rows = []
    for policy in DEMO_POLICIES:
        cfg = EvalConfig(task=args.task, policy=policy, episodes=args.episodes, seed=args.seed, sim=args.sim,
                         video=args.out, video_episodes=1, device=args.device)
        rows.append(as_dict(evaluate(cfg, eval_policy(cfg))))
    pair = paired(rows[1], rows[2])
    if args.json:
        print(json.dumps({"runs": rows, "paired": pair}, indent=2))
        return 0
    print(_table(rows))
    print(f"\nsame seeds: vla+imagine solved {pair['vla+imagine_only']} that vla did not, vla solved "
          f"{pair['vla_only']} that vla+imagine did not ({pair['seeds']} seeds)")
    print(f"\nvideos: {args.out}/")
    return 0





# `robotworld bench NAME`: (config dataclass, function in robotworld.bench, help)
BENCHES = {
    "env": ("EnvBenchConfig", "bench_env", "env, batched, raw-physics and rendered steps/s"),
    "data": ("DataBenchConfig", "bench_data", "collection throughput, memory over a long run, window sampling"),
    "imagine": ("ImagineBenchConfig", "bench_imagine", "world model: imagined transitions/s and training samples/s"),
    "planner": ("PlannerBenchConfig", "bench_planner", "MPPI / CEM plan latency over the world model, flops fraction"),
    "twin": ("TwinBenchConfig", "bench_twin", "MuJoCo vs PyBullet divergence on the same expert actions"),
    "policy": ("PolicyBenchConfig", "bench_policy", "decision latency of vla and vla+imagine (k candidates scored)"),
    "bridge": ("BridgeBenchConfig", "bench_bridge", "ROS 2 bridge under a 20 Hz joint-state stream: latency, loss, memory"),
    "collision": ("CollisionBenchConfig", "bench_collision",
                  "learned collision predictor vs the exact checker: recall, precision, queries/s"),
}


def cmd_bench(args: argparse.Namespace) -> int:
    from robotworld import bench

    cfg_name, fn_name, _ = BENCHES[args.what]
    _emit(getattr(bench, fn_name)(configs.build(getattr(bench, cfg_name), args)), args.json)
    return 0


def cmd_train_world_model(args: argparse.Namespace) -> int:
    from robotworld.model.configs import TrainConfig
    from robotworld.model.train import train

    cfg = configs.build(TrainConfig, args, configs.load_yaml(args.config) if args.config else {})
    if args.json:
        cfg.progress = False
    metrics = train(cfg)
    _emit(metrics, args.json)
    return 0


def cmd_train_policy(args: argparse.Namespace) -> int:
    from robotworld.vla.configs import PolicyTrainConfig
    from robotworld.vla.train import train

    cfg = configs.build(PolicyTrainConfig, args, configs.load_yaml(args.config) if args.config else {})
    if args.json:
        cfg.progress = False
    _emit(train(cfg), args.json)
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from robotworld.ros.config import BridgeConfig

    file_values = configs.load_yaml(args.config) if args.config else {}
    cfg = configs.build(BridgeConfig, args, file_values)
    for name in ("joint_names", "finger_names", "position_min", "position_max", "velocity_max"):
        setattr(cfg, name, tuple(getattr(cfg, name)))
    from robotworld.ros.node import run

    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        raise ValueError(f"robotworld bridge needs ROS 2's rclpy ({e}): pip install 'robotworld[ros2]'") from None
    _emit(run(cfg, args.ros_args, args.duration, args.status_file or ""), args.json)
    return 0


def cmd_train_collision(args: argparse.Namespace) -> int:
    from robotworld.collision.configs import CollisionTrainConfig
    from robotworld.collision.train import train

    cfg = configs.build(CollisionTrainConfig, args, configs.load_yaml(args.config) if args.config else {})
    if args.json:
        cfg.progress = False
    _emit(train(cfg), args.json)
    return 0


def cmd_eval_world_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robotworld.model.configs import WorldModelEvalConfig
    from robotworld.model.evaluate import evaluate_world_model, write_json

    cfg = configs.build(WorldModelEvalConfig, args)
    res = evaluate_world_model(cfg)
    write_json(res, Path(cfg.out) / "metrics.json")
    _emit(res, args.json)
    return 0




def cmd_collect(args: argparse.Namespace) -> int:
    from policies import factory
    from robotworld.data import CollectConfig, collect

    cfg, overrides = _config_and_env(CollectConfig, args)
    result = collect(cfg, factory(cfg.policy, cfg.device), **overrides)
    out = dict(vars(result), failed={str(k): v for k, v in result.failed.items()})
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{result.out}: {result.collected} episodes collected, {result.skipped} already there, "
              f"{result.transitions} transitions at {result.transitions_per_s:.0f}/s")
    if result.failed:
        print(f"robotworld collect: {len(result.failed)} episode(s) failed after retries: "
              f"{', '.join(map(str, sorted(result.failed)))}; run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from robotworld.data import Dataset

    _emit(Dataset(args.dir).info(), args.json)
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from robotworld.data import Dataset

    ds = Dataset(args.dir)
    bad = ds.verify(progress=not args.json)
    n = len(ds)
    if args.json:
        print(json.dumps({"path": str(ds.root), "episodes": n, "bad": bad}, indent=2))
    elif not bad:
        print(f"{ds.root}: all {n} episodes match their checksums")
    for name, why in sorted(bad.items()):
        print(f"bad episode {name}: {why}", file=sys.stderr)
    return 1 if bad else 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from robotworld.data.lerobot import export_lerobot

    if args.format != "lerobot":
        raise ValueError(f"--format {args.format}: expected lerobot")
    out = export_lerobot(args.dir, args.out, fps=None, progress=not args.json)
    print(json.dumps(out, indent=2) if args.json else f"wrote {out['episodes']} episodes to {out['out']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from robotworld.evaluation import EvalConfig
    from robotworld.model.configs import TrainConfig, WorldModelEvalConfig

    p = argparse.ArgumentParser(prog="robotworld", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="evaluate a policy on a task (success with 95%% CI)")
    configs.add_arguments(ev, EvalConfig)
    ev.add_argument("--config", help="YAML file of EvalConfig fields (and an 'env' mapping)")
    ev.add_argument("--set", action="append", metavar="FIELD=VALUE",
                    help="override a task config field, e.g. --set episode_length=200")
    ev.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ev.set_defaults(func=cmd_eval)

    from robotworld.ros.config import BridgeConfig

    br = sub.add_parser("bridge", help="ROS 2 node: a policy in front of a ROS 2 arm (or, with --sim, robotworld's "
                        "own MuJoCo arm); joint states, cameras and poses in, JointTrajectory out",
                        description="Topics, joint names and limits come from --config bridge.yaml (see "
                        "configs/bridge.yaml); remap the ROS way after --ros-args, e.g. "
                        "robotworld bridge --sim --ros-args -r /joint_states:=/franka/joint_states")
    configs.add_arguments(br, BridgeConfig, skip=("joint_names", "finger_names", "position_min", "position_max",
                                                  "velocity_max", "extra"))
    br.add_argument("--config", help="YAML file of BridgeConfig fields (joint names, limits, topics)")
    br.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default 0: until Ctrl-C)")
    br.add_argument("--status-file", help="JSON file rewritten every 0.2 s with the running summary")
    br.add_argument("--json", action="store_true", help="print the summary as JSON when it stops")
    br.set_defaults(func=cmd_bridge)

    rep = sub.add_parser("report", help="merge and compare earlier evaluation folders (robotworld eval --out) "
                         "without re-running them")
    rep.add_argument("dirs", nargs="+", metavar="DIR", help="evaluation folders")
    rep.add_argument("--out", default=None, help="folder for the merged results.json and report.md")
    rep.add_argument("--json", action="store_true", help="print machine-readable JSON")
    rep.set_defaults(func=cmd_report)

    demo = sub.add_parser("demo", help="run the main job: the VLA alone against the VLA that imagines before it "
                                       "acts (and the expert as the reference), with videos of what it imagined")
    demo.add_argument("--task", default="pick_place_clutter", help="task (default pick_place_clutter)")
    demo.add_argument("--episodes", type=int, default=10, help="episodes per policy, the same seeds (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    demo.add_argument("--sim", default="mujoco", help="mujoco or pybullet (default mujoco)")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    demo.add_argument("--out", default="runs/demo", help="video directory (default runs/demo)")
    demo.add_argument("--json", action="store_true", help="print machine-readable JSON")
    demo.set_defaults(func=cmd_demo)

    from robotworld.data import CollectConfig

    co = sub.add_parser("collect", help="roll out a policy in parallel into a durable dataset")
    configs.add_arguments(co, CollectConfig)
    co.add_argument("--config", help="YAML file of CollectConfig fields (and an 'env' mapping)")
    co.add_argument("--set", action="append", metavar="FIELD=VALUE",
                    help="override a task config field, e.g. --set episode_length=200")
    co.add_argument("--json", action="store_true", help="print machine-readable JSON")
    co.set_defaults(func=cmd_collect)

    data = sub.add_parser("data", help="inspect, verify and export datasets")
    dsub = data.add_subparsers(dest="what", required=True)
    di = dsub.add_parser("info", help="episodes, transitions, outcome rates, action statistics")
    di.add_argument("dir", help="dataset directory")
    di.add_argument("--json", action="store_true", help="print machine-readable JSON")
    di.set_defaults(func=cmd_data_info)
    dv = dsub.add_parser("verify", help="check every episode against its checksum (exit 1 if any is bad)")
    dv.add_argument("dir", help="dataset directory")
    dv.add_argument("--json", action="store_true", help="print machine-readable JSON")
    dv.set_defaults(func=cmd_data_verify)
    dx = dsub.add_parser("export", help="write the dataset in another layout (LeRobotDataset v3.0)")
    dx.add_argument("dir", help="dataset directory")
    dx.add_argument("--format", default="lerobot", help="target layout: lerobot (default)")
    dx.add_argument("--out", required=True, help="output directory (must not exist)")
    dx.add_argument("--json", action="store_true", help="print machine-readable JSON")
    dx.set_defaults(func=cmd_data_export)

    train = sub.add_parser("train", help="train a model")
    tsub = train.add_subparsers(dest="what", required=True)
    tw = tsub.add_parser("world-model", help="train the latent world model on collected datasets")
    configs.add_arguments(tw, TrainConfig)
    tw.add_argument("--config", help="YAML file of TrainConfig fields")
    tw.add_argument("--json", action="store_true", help="print the final metrics as JSON (no progress bar)")
    tw.set_defaults(func=cmd_train_world_model)
    from robotworld.vla.configs import PolicyTrainConfig

    tp = tsub.add_parser("policy", help="train the VLA policy by behaviour cloning on camera datasets with "
                         "instructions (flow matching on action chunks)")
    configs.add_arguments(tp, PolicyTrainConfig)
    tp.add_argument("--config", help="YAML file of PolicyTrainConfig fields")
    tp.add_argument("--json", action="store_true", help="print the final metrics as JSON (no progress bar)")
    tp.set_defaults(func=cmd_train_policy)
    from robotworld.collision.configs import CollisionTrainConfig

    tc = tsub.add_parser("collision", help="train the learned collision predictor on labels from "
                         "the exact (MuJoCo) checker")
    configs.add_arguments(tc, CollisionTrainConfig)
    tc.add_argument("--config", help="YAML file of CollisionTrainConfig fields")
    tc.add_argument("--json", action="store_true", help="print the final metrics as JSON (no progress bar)")
    tc.set_defaults(func=cmd_train_collision)

    ew = sub.add_parser("eval-world-model", help="world-model accuracy on held-out episodes "
                        "(also spelled `robotworld eval world-model`)")
    configs.add_arguments(ew, WorldModelEvalConfig)
    ew.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ew.set_defaults(func=cmd_eval_world_model)

    bench = sub.add_parser("bench", help="throughput benchmarks")
    bsub = bench.add_subparsers(dest="what", required=True)
    from robotworld import bench as benches

    for name, (cfg_name, _, text) in BENCHES.items():
        b = bsub.add_parser(name, help=text)
        configs.add_arguments(b, getattr(benches, cfg_name))
        b.add_argument("--json", action="store_true", help="print machine-readable JSON")
        b.set_defaults(func=cmd_bench)
    return p


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 PID` makes a running command print every thread's Python stack to stderr
    and go on: how to see where a long run is, or where a stuck one waits (POSIX only)."""
    import faulthandler
    import signal

    if not hasattr(signal, "SIGUSR1"):
        return
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, OSError, ValueError):  # stderr is no file (main() called in-process)
        pass


def main(argv: list[str] | None = None) -> int:
    from robotworld.data.format import DatasetError
    from sims.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    _stacks_on_sigusr1()
    if argv[:2] == ["eval", "world-model"]:  # `robotworld eval world-model ...`
        argv = ["eval-world-model"] + argv[2:]
    ros_args: list[str] = []
    if "--ros-args" in argv:  # ROS remapping and parameters pass through to rclpy untouched
        k = argv.index("--ros-args")
        argv, ros_args = argv[:k], argv[k + 1:]
    args = build_parser().parse_args(argv)
    args.ros_args = ros_args
    try:
        return args.func(args)
    except (ConfigError, configs.ConfigFileError, ValueError, DatasetError) as e:  # CheckpointError is a ValueError
        print(f"robotworld {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a full disk or a path that went away mid-run: what was written is whole or absent
        where = f" '{e.filename}'" if e.filename else ""
        print(f"robotworld {args.command}: error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
