"""robotworld: robot-manipulation imagination and planning.

``import robotworld`` needs no ROS, no Ray and no GPU; those are imported lazily where used.
"""

__version__ = "0.1.0"
