"""lolnerf: learn a 3D generative model of an object class from single-view photos (LOLNeRF)."""

import os

__version__ = "0.1.0"


def _omp_wait_policy() -> str:
    """OpenMP's wait policy for this process, chosen before torch loads (a user's setting always wins).

    Threads that spin between parallel regions are much faster when lolnerf has the cores to itself
    (measured 1.8x for a `cpu` preset training step on an idle 2-core machine) and many times slower when
    another busy process shares them (4-8x measured; 13x for inversion). So: spin only when the machine
    looks idle at start (1-minute load average below half the usable cores) and this is not one of
    several local ranks of a distributed run; otherwise sleep (PASSIVE)."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"]
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = float(cores)
    several_ranks = os.environ.get("LOCAL_WORLD_SIZE", "1") not in ("", "1")
    policy = "ACTIVE" if load < 0.5 * cores and not several_ranks else "PASSIVE"
    os.environ["OMP_WAIT_POLICY"] = policy
    return policy


_omp_wait_policy()
