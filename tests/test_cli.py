"""Every entry point with a tiny budget, as a user runs it."""

import json
import subprocess
import sys

import pytest

from robotworld.stats import wilson_interval


def run(*args):
    return subprocess.run([sys.executable, "-m", "robotworld.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_demo_runs_vla_against_vla_imagine_with_the_expert(tmp_path):
    out = run("demo", "--episodes", "1", "--seed", "3", "--out", str(tmp_path), "--device", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [(r["policy"], r["task"]) for r in res["runs"]] == [
        (p, "pick_place_clutter") for p in ("expert", "vla", "vla+imagine")]
    assert res["paired"]["seeds"] == 1
    assert len(list(tmp_path.glob("*.mp4"))) == 3
    bad = run("demo", "--episodes", "0", "--out", str(tmp_path))
    assert bad.returncode == 2 and "episodes = 0" in bad.stderr


def test_eval_json_has_the_documented_keys(tmp_path):
    out = run("eval", "--policy", "expert", "--task", "reach", "--episodes", "3", "--seed", "5",
              "--video", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    for key in ("task", "policy", "sim", "episodes", "success_rate", "success_ci95",
                "collision_rate", "mean_episode_steps"):
        assert key in res
    assert res["episodes"] == 3 and res["success_rate"] == 1.0
    assert res["success_ci95"][0] < 1.0 <= res["success_ci95"][1]
    # the summary fields are the per-episode counts averaged, each in its own key
    per = res["per_episode"]
    assert res["link_contacts_per_episode"] == sum(r["link_contact_steps"] for r in per) / 3
    assert res["collisions_per_episode"] == sum(r["collision_steps"] for r in per) / 3
    assert res["policy_stats"] == {}
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp*"))


def test_eval_counts_grasps():
    """The expert lifts by grasping: every episode holds the object for some steps, and the
    text table shows the grasp rate beside the collision rate."""
    out = run("eval", "--policy", "expert", "--task", "lift", "--episodes", "2", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["grasp_rate"] == 1.0 and res["success_rate"] == 1.0
    assert all(0 < r["grasp_steps"] < r["steps"] for r in res["per_episode"])
    text = run("eval", "--policy", "zero", "--task", "lift", "--episodes", "1")
    assert text.returncode == 0 and "grasped" in text.stdout, text.stderr


def test_eval_pybullet_zero_policy():
    out = run("eval", "--policy", "zero", "--task", "push", "--episodes", "2", "--sim", "pybullet",
              "--set", "episode_length=10", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["success_rate"] == 0.0 and res["mean_episode_steps"] == 10


@pytest.mark.parametrize("args,msg", [
    (("eval", "--task", "stack"), "unknown task 'stack'"),
    (("eval", "--task", "lift", "--policy", "oracle"), "unknown policy 'oracle'"),
    (("eval", "--task", "lift", "--set", "episode_lenght=5"), "unknown config field"),
    (("eval", "--task", "lift", "--episodes", "0"), "episodes = 0"),
    (("eval", "--config", "/nonexistent.yaml"), "does not exist"),
])
def test_bad_input_gets_one_clear_message(args, msg):
    out = run(*args)
    assert out.returncode == 2
    assert msg in out.stderr and "Traceback" not in out.stderr


def test_eval_reads_yaml_config(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("task: lift\npolicy: zero\nepisodes: 2\nenv:\n  episode_length: 7\n")
    out = run("eval", "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["task"] == "lift" and res["mean_episode_steps"] == 7
    assert res["per_episode"] == [{"seed": k, "success": False, "steps": 7, "collision_steps": 0, "grasp_steps": 0,
                                   "link_contact_steps": 0}
                                  for k in (0, 1)]
    assert res["grasp_rate"] == 0.0


def test_bench_env_json():
    out = run("bench", "env", "--task", "lift", "--steps", "200", "--render-steps", "20", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["batched_form"] in ("ProcessVectorEnv", "ThreadedVectorEnv")
    for key in ("env_steps_per_s", "batched_env_steps_per_s", "process_vector_env_steps_per_s",
                "threaded_vector_env_steps_per_s", "raw_physics_steps_per_s",
                "wrapper_overhead", "rendered_env_steps_per_s"):
        assert res[key] > 0 or key == "wrapper_overhead"


def test_help_explains_every_flag():
    out = run("eval", "--help")
    assert out.returncode == 0 and "--episodes" in out.stdout and "seed + k" in out.stdout


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(95, 100)
    assert abs(lo - 0.8882) < 1e-3 and abs(hi - 0.9785) < 1e-3
    assert wilson_interval(0, 10)[0] == 0.0


@pytest.mark.parametrize("cmd", [[], ["eval"], ["eval", "world-model"], ["demo"], ["collect"], ["data", "info"],
                                 ["data", "verify"], ["data", "export"], ["train", "world-model"],
                                 ["bench", "env"], ["bench", "data"], ["bench", "imagine"], ["bench", "planner"],
                                 ["bench", "twin"]])
def test_every_help_renders(cmd, capsys):
    from robotworld.cli import main

    with pytest.raises(SystemExit) as done:
        main([*cmd, "--help"])
    assert done.value.code == 0
    assert "usage: robotworld" in capsys.readouterr().out
