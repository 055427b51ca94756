"""The threat model: the L-infinity and L2 balls every attack and method takes (project,
step, random start, size), and the bijectors that map an unbounded sample into each ball
(`tfb.Chain([Scale(eps), Tanh()])` for L-infinity, `RadialTanh` for L2). Imports
`adt_tf.core` only.

The names below are this package's API (`from adt_tf.threat import LinfBall`).
"""

from adt_tf.threat.balls import (
    EVERY_NORM,
    THREATS,
    Ball,
    L2Ball,
    LinfBall,
    as_threat,
    make_threat,
    require_norm,
)

__all__ = ["EVERY_NORM", "THREATS", "Ball", "L2Ball", "LinfBall", "as_threat", "make_threat",
           "require_norm"]
