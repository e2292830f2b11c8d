"""``robotworld bench NAME``: one module per benchmark, each a typed config and one function
returning a dict of figures (printed as a table, or JSON with --json).

    robotworld bench env --task pick_place --json        # robotworld.bench.env
    robotworld bench data --json                         # robotworld.bench.data
    robotworld bench imagine --json                      # robotworld.bench.imagine
    robotworld bench planner --settings 1024x16x6,128x8x3 --vs pytorch_mppi --json
    robotworld bench twin --task pick_place --episodes 20 --json
    robotworld bench collision --json
    robotworld bench policy --json                       # robotworld.bench.policy: vla, vla+imagine
    robotworld bench bridge --policy mpc-fast --seconds 600 --json   # robotworld.bench.bridge (ROS 2)
"""

from robotworld.bench.bridge import BridgeBenchConfig, bench_bridge
from robotworld.bench.collision import CollisionBenchConfig, bench_collision
from robotworld.bench.data import DataBenchConfig, bench_data
from robotworld.bench.env import EnvBenchConfig, bench_env
from robotworld.bench.imagine import ImagineBenchConfig, bench_imagine
from robotworld.bench.planner import PlannerBenchConfig, bench_planner, parse_settings
from robotworld.bench.policy import PolicyBenchConfig, bench_policy
from robotworld.bench.twin import TwinBenchConfig, bench_twin

__all__ = ["BridgeBenchConfig", "CollisionBenchConfig", "DataBenchConfig", "EnvBenchConfig", "ImagineBenchConfig",
           "PlannerBenchConfig", "PolicyBenchConfig", "TwinBenchConfig", "bench_bridge", "bench_collision", "bench_data",
           "bench_env", "bench_imagine", "bench_planner", "bench_policy", "bench_twin", "parse_settings"]
