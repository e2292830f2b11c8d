"""The ROS 2 bridge: robotworld's policies in front of a ROS 2 arm (``robotworld bridge``).

``core`` (ROS-free: message dicts and numpy in, checked joint trajectories out), ``simarm``
(robotworld's MuJoCo arm as a driver and perception module would publish it), ``node`` (the
rclpy transport, from the optional ``ros2`` extra) and ``record`` (MCAP). ``import robotworld``
never imports rclpy.
"""
