"""The fused causal-attention kernel that run_with_cache uses on CPU, against the PyTorch ops.

The kernel computes scores, pattern and z in one pass over the causal triangle; these tests pin
it to the unfused path (`_native.disabled()`) on raw tensors, on whole models, with padding, and
with hooks that edit what the kernel already computed.
"""

from __future__ import annotations

import ctypes
import math
import platform
import shutil
from pathlib import Path

import pytest
import torch

from alignlab.model import HookPoint, _native, native_status
from alignlab.model.transformer import _masked_scores

from conftest import FORWARD_ULPS, TINY_CFGS, assert_close_rel, make_model, max_abs_diff, random_tokens

NATIVE = native_status().startswith("on")
needs_native = pytest.mark.skipif(not NATIVE, reason=f"fused attention kernel: {native_status()}")


def test_kernel_builds_where_it_should() -> None:
    """On x86-64 with AVX2 and a C++ compiler (CI's machine) the kernel must be in use: a build
    error would otherwise only show up as a slower benchmark."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the kernel is x86-64 only")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("no AVX2")
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler")
    assert native_status().startswith("on"), native_status()


def _reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = q.shape[2]
    mask = None
    if keep is not None:
        mask = torch.ones(p, p, dtype=torch.bool).tril()[None, None] & keep[:, None, None, :]
        mask = mask | torch.eye(p, dtype=torch.bool)[None, None]
    scores = _masked_scores(q, k, mask)
    pattern = scores.softmax(-1)
    return scores, pattern, (pattern @ v).transpose(1, 2)


@needs_native
@pytest.mark.parametrize(
    ("b", "h", "p", "dh"),
    [(2, 2, 1, 8), (3, 2, 13, 8), (2, 4, 32, 12), (4, 8, 64, 16), (2, 4, 40, 20), (2, 2, 33, 64)],
)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_pytorch_ops(b: int, h: int, p: int, dh: int, padded: bool, threads: int) -> None:
    gen = torch.Generator().manual_seed(b * 1000 + p * 10 + dh)
    q, k, v = (torch.randn(b, h, p, dh, generator=gen) * 2 for _ in range(3))
    keep = None
    if padded:
        keep = torch.ones(b, p, dtype=torch.bool)
        keep[0, : p // 3] = False  # left padding
        keep[-1, p - p // 4 :] = False  # right padding
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        scores, pattern, z = _native.causal_attention(q, k, v, keep, 1.0 / math.sqrt(dh))
    finally:
        torch.set_num_threads(old)
    ref_scores, ref_pattern, ref_z = _reference(q, k, v, keep)
    assert torch.equal(scores.isneginf(), ref_scores.isneginf())  # same keys masked
    assert torch.equal(pattern == 0, ref_pattern == 0)  # exactly 0 where masked
    finite = ref_scores.isfinite()
    _assert_kernel_rounding(q, k, v, (scores, pattern, z), (ref_scores, ref_pattern, ref_z), finite)
    # The kernel's sum of p exps and its division, then this sum of p probabilities: <= (p + 1) eps.
    assert_close_rel(pattern.sum(-1), torch.ones(b, h, p), ulps=p + 1, what="pattern row sums")


def _assert_kernel_rounding(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    got: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ref: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    finite: torch.Tensor | None = None,
) -> None:
    """The kernel's scores, pattern and z within first-order rounding bounds of the PyTorch ops'.

    Both sides sum the same terms in their own orders, and a reordered sum of n terms is off by
    at most (n - 1) eps/2 of the sum of their magnitudes on each side. Scores: d_head products,
    scale q·k in absolute values. Pattern: each probability is off by its exp (1 ulp, SLEEF on
    both sides), the p-term sum of exps and the division, so <= (p + 2) eps relative, scale 1.
    z = pattern @ v: those pattern errors plus a p-term sum, scale max |v|: <= (2p + 1) eps.
    """
    p, dh = q.shape[2], q.shape[3]
    magnitude = (q.abs() @ k.abs().transpose(-1, -2)) / math.sqrt(dh)
    scores, pattern, z = got
    ref_scores, ref_pattern, ref_z = ref
    if finite is not None:
        scores, ref_scores, magnitude = scores[finite], ref_scores[finite], magnitude[finite]
    assert_close_rel(scores, ref_scores, ulps=dh, what="scores", scale=float(magnitude.max()))
    assert_close_rel(pattern, ref_pattern, ulps=p + 2, what="pattern", scale=1.0)
    assert_close_rel(z, ref_z, ulps=2 * p + 1, what="z", scale=float(v.abs().max()))


@needs_native
@pytest.mark.parametrize("name", list(TINY_CFGS))
def test_run_with_cache_matches_unfused_path(name: str) -> None:
    model = make_model(TINY_CFGS[name])
    tokens = random_tokens(3, 17, seed=3)
    mask = torch.ones(3, 17, dtype=torch.long)
    mask[0, :5] = 0
    for kwargs in ({}, {"attention_mask": mask}):
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, **kwargs)
            with _native.disabled():
                ref_logits, ref_cache = model.run_with_cache(tokens, **kwargs)
        assert set(cache) == set(ref_cache)
        _assert_rounding_only(logits, ref_logits, "logits")
        for key in cache:
            a, r = cache[key], ref_cache[key]
            if key.endswith("hook_attn_scores"):
                assert torch.equal(a.isneginf(), r.isneginf()), key
                a, r = a[r.isfinite()], r[r.isfinite()]
            _assert_rounding_only(a, r, key)


def _assert_rounding_only(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """The pattern's few-ulp rounding difference, carried and amplified through the (deliberately
    perturbed) layers after it: a forward's rounding budget (conftest.FORWARD_ULPS) of the
    tensor's largest value. A wrong mask or a stale value would be off by O(1)."""
    assert_close_rel(got, ref, ulps=FORWARD_ULPS, what=what)


