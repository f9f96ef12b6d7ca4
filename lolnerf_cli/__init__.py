"""lolnerf: learn a 3D generative model of an object class from single-view photos (LOLNeRF)."""

import os

__version__ = "0.1.0"


def _busy_cores(window_s: float = 0.1) -> float | None:
    """How many cores other processes keep busy right now: /proc/stat sampled `window_s` apart (this process
    sleeps meanwhile; time stolen by the hypervisor counts as busy). None where /proc/stat cannot be read."""
    import time

    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)       # idle + iowait
        return sum(vals[:8]) - idle, sum(vals[:8])
    try:
        b0, t0 = sample()
        time.sleep(window_s)
        b1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if t1 <= t0:
        return None
    return (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1)


def _omp_wait_policy() -> str:
    """OpenMP's wait policy for this process, chosen before torch loads (a user's setting always wins).

    Threads that spin between parallel regions are much faster when lolnerf has the cores to itself
    (measured 1.8x for a `cpu` preset training step on an idle 2-core machine) and many times slower when
    another busy process shares them (4-8x measured; 13x for inversion). So: spin only when the other
    processes keep less than half a core busy right now (measured over 0.1 s; where that cannot be read,
    the 1-minute load average below half the usable cores) and this is not one of several local ranks of a
    distributed run; otherwise sleep (PASSIVE). The load average was the only test before 2026-12-07; it
    remembers the last minute, so a command started right after another (`lolnerf demo`'s training after
    fit-cameras, every step of a script) slept its threads on an idle machine."""
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"]
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    several_ranks = os.environ.get("LOCAL_WORLD_SIZE", "1") not in ("", "1")
    busy = None if several_ranks else _busy_cores()
    if busy is not None:
        idle = busy < 0.5
    else:
        try:
            idle = os.getloadavg()[0] < 0.5 * cores
        except (AttributeError, OSError):
            idle = False
    policy = "ACTIVE" if idle and not several_ranks else "PASSIVE"
    os.environ["OMP_WAIT_POLICY"] = policy
    return policy


_omp_wait_policy()
