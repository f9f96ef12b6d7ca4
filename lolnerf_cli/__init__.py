"""lolnerf: learn a 3D generative model of an object class from single-view photos (LOLNeRF)."""

import os

__version__ = "0.1.0"

# OpenMP threads that busy-wait slow everything down many times over when another process shares the
# CPU (measured 13x for inversion on a loaded 2-core machine); a user can still override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