def _uniform_pattern(pattern: torch.Tensor, hook: HookPoint) -> torch.Tensor:
    allowed = (pattern > 0).float()
    return allowed / allowed.sum(-1, keepdim=True)


def _halve_scores_in_place(scores: torch.Tensor, hook: HookPoint) -> None:
    scores.mul_(0.5)


def _sharpen_scores(scores: torch.Tensor, hook: HookPoint) -> torch.Tensor:
    return scores * 3.0


@needs_native
@pytest.mark.parametrize("edit", [_halve_scores_in_place, _sharpen_scores, _uniform_pattern])
def test_hook_edits_after_the_kernel_take_effect(edit: object) -> None:
    """Hooks see the scores and pattern only after the kernel computed z from them: an edit,
    returned or in place, must still change everything downstream, as on the unfused path."""
    model = make_model(TINY_CFGS["neox-sequential"])
    tokens = random_tokens(2, 12, seed=4)
    name = "pattern" if edit is _uniform_pattern else "attn_scores"
    hooks = [(f"blocks.0.attn.hook_{name}", edit)]
    with torch.no_grad():
        clean = model(tokens)
        edited = model.run_with_hooks(tokens, fwd_hooks=hooks)
        with _native.disabled():
            expected = model.run_with_hooks(tokens, fwd_hooks=hooks)
    assert max_abs_diff(edited, clean) > 1e-3
    _assert_rounding_only(edited, expected, "logits")


def test_falls_back_where_the_kernel_does_not_apply() -> None:
    q = torch.randn(1, 2, 5, 8)
    with torch.no_grad(), _native.disabled():
        assert not _native.supports(q, q, q)
    assert not _native.supports(q.double(), q.double(), q.double())
    wide = torch.randn(1, 1, 4, _native._MAX_D_HEAD + 8)
    assert not _native.supports(wide, wide, wide)
    with torch.inference_mode():
        assert not _native.supports(q, q, q)
    grad_q = q.clone().requires_grad_()
    assert not _native.supports(grad_q, q, q)  # no backward: training keeps the PyTorch ops


