"""Process-wide runtime settings that must be made before torch loads."""
from __future__ import annotations

import os


def prefer_sleeping_openmp_threads() -> None:
    """Make idle OpenMP threads sleep instead of spin, for verbs that render while other threads work.

    Spinning threads burn the cores the encoder, the web server or a second render thread need: on a busy
    2-core machine that made a clip ~10x slower, while sleeping waits cost almost nothing when the machine is
    idle. It only takes effect before torch (and its OpenMP runtime) loads; a user's own setting wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
