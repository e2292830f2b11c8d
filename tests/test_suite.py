"""robotworld eval into a folder: several policies, tasks and engines, paired comparisons,
resume after a kill. Real MuJoCo and PyBullet, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from robotworld.stats import paired_difference
from robotworld.suite import Suite, read_episodes, run_suite, split_policies


def _make(name):
    from policies import make_policy

    return make_policy(name)


def test_paired_difference_against_known_values():
    # 12 solved by A alone, 7 by B alone, 100 seeds: McNemar's exact p = 2 P(X <= 7 | 19, 1/2)
    d = paired_difference(12, 7, 100)
    assert d["diff"] == pytest.approx(0.05) and d["mcnemar_p"] == pytest.approx(0.3593, abs=1e-4)
    # Agresti-Min: ((12.5 - 7.5) / 102) -/+ 1.96 sqrt(20 - 25 / 102) / 102
    assert d["diff_ci95"] == pytest.approx([-0.0364, 0.1344], abs=1e-4)
    assert paired_difference(0, 0, 10)["mcnemar_p"] == 1.0
    assert paired_difference(10, 0, 10)["mcnemar_p"] == pytest.approx(2 / 1024, abs=1e-4)
    with pytest.raises(ValueError, match="paired counts"):
        paired_difference(6, 5, 10)


def test_policy_lists_keep_their_options_and_bad_names_are_refused_first(tmp_path):
    assert split_policies("expert,mpc-fast,collision=0,touch=false,vla") == [
        "expert", "mpc-fast,collision=0,touch=false", "vla"]
    for args, match in ((("nosuch", "reach", "mujoco"), "nosuch"), (("expert", "reach,flip", "mujoco"), "flip"),
                        (("expert", "reach", "gazebo"), "gazebo")):
        with pytest.raises(ValueError, match=match):
            Suite.parse(*args, episodes=2, seed=0, overrides={})
    assert Suite.parse("expert", "reach", "both", 1, 0, {}).sims == ["mujoco", "pybullet"]


def test_a_killed_suite_resumes_without_losing_or_repeating_an_episode(tmp_path):
    suite = Suite.parse("expert,zero", "reach", "mujoco", 3, 5, {})
    whole = run_suite(suite, str(tmp_path / "a"), _make, progress=False, argv=[])
    lines = (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 6
    # killed after two episodes, in the middle of writing the third line
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "suite.json").write_text((tmp_path / "a" / "suite.json").read_text())
    (tmp_path / "b" / "episodes.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:17])
    resumed = run_suite(suite, str(tmp_path / "b"), _make, progress=False, argv=[])
    rows = read_episodes(tmp_path / "b" / "episodes.jsonl")
    assert len(rows) == 6 and len({(r["policy"], r["seed"]) for r in rows}) == 6
    assert resumed["runs"] == whole["runs"] and resumed["paired"] == whole["paired"]
    expert, zero = whole["runs"]
    assert (expert["success_rate"], zero["success_rate"], expert["seeds"]) == (1.0, 0.0, [5, 7])
    assert whole["paired"][0]["a_only"] == 3 and whole["paired"][0]["b_only"] == 0
    # a folder holds one evaluation: another is refused before any episode
    with pytest.raises(ValueError, match="holds another evaluation"):
        run_suite(Suite.parse("expert", "lift", "mujoco", 3, 5, {}), str(tmp_path / "a"), _make, progress=False)


def test_cli_runs_both_engines_into_a_folder(tmp_path):
    out = tmp_path / "ev"
    r = subprocess.run([sys.executable, "-m", "robotworld.cli", "eval", "--policy", "expert,zero", "--task", "reach",
                        "--sim", "both", "--episodes", "1", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert {(x["sim"], x["policy"]) for x in res["runs"]} == {(s, p) for s in ("mujoco", "pybullet")
                                                                 for p in ("expert", "zero")}
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == res["runs"] and "robotworld eval" in saved["command"] and saved["torch"]
    assert "| pybullet | reach | `expert` |" in (out / "report.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "robotworld.cli", "eval", "--policy", "expert,nosuch", "--task",
                          "reach", "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "nosuch" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_one_and_two_workers_give_the_same_episodes(tmp_path):
    """Each episode runs on one torch thread from its own seed, in whichever process."""
    suite = Suite.parse("expert,mpc-fast", "lift", "mujoco", 3, 11, {})
    one = run_suite(suite, str(tmp_path / "one"), progress=False, argv=[], workers=1)
    two = run_suite(suite, str(tmp_path / "two"), progress=False, argv=[], workers=2)
    assert one["runs"] == two["runs"] and one["paired"] == two["paired"]

    def episodes(d):
        return sorted((tuple(sorted(r.items())) for r in read_episodes(tmp_path / d / "episodes.jsonl")))
    assert episodes("one") == episodes("two")
    with pytest.raises(ValueError, match="workers = 0"):
        run_suite(suite, str(tmp_path / "three"), progress=False, workers=0)


def test_report_merges_folders_and_compares_across_them(tmp_path):
    from robotworld.suite import merge

    run_suite(Suite.parse("expert", "reach", "mujoco", 2, 0, {}), str(tmp_path / "a"), _make, progress=False, argv=[])
    run_suite(Suite.parse("zero", "reach", "mujoco", 2, 0, {}), str(tmp_path / "b"), _make, progress=False, argv=[])
    m = merge([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a")], out=str(tmp_path / "m"), argv=[])
    assert [(r["policy"], r["episodes"]) for r in m["runs"]] == [("expert", 2), ("zero", 2)]
    assert (m["paired"][0]["a_only"], m["paired"][0]["b_only"]) == (2, 0)
    assert json.loads((tmp_path / "m" / "results.json").read_text())["paired"] == m["paired"]
    lines = (tmp_path / "b" / "episodes.jsonl").read_text().splitlines()
    flipped = [json.dumps({**json.loads(x), "policy": "expert"}) for x in lines]  # same episodes, other outcomes
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "episodes.jsonl").write_text("\n".join(flipped) + "\n")
    with pytest.raises(ValueError, match="disagree"):
        merge([str(tmp_path / "a"), str(tmp_path / "c")])
    with pytest.raises(ValueError, match="not an evaluation folder"):
        merge([str(tmp_path / "nothing")])


@pytest.mark.parametrize("sim", ["mujoco", "pybullet"])
def test_each_perturbation_changes_what_it_names(sim):
    import numpy as np

    import sims
    from robotworld import perturb
    from sims.physics import FLAT_TCP_POS
    from sims.wrappers import ActionLatency

    arms = {a.label: a for a in perturb.parse("size=1.3,distractors=2,obstacles=3,latency=2")}
    base = sims.make_config("pick_place")
    big = sims.make("pick_place", sim=sim, **arms["size=1.3"].overrides(base))
    big.reset(seed=3)
    lo, hi = base.object_half_size
    assert all(1.3 * lo - 1e-9 <= o.half <= 1.3 * hi + 1e-9 for o in big.unwrapped.episode.objects)
    assert max(o.half for o in big.unwrapped.episode.objects) > hi  # bigger than any the task draws
    crowded = sims.make("pick_place", sim=sim, **arms["distractors=2"].overrides(base),
                        **arms["obstacles=3"].overrides(base))
    crowded.reset(seed=3)
    assert len(crowded.unwrapped.episode.objects) == 3 and len(crowded.unwrapped.episode.obstacles) == 3
    late = ActionLatency(sims.make("reach", sim=sim), arms["latency=2"].latency)
    obs, _ = late.reset(seed=0)
    start = obs["proprio"][FLAT_TCP_POS].copy()
    move = np.array([1.0, 0, 0, 0, 1.0], np.float32)
    for _ in range(2):  # the first two steps apply the hold sent before the episode
        obs, *_ = late.step(move)
    assert np.linalg.norm(obs["proprio"][FLAT_TCP_POS] - start) < 0.005
    obs, *_ = late.step(move)
    assert obs["proprio"][FLAT_TCP_POS][0] - start[0] > 0.01
    for env in (big, crowded, late):
        env.close()


def test_perturbations_run_beside_the_nominal_arm_and_bad_ones_are_refused(tmp_path):
    res = run_suite(Suite.parse("expert", "lift", "mujoco", 2, 0, {}, perturb="size=0.8:1.2"), str(tmp_path / "p"),
                    _make, progress=False, argv=[])
    assert [r["perturbation"] for r in res["runs"]] == ["nominal", "size=0.8", "size=1.2"]
    assert {p["b"] for p in res["paired"]} == {"expert [nominal]"}
    with pytest.raises(ValueError, match="perturbation size=1.5 on lift"):  # objects wider than the gripper
        run_suite(Suite.parse("expert", "lift", "mujoco", 1, 0, {}, perturb="size=1.5"), str(tmp_path / "q"), _make)
    assert not (tmp_path / "q").exists()
    for text, match in (("mass=2", "not supported yet"), ("size=9", "expected a scale"), ("latency=x", "not a number"),
                        ("color=1", "expected KEY=VALUE")):
        with pytest.raises(ValueError, match=match):
            Suite.parse("expert", "lift", "mujoco", 2, 0, {}, perturb=text)
