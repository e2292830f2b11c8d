#!/usr/bin/env bash
# Rounds of robotworld's speed figures beside the peers', one command at a time, so that each
# ratio is taken in one sitting (this machine's speed drifts from minute to minute):
#   robotworld bench env --task pick_place --json         (issue 2's figures)
#   ../shared/peers/fetch_steps.sh FetchPickAndPlace-v4 3000  (the Fetch peer, no rendering)
#   scripts/peer_fetch_rendered.sh 300                      (the Fetch peer, one 128x128 camera)
#   robotworld bench imagine --json                        (issue 4's imagine and training figures)
# then one line per round. Usage:
#   scripts/bench_vs_peers.sh [ROUNDS] [OUT_DIR]    (defaults: 3, runs/bench_vs_peers/<time>)
# Run it from the repository root after `make install`; nothing else should run meanwhile.
set -eu
rounds=${1:-3}
out=${2:-runs/bench_vs_peers/$(date +%Y%m%d-%H%M%S)}
case $rounds in ''|*[!0-9]*|0) echo "ROUNDS must be a positive whole number, got '$rounds'" >&2; exit 2;; esac
peers=${PEERS:-../shared/peers}
[ -x .venv/bin/robotworld ] || { echo "no .venv/bin/robotworld here: run 'make install' in the repository root first" >&2; exit 2; }
[ -f "$peers/fetch_steps.sh" ] || { echo "no $peers/fetch_steps.sh: set PEERS to the folder of the peer scripts" >&2; exit 2; }
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  date +%H:%M:%S > "$out/time_$r.txt"
  .venv/bin/robotworld bench env --task pick_place --json > "$out/env_$r.json" 2> "$out/env_$r.log"
  bash "$peers/fetch_steps.sh" FetchPickAndPlace-v4 3000 > "$out/fetch_$r.txt"
  bash scripts/peer_fetch_rendered.sh 300 > "$out/fetch_rendered_$r.txt"
  .venv/bin/robotworld bench imagine --json > "$out/imagine_$r.json" 2> "$out/imagine_$r.log"
done
.venv/bin/python - "$out" "$rounds" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print("round time      env/s   Fetch  ratio  overhead  batched (ceiling)  rendered  Fetch-r  ratio  imagine/s  train/s")
for r in range(1, rounds + 1):
    e = json.load(open(f"{out}/env_{r}.json"))
    i = json.load(open(f"{out}/imagine_{r}.json"))
    f = float(open(f"{out}/fetch_{r}.txt").read())
    fr = float(open(f"{out}/fetch_rendered_{r}.txt").read())
    t = open(f"{out}/time_{r}.txt").read().strip()
    print(f"{r:5d} {t}  {e['env_steps_per_s']:6.0f}  {f:6.0f}  {e['env_steps_per_s'] / f:4.1f}x  "
          f"{e['wrapper_overhead']:8.3f}  {e['batched_speedup']:7.3f} ({e['bare_physics_parallel_speedup']:.2f})  "
          f"{e['rendered_env_steps_per_s']:8.0f}  {fr:7.0f}  {e['rendered_env_steps_per_s'] / fr:4.1f}x  "
          f"{i['transitions_per_s']:9.0f}  {i['train_samples_per_s']:7.0f}")
PY
