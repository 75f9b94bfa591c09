"""The fused causal-attention kernel behind ``run_with_cache``: compiled on first use, optional.

Caching the attention pattern rules out PyTorch's fused SDPA, and the unfused path spends most of
a cached forward in three passes over ``[b, h, p, p]`` (see ``_causal_attention.cpp``). The kernel
is a C++ file shipped in the package, compiled here with the system C++ compiler against torch's
own SLEEF (so exp matches ATen's) and cached; nothing is downloaded. Everything falls back to the
PyTorch ops, silently and with the same results to float32 rounding, when the kernel cannot be used:
not x86-64 with AVX2, no compiler, a compile error, or ``ALIGNLAB_NATIVE=0``. `native_status` says
which.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

ENV_VAR = "ALIGNLAB_NATIVE"  # "0" turns the kernel off
CACHE_ENV_VAR = "ALIGNLAB_CACHE_DIR"  # where compiled kernels go (default ~/.cache/alignlab)
_SOURCE = Path(__file__).with_name("_causal_attention.cpp")
_MAX_D_HEAD = 64  # the kernel keeps a row of v in at most 8 AVX registers
_enabled = True  # flipped by `disabled`


def _cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV_VAR)
    return Path(root) if root else Path.home() / ".cache" / "alignlab"


_FLAG_SETS = (("-fopenmp",), ())


def _compile(cxx: str, out: Path, flag_sets: tuple[tuple[str, ...], ...] = _FLAG_SETS) -> None:
    """Compile with OpenMP (threads from torch's own pool), else without (one thread)."""
    torch_dir = Path(torch.__file__).parent
    lib = torch_dir / "lib"
    base = [
        cxx, "-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC",
        f"-I{torch_dir / 'include'}", str(_SOURCE), "-o", str(out),
        f"-L{lib}", "-ltorch_cpu", f"-Wl,-rpath,{lib}",
    ]  # fmt: skip
    errors = []
    for extra in flag_sets:
        proc = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode == 0:
            try:
                ctypes.CDLL(str(out))  # e.g. an OpenMP runtime older than the compiler's
                return
            except OSError as e:
                errors.append(str(e))
        else:
            errors.append(proc.stderr.strip()[-300:])
    raise RuntimeError(f"{cxx} failed: {' | '.join(errors)}")


def _build(cxx: str, target: Path) -> Path:
    """Compile to ``target``, or into a private temp folder if its folder is not writable."""
    for attempt in range(2):
        try:
            # Never a shared, predictable temp path: another user could put a library there.
            folder = target.parent if attempt == 0 else Path(tempfile.mkdtemp(prefix="alignlab-"))
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        except OSError:
            continue
        os.close(fd)
        # Compiled under a private name and renamed into place, so concurrent workers never load a
        # half-written library.
        try:
            _compile(cxx, Path(tmp))
            os.replace(tmp, folder / target.name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return folder / target.name
    raise OSError(f"no writable folder for the compiled kernel ({target.parent}); set {CACHE_ENV_VAR}")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(ENV_VAR, "1").lower() in ("0", "false", "off", "no"):
        return None, f"off ({ENV_VAR}={os.environ[ENV_VAR]})"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"unavailable (needs x86-64, this is {platform.machine()})"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return None, f"unavailable (needs AVX2; torch reports CPU capability {capability})"
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        return None, "unavailable (no C++ compiler found; set CXX)"
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(
            b"\0".join(
                s.encode()
                for s in (_SOURCE.read_text(), Path(__file__).read_text(), torch.__version__, cxx, version)
            )
        ).hexdigest()[:16]
        target = _cache_dir() / "native" / f"causal_attention-{key}.so"
        if not target.exists():
            target = _build(cxx, target)
        try:
            lib = ctypes.CDLL(str(target))
        except OSError:  # a damaged cached file: build it again, once
            target = _build(cxx, target)
            lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, f"unavailable ({e})"
    _bind(lib)
    return lib, f"on ({target})"


def _bind(lib: ctypes.CDLL) -> Any:
    """The kernel's entry point with its C signature declared."""
    fn = lib.alignlab_causal_attention
    fn.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int64] * 4 + [ctypes.c_float, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


def native_status() -> str:
    """Whether the fused attention kernel is in use, and where it is or why it is not.

    Example:
        >>> from alignlab.model import native_status
        >>> native_status()  # doctest: +SKIP
        'on (/home/me/.cache/alignlab/native/causal_attention-3f2a....so)'
    """
    return _load()[1]


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Use the PyTorch ops inside this block (tests and benchmarks compare the two paths)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def supports(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether `causal_attention` can take these (head-major ``[b, h, p, dh]``) inputs.

    Not under ``torch.inference_mode``: its tensors have no version counter, which the hooks
    after the kernel need to see in-place edits.
    """
    return (
        _enabled
        and q.dtype == k.dtype == v.dtype == torch.float32
        and q.device.type == "cpu"
        and q.shape[-1] <= _MAX_D_HEAD
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
        and not torch.is_inference_mode_enabled()
        and _load()[0] is not None
    )


def causal_attention(
    q: Float[Tensor, "b h p dh"],
    k: Float[Tensor, "b h p dh"],
    v: Float[Tensor, "b h p dh"],
    keep: Bool[Tensor, "b p"] | None,
    scale: float,
) -> tuple[Float[Tensor, "b h p p"], Float[Tensor, "b h p p"], Float[Tensor, "b p h dh"]]:
    """Masked scores (-inf where not allowed), pattern and z, in one pass; no autograd.

    Query i attends to keys ``j <= i`` with ``keep[:, j]`` true, and always to itself. Call only
    where `supports` is true.
    """
    lib = _load()[0]
    assert lib is not None
    b, h, p, dh = q.shape
    # The kernel trusts these shapes; a mismatch must be an error here, not a read out of bounds.
    if k.shape != q.shape or v.shape != q.shape or (keep is not None and keep.shape != (b, p)):
        shapes = [tuple(t.shape) for t in (q, k, v)] + [None if keep is None else tuple(keep.shape)]
        raise ValueError(f"causal_attention: q, k, v must be [b, h, p, dh] and keep [b, p]; got {shapes}")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    scores = torch.empty(b, h, p, p)
    pattern = torch.empty(b, h, p, p)
    z = torch.empty(b, p, h, dh)
    keep_u8 = None if keep is None else keep.to(torch.uint8).contiguous()
    rc = lib.alignlab_causal_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(),
        None if keep_u8 is None else keep_u8.data_ptr(),
        scores.data_ptr(), pattern.data_ptr(), z.data_ptr(),
        b, h, p, dh, scale, torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"fused causal attention rejected d_head={dh} (code {rc})")
    return scores, pattern, z
