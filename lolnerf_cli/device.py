"""Device and precision selection: CUDA, then MPS, then CPU; bf16 autocast where it is faster.

On a CPU, bf16 instructions (AVX512-BF16, AMX) do not make bf16 faster everywhere: on an AMD EPYC with
AVX512-BF16 a bf16 matmul runs ~2.9x fp32, on an Intel Xeon that reports AVX512-BF16 without AMX it ran
0.7-0.85x fp32. So `auto` measures: once per machine, a small MLP shaped like the `cpu` preset's micro-batch
is run forward and backward in both precisions, and bf16 is used only where it is clearly faster. The
answer is kept in ~/.cache/lolnerf/precision.json ($LOLNERF_CACHE_DIR overrides the folder), so every
later command on the machine makes the same choice (a run's numbers do not depend on a noisy timing)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from .errors import ParamError

BF16_MIN_SPEEDUP = 1.15     # bf16 autocast is chosen on a CPU only when it measures at least this much faster
_PROBE = (8192, 128, 3)     # rows, width, layers of the probe MLP (the `cpu` preset: 256 rays x 32 samples, 128 wide)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ParamError("device", f"unknown device '{name}'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", "CUDA was asked for but no CUDA GPU is available")
    return dev


def _threads_flush_denormals() -> None:
    """Start torch's OpenMP threads now, with flush-to-zero set, then clear it in this thread again.

    The flag is a thread's floating-point state; a thread copies it from the thread that starts it, and
    torch's OpenMP threads live as long as the process, so setting it later in the main thread reaches
    matmuls (MKL reads the caller's) but not the other threads' share of elementwise ops (ReLU backward):
    measured, a trained field's step then took 205 ms instead of 148. So the helper threads flush for good,
    which only ever affects numbers below 1.2e-38 in their share of torch's elementwise ops, and the main
    thread flushes inside `denormals_flushed` only. Where the threads were started before lolnerf was
    imported, only the block's effect remains."""
    torch.set_flush_denormal(True)
    torch.ones(32768 * 2 * max(1, torch.get_num_threads())).add_(1.0)   # one chunk per thread: all start
    torch.set_flush_denormal(False)


_threads_flush_denormals()
_flush_depth = 0


@contextlib.contextmanager
def denormals_flushed():
    """Inside the block, denormal floats (below 1.2e-38) flush to zero in every CPU thread that torch uses,
    as TensorFlow and XLA (the paper's JAX) do by default. A trained field's backward pass is full of them
    (the transmittance behind an opaque surface, saturated sigmoids, the Adam moments of dead units), and
    x86 CPUs compute on denormals many times slower: a 12,391-step `cpu` model's fp32 training step took
    280-325 ms with them and 147-149 ms without (an untrained model: the same either way). Values that
    small add nothing to a render or a gradient step. The setting is the thread's floating-point state, so
    it is switched off again after the block: Python's own floats, MediaPipe and others need IEEE
    subnormals. Blocks nest."""
    global _flush_depth
    if _flush_depth == 0:
        torch.set_flush_denormal(True)
    _flush_depth += 1
    try:
        yield
    finally:
        _flush_depth -= 1
        if _flush_depth == 0:
            torch.set_flush_denormal(False)


@functools.lru_cache(maxsize=None)
def _cpu_info() -> tuple[str, frozenset[str]]:
    """This CPU's model name and flags (empty where /proc/cpuinfo cannot be read); read once."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor(), frozenset()
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "model name" and not name:
            name = val.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(val.split())
    return name or platform.processor(), flags


def cpu_has_bf16_instructions() -> bool:
    """True where this CPU has native bf16 matmul instructions (AMX or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_info()[1])


def measure_bf16_speedup(reps: int = 5) -> float:
    """fp32 time / bf16-autocast time of one forward + backward pass of the probe MLP on this CPU (median of
    `reps` interleaved pairs, after a warm-up); above 1 means bf16 is faster."""
    rows, width, layers = _PROBE
    gen = torch.Generator().manual_seed(0)
    ws = [(torch.randn(width, width, generator=gen) / width ** 0.5).requires_grad_() for _ in range(layers)]
    x = torch.randn(rows, width, generator=gen)

    def once(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = x
            for w in ws:
                h = torch.relu(h @ w)
        h.float().square().mean().backward()
        return time.perf_counter() - t0

    for bf16 in (False, True, False, True):
        once(bf16)
    pairs = [(once(False), once(True)) for _ in range(reps)]
    return statistics.median(f for f, _ in pairs) / statistics.median(b for _, b in pairs)


def precision_cache_path() -> Path:
    base = os.environ.get("LOLNERF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lolnerf")
    return Path(base) / "precision.json"


def _machine_key() -> str:
    name, flags = _cpu_info()
    native = ",".join(sorted({"amx_bf16", "avx512_bf16", "avx512_fp16"} & flags))
    return f"{name} | {native} | torch {torch.__version__} | {torch.get_num_threads()} threads"


@functools.lru_cache(maxsize=None)
def cpu_bf16_choice() -> dict:
    """{"bf16": bool, "speedup": float | None, "source": "flags" | "cache" | "measured"}: whether `auto`
    uses bf16 on this CPU, and why. Measured once per machine (CPU, torch version, thread count) and
    kept in precision_cache_path(); an unreadable cache is measured again and rewritten."""
    if not cpu_has_bf16_instructions():
        return {"bf16": False, "speedup": None, "source": "flags"}
    key, path = _machine_key(), precision_cache_path()
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}

    def choice(speedup: float, source: str) -> dict:
        return {"bf16": speedup >= BF16_MIN_SPEEDUP, "speedup": speedup, "source": source}

    got = known.get(key)
    if isinstance(got, dict) and isinstance(got.get("speedup"), (int, float)):
        return choice(float(got["speedup"]), "cache")
    speedup = round(measure_bf16_speedup(), 3)
    out = choice(speedup, "measured")
    known[key] = {"speedup": speedup, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        from .formats import write_json
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, known)
    except OSError:
        pass                    # a read-only home: measured again next time, nothing else changes
    print(f"lolnerf: bf16 measured {speedup:.2f}x as fast as fp32 on this CPU, so 'auto' precision is "
          f"{'bf16' if out['bf16'] else 'fp32'} here (kept in {path}; --precision overrides)", file=sys.stderr)
    return out


def cpu_has_fast_bf16() -> bool:
    """True where bf16 autocast is clearly faster than fp32 on this CPU (see cpu_bf16_choice)."""
    return cpu_bf16_choice()["bf16"]


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "bf16", "fp32"):
        raise ParamError("precision", f"unknown precision '{precision}'; choose auto, bf16 or fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """Context manager: bf16 autocast for matmuls, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