def test_env_var_turns_the_kernel_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_native.ENV_VAR, "0")
    _native._load.cache_clear()
    try:
        assert native_status() == f"off ({_native.ENV_VAR}=0)"
        assert not _native.supports(*(torch.randn(1, 1, 3, 8),) * 3)
    finally:
        monkeypatch.undo()
        _native._load.cache_clear()


def test_builds_into_an_empty_cache_and_rebuilds_a_damaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not NATIVE:
        pytest.skip(f"fused attention kernel: {native_status()}")
    name = Path(native_status()[len("on (") : -1]).name
    # Two fresh folders: glibc would hand back an already loaded library for a path it has seen.
    for folder, damaged in ((tmp_path / "empty", False), (tmp_path / "damaged", True)):
        if damaged:
            (folder / "native").mkdir(parents=True)
            (folder / "native" / name).write_bytes(b"not a library")
        monkeypatch.setenv(_native.CACHE_ENV_VAR, str(folder))
        _native._load.cache_clear()
        try:
            assert native_status() == f"on ({folder / 'native' / name})"
            assert [p.name for p in (folder / "native").iterdir()] == [name]  # no temp files left
            q = torch.randn(1, 2, 9, 8)
            got = _native.causal_attention(q, q, q, None, 1 / math.sqrt(8))
            _assert_kernel_rounding(q, q, q, got, _reference(q, q, q, None), got[0].isfinite())
        finally:
            monkeypatch.undo()
            _native._load.cache_clear()


def test_single_threaded_build_without_openmp(tmp_path: Path) -> None:
    """The fallback build for compilers without OpenMP: same results, at any thread count."""
    if not NATIVE:
        pytest.skip(f"fused attention kernel: {native_status()}")
    cxx = shutil.which("c++") or shutil.which("g++")
    assert cxx is not None
    out = tmp_path / "serial.so"
    _native._compile(cxx, out, flag_sets=((),))
    fn = _native._bind(ctypes.CDLL(str(out)))
    b, h, p, dh = 2, 3, 21, 12
    q, k, v = (torch.randn(b, h, p, dh, generator=torch.Generator().manual_seed(s)) for s in range(3))
    scores, pattern, z = torch.empty(b, h, p, p), torch.empty(b, h, p, p), torch.empty(b, p, h, dh)
    ins, outs = (q, k, v), (scores, pattern, z)
    rc = fn(
        *(t.data_ptr() for t in ins), None, *(t.data_ptr() for t in outs), b, h, p, dh, 1 / math.sqrt(dh), 2
    )
    assert rc == 0
    _assert_kernel_rounding(q, k, v, (scores, pattern, z), _reference(q, k, v, None), scores.isfinite())


def test_mismatched_shapes_are_errors_not_out_of_bounds_reads() -> None:
    model = make_model(TINY_CFGS["neox-parallel"])
    tokens = random_tokens(3, 9)
    with torch.no_grad(), pytest.raises(ValueError, match="attention_mask has shape"):
        model.run_with_cache(tokens, attention_mask=torch.ones(2, 9, dtype=torch.long))
    with torch.no_grad():  # one unbatched sequence with its unbatched mask still works
        logits, _ = model.run_with_cache(tokens[0], attention_mask=torch.ones(9, dtype=torch.long))
    assert logits.shape[:2] == (1, 9)
    if NATIVE:
        q = torch.randn(2, 2, 5, 8)
        with pytest.raises(ValueError, match="keep"):
            _native.causal_attention(q, q, q, torch.ones(1, 5, dtype=torch.bool), 0.5)
        with pytest.raises(ValueError, match="keep"):
            _native.causal_attention(q, q[:1], q, None, 0.5)
