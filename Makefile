# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: a CPU build first, so that no multi-GB CUDA build is pulled in on a CPU machine.
TORCH ?= torch==2.13.0

.PHONY: demo test lint install sysdeps rosnet clean bench world-model vla

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH) || $(BIN)/pip install -q "torch>=2.4"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: sysdeps $(VENV)/.installed

# Headless GL for camera rendering (EGL and the OSMesa fallback); skipped when present.
sysdeps:
	@if ! ldconfig -p | grep -q libEGL.so.1 || ! ldconfig -p | grep -q libOSMesa; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libosmesa6 >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq libegl1 libgl1 libosmesa6 >/dev/null; fi; fi
	@if ! command -v ip >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq iproute2 >/dev/null || (apt-get update -qq && \
	    apt-get install -y -qq iproute2 >/dev/null); \
	  else sudo apt-get install -y -qq iproute2 >/dev/null; fi; fi

demo: install
	$(BIN)/robotworld demo

# The ROS 2 tests run the bridge and a client in two processes on this host: DDS discovery on
# loopback needs multicast on lo (root, or sudo without a password; skipped with a note otherwise).
rosnet:
	@if ! ip link show lo 2>/dev/null | grep -q MULTICAST; then \
	  ip link set lo multicast on 2>/dev/null || sudo -n ip link set lo multicast on 2>/dev/null || \
	  echo "note: could not enable multicast on lo; the ROS 2 bridge tests need it"; fi

test: install rosnet
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check robotworld sims policies tests

bench: install
	$(BIN)/robotworld bench env --task pick_place

# Reproduces the shipped world model (robotworld/checkpoints/world_model.pt) in two rounds.
# Round 1, the base model: 800 noisy-expert episodes per task (seed 0); 400 random-action
# episodes on reach and lift (seed 100000), so that the model has seen the tool wander where a
# planner's samples take it; 800 lift and 400 pick_place episodes of the fumbling expert (seed
# 200000: its gripper closes in the air or arrives closed, and grasps nothing); 20,000 steps of
# the small preset (about 40 min on 2 cores). Round 2, the planner's own rollouts: 500 lift
# episodes of mpc-fast on the base model with its gripper rules off (seed 300000: the closes in
# the air and off centre the rules were written against, labelled by physics), then a 6,000-step
# fine-tune on all ten datasets with the planner's priors in the loss as at use and a grasp
# ensemble of five (about 15 min; docs/experiments.md, 2026-12-07, "r2a").
WM_TASKS := reach push lift pick_place pick_place_clutter
WM_DATA := $(foreach t,$(WM_TASKS),data/wm/$(t)) data/wm/reach_random data/wm/lift_random \
  data/wm/lift_fumble data/wm/pick_place_fumble
comma := ,
empty :=
space := $(empty) $(empty)
world-model: install
	for t in $(WM_TASKS); do $(BIN)/robotworld collect --task $$t --policy noisy-expert --episodes 800 \
	  --workers 2 --seed 0 --out data/wm/$$t; done
	for t in reach lift; do $(BIN)/robotworld collect --task $$t --policy random --episodes 400 \
	  --workers 2 --seed 100000 --out data/wm/$${t}_random; done
	$(BIN)/robotworld collect --task lift --policy fumbling-expert --episodes 800 --workers 2 --seed 200000 \
	  --out data/wm/lift_fumble
	$(BIN)/robotworld collect --task pick_place --policy fumbling-expert --episodes 400 --workers 2 \
	  --seed 200000 --out data/wm/pick_place_fumble
	$(BIN)/robotworld train world-model --data $(subst $(space),$(comma),$(strip $(WM_DATA))) \
	  --out runs/wm_default --steps 20000 --eval-every 2000 --threads 2 --seed 0 --resume
	$(BIN)/robotworld collect --task lift --episodes 500 --workers 2 --seed 300000 --out data/wm/lift_planner \
	  --policy "mpc:runs/wm_default/checkpoint.pt,preset=fast,empty_gripper=false,centring=false,lift=false"
	$(BIN)/robotworld train world-model --data $(subst $(space),$(comma),$(strip $(WM_DATA))),data/wm/lift_planner \
	  --init runs/wm_default/checkpoint.pt --priors=-touch --ensemble 5 --steps 6000 --lr 3e-4 \
	  --out runs/wm_default_r2 --threads 2 --seed 0 --resume
	$(BIN)/python -c "from robotworld.model.checkpoint import export_shipped; export_shipped('runs/wm_default_r2/checkpoint.pt')"

# Reproduces the shipped VLA (robotworld/checkpoints/vla.pt): noisy-expert demonstrations with both
# cameras at 64 x 64 and the expert's clean labels (DART), from seed 1,000,000 so that the
# evaluation seeds 0-99 stay unseen; then behaviour cloning in four stages (about 2 h on 2
# cores): 30,000 steps with 4-pixel random shifts, then two 10,000-step fine-tunes that sharpen
# the camera estimator (1-pixel shifts and its Huber loss; then no shift and its weight doubled),
# then 10,000 steps with half the instructions rephrased (docs/experiments.md, 2026-12-07). Killed, it resumes where it stopped: the collection skips
# the episodes on disk, each stage continues from its last checkpoint.
VLA_EPISODES := reach:400 push:800 lift:800 pick_place:1200 pick_place_clutter:1200
VLA_DATA := $(foreach s,$(VLA_EPISODES),data/vla/$(firstword $(subst :, ,$(s))))
VLA_TRAIN = $(BIN)/robotworld train policy --data $(subst $(space),$(comma),$(strip $(VLA_DATA))) --seed 0 --resume
vla: install
	for s in $(VLA_EPISODES); do t=$${s%%:*}; n=$${s##*:}; \
	  $(BIN)/robotworld collect --task $$t --policy noisy-expert --episodes $$n \
	  --workers 2 --seed 1000000 --cameras front,wrist --set image_size=64,64 --out data/vla/$$t || exit 1; done
	$(VLA_TRAIN) --out runs/vla_default --steps 30000 --lr 5e-4 --shift 4 --estimator-loss mse
	$(VLA_TRAIN) --out runs/vla_default_ft1 --init runs/vla_default/checkpoint.pt --steps 10000 --lr 3e-4 --shift 1
	$(VLA_TRAIN) --out runs/vla_default_ft2 --init runs/vla_default_ft1/checkpoint.pt --steps 10000 --lr 2e-4 \
	  --shift 0 --estimator-weight 2
	$(VLA_TRAIN) --out runs/vla_default_ft3 --init runs/vla_default_ft2/checkpoint.pt --steps 10000 --lr 2e-4 \
	  --shift 0 --estimator-weight 2 --paraphrase 0.5 --seed 1
	$(BIN)/python -c "from robotworld.vla.checkpoint import export_shipped; export_shipped('runs/vla_default_ft3/checkpoint.pt')"

clean:
	rm -rf $(VENV) runs build *.egg-info
