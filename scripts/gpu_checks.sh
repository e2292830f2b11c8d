#!/usr/bin/env bash
# Every CUDA path of robotworld once, and the GPU figures of BENCHMARKS.md, in one run.
#
#   scripts/gpu_checks.sh OUTDIR [quick]
#
# Needs a python (PY, default python3) that imports torch with CUDA and robotworld's
# dependencies. Writes OUTDIR/results.jsonl (one JSON object a step, with its name, exit
# status and seconds) and OUTDIR/log.txt (everything the steps printed), and prints a
# summary line a step. Each step has its own time limit; one that fails does not stop the rest.
# 'quick' runs only the checks that each path works (no closed-loop evaluation).
set -u
out=${1:?usage: scripts/gpu_checks.sh OUTDIR [quick]}
mode=${2:-full}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$out"
res="$out/results.jsonl" log="$out/log.txt"
: >"$res"
: >"$log"
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable}  # nothing here renders

step() {  # step NAME LIMIT_S ARGS...: robotworld ARGS, its JSON stdout kept
  local name=$1 limit=$2 t0 rc body dt
  shift 2
  t0=$(date +%s%N)
  echo "== $name: robotworld $*" >>"$log"
  body=$(timeout "$limit" "$PY" -m robotworld "$@" 2>>"$log")
  rc=$?
  dt=$(( ($(date +%s%N) - t0) / 1000000 ))
  "$PY" - "$name" "$rc" "$dt" "$body" >>"$res" <<'EOF'
import json, sys
name, rc, dt, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000, sys.argv[4]
try:
    value = json.loads(body)
except ValueError:
    value = body[-2000:]
print(json.dumps({"step": name, "rc": rc, "seconds": round(dt, 1), "result": value}))
EOF
  echo "$name rc=$rc $((dt / 1000))s"
  [ "$rc" -eq 0 ] || tail -n 4 "$log"
}

nvidia-smi -L
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

# the figures
step bench_imagine 120 bench imagine --device $DEVICE --json
step bench_planner 200 bench planner --device $DEVICE --vs pytorch_mppi --batch-envs 64 --task lift --json
step bench_planner_tf32 120 bench planner --device $DEVICE --tf32 true --settings 1024x16x6 --batch-envs 64 --task lift --json
step bench_collision 200 bench collision --device $DEVICE --speed-queries 4194304 --json
step bench_policy 200 bench policy --device $DEVICE --json


if [ "$mode" != quick ]; then
  # closed loop, 100 episodes a task, 50 planned in one batch a step on the GPU
  step eval_mpc_reach 150 eval --policy mpc --task reach --episodes 100 --seed 0 --batch 50 --json
  step eval_mpc_lift 300 eval --policy mpc --task lift --episodes 100 --seed 0 --batch 50 --json
fi

# the training paths on the GPU: a small dataset, a short run, then a resumed one
step collect 120 collect --task lift --policy noisy-expert --episodes 48 --workers 8 --out "$work/lift" --json
step train_world_model 150 train world-model --data "$work/lift" --out "$work/wm" --device $DEVICE --steps 300 \
  --eval-every 150 --json
step train_world_model_resume 120 train world-model --data "$work/lift" --out "$work/wm" --device $DEVICE --steps 400 \
  --eval-every 200 --resume true --json
step eval_world_model 120 eval world-model --checkpoint default --data "$work/lift" --device $DEVICE --out "$work/wmeval" --json
step collect_cameras 120 collect --task lift --policy noisy-expert --episodes 16 --workers 8 --cameras front,wrist \
  --set image_size=64,64 --out "$work/lift_cam" --json
step train_policy 150 train policy --data "$work/lift_cam" --out "$work/vla" --device $DEVICE --steps 300 --eval-every 150 --json
step train_policy_resume 120 train policy --data "$work/lift_cam" --out "$work/vla" --device $DEVICE --steps 400 \
  --eval-every 200 --resume --json
step eval_vla_imagine 200 eval --policy vla+imagine --task lift --episodes 5 --device $DEVICE --json
step train_collision 150 train collision --device $DEVICE --queries 65536 --val-queries 16384 --steps 300 \
  --out "$work/collision.pt" --json

# last: compilation takes a while before the first plan
step bench_planner_compile 240 bench planner --device $DEVICE --compile true --tf32 true --settings 1024x16x6 --batch-envs 64 \
  --task lift --plans 50 --json
rm -rf "$work"
