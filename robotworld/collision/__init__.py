"""Collision checking of arm poses: exact (MuJoCo) and learned (torch).

``robotworld.collision.exact.ExactChecker`` is the ground truth; the learned
``robotworld.collision.learned.CollisionPredictor`` answers the same question for thousands of
queries in one torch call, trained by ``robotworld train collision``.
"""
