"""Top-k kernels (ops.topk, ops.topk_dot) against slow numpy references."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fuzzing import examples

from metarec_fast import _core, ops
from metarec_fast.ops.topk import _dot_scores, _topk_dot_simd

LEVELS = ["generic", "avx2", "avx512"]
_ORDER = {name: i for i, name in enumerate(LEVELS)}
SUPPORTED = [lv for lv in LEVELS if _ORDER[lv] <= _ORDER[_core.simd_detected()]]


# ---------------------------------------------------------------- references


def exclusion_sets(exclude, n_rows):
    """Per-row sets of excluded ids from a CSR matrix, an (indptr, indices) pair or None."""
    if exclude is None:
        return [set() for _ in range(n_rows)]
    if sp.issparse(exclude):
        exclude = (exclude.indptr, exclude.indices)
    indptr, indices = np.asarray(exclude[0]), np.asarray(exclude[1])
    return [set(indices[indptr[r] : indptr[r + 1]].tolist()) for r in range(n_rows)]


def ref_topk(scores, k, exclude=None):
    """Stable sort by (-score, id) over the non-excluded items, padded with (-1, -inf)."""
    scores = np.asarray(scores)
    n, m = scores.shape
    excl = exclusion_sets(exclude, n)
    ids = np.full((n, k), -1, dtype=np.int64)
    vals = np.full((n, k), -np.inf, dtype=np.float32)
    for r in range(n):
        cand = np.array([j for j in range(m) if j not in excl[r]], dtype=np.int64)
        if cand.size == 0:
            continue
        order = cand[np.lexsort((cand, -scores[r, cand]))][:k]
        ids[r, : order.size] = order
        vals[r, : order.size] = scores[r, order].astype(np.float32)
    return ids, vals


def check_near_topk(ids, vals, exact, k, exclude=None, rtol=1e-4):
    """Tolerance-aware check of a top-k against exact (float64) scores.

    Each row must hold distinct, non-excluded ids; their exact scores must
    match the returned ones; and nothing left out may beat the worst kept
    item by more than the rounding tolerance. Padding only when the row ran
    out of candidates.
    """
    n, m = exact.shape
    excl = exclusion_sets(exclude, n)
    tol = rtol * (1.0 + np.abs(exact).max()) if exact.size else 0.0
    for r in range(n):
        n_cand = m - len(excl[r])
        kept = ids[r][ids[r] >= 0]
        assert kept.size == min(k, n_cand), (r, kept.size)
        assert np.all(ids[r][kept.size :] == -1)
        assert np.all(np.isneginf(vals[r][kept.size :]))
        assert len(set(kept.tolist())) == kept.size
        assert not (set(kept.tolist()) & excl[r])
        # returned scores are float32 whatever the input precision
        np.testing.assert_allclose(vals[r][: kept.size], exact[r, kept], rtol=2e-7, atol=tol)
        assert np.all(np.diff(vals[r][: kept.size]) <= 0)
        if kept.size:
            others = np.ones(m, dtype=bool)
            others[kept] = False
            others[list(excl[r])] = False
            if others.any():
                assert exact[r, others].max() <= exact[r, kept].min() + tol


def random_exclusion(rng, n_rows, n_cols, per_row, unsorted=False, dups=False):
    rows = []
    for _ in range(n_rows):
        cnt = int(rng.integers(0, per_row + 1)) if n_cols else 0
        row = rng.integers(0, n_cols, cnt) if cnt else np.zeros(0, dtype=np.int64)
        if dups and row.size:
            row = np.concatenate([row, row[: max(1, row.size // 2)]])
        row = row if unsorted else np.sort(row)
        rows.append(row.astype(np.int64))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return indptr, indices.astype(np.int64)


# ---------------------------------------------------------------- ops.topk


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "shape,k",
    [((1, 1), 1), ((1, 7), 3), ((5, 40), 10), ((37, 300), 5), ((37, 300), 100), ((8, 50), 50),
     ((8, 50), 80), ((3, 2000), 200), ((64, 129), 1)],
)
def test_topk_matches_reference(shape, k, dtype, num_threads, seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(shape).astype(dtype)
    ids, vals = ops.topk(scores, k, num_threads=num_threads)
    rids, rvals = ref_topk(scores, k)
    assert ids.shape == (shape[0], k) and ids.dtype == np.int64
    assert vals.shape == (shape[0], k) and vals.dtype == np.float32
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)
    excl = random_exclusion(rng, shape[0], shape[1], 5 + shape[1] // 10)
    ids, vals = ops.topk(scores, k, exclude=excl, num_threads=num_threads)
    rids, rvals = ref_topk(scores, k, excl)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)


def test_topk_large_k_equals_full_sort():
    rng = np.random.default_rng(3)
    scores = rng.integers(-20, 20, (6, 3000)).astype(np.float32)  # heavy ties
    for k in (64, 65, 1000, 3000, 5000):
        ids, vals = ops.topk(scores, k, num_threads=2)
        rids, rvals = ref_topk(scores, k)
        np.testing.assert_array_equal(ids, rids)
        np.testing.assert_array_equal(vals, rvals)


def test_topk_infinite_scores_and_padding():
    s = np.array([[np.inf, -np.inf, 1.0, -np.inf], [-np.inf] * 4], dtype=np.float64)
    ids, vals = ops.topk(s, 6, exclude=(np.array([0, 1, 3]), np.array([2, 0, 3])))
    np.testing.assert_array_equal(ids, [[0, 1, 3, -1, -1, -1], [1, 2, -1, -1, -1, -1]])
    assert vals[0, 0] == np.inf and np.all(np.isneginf(vals[0, 1:]))


@pytest.mark.parametrize("shape,k", [((0, 5), 3), ((4, 0), 2), ((0, 0), 1)])
def test_topk_empty(shape, k):
    ids, vals = ops.topk(np.zeros(shape, np.float32), k)
    assert ids.shape == (shape[0], k) and vals.shape == (shape[0], k)
    assert np.all(ids == -1) and np.all(np.isneginf(vals))


def test_topk_scipy_csr_exclude_and_torch_roundtrip():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((20, 60)).astype(np.float32)
    mask = sp.random(20, 60, density=0.2, format="csr", random_state=1)
    ids, vals = ops.topk(torch.from_numpy(scores), 7, exclude=mask)
    assert isinstance(ids, torch.Tensor) and isinstance(vals, torch.Tensor)
    assert ids.dtype == torch.int64 and vals.dtype == torch.float32
    rids, rvals = ref_topk(scores, 7, mask)
    np.testing.assert_array_equal(ids.numpy(), rids)
    np.testing.assert_array_equal(vals.numpy(), rvals)


def test_topk_non_contiguous_input():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((30, 80))
    view = base[::2, ::3]
    ids, _ = ops.topk(view, 4)
    np.testing.assert_array_equal(ids, ref_topk(view, 4)[0])


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(0, 6),
    m=st.integers(0, 70),
    k=st.integers(1, 90),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_topk_property_ties_and_exclusions(data, n, m, k, dtype):
    vals = data.draw(st.lists(st.integers(-3, 3), min_size=n * m, max_size=n * m))
    scores = np.array(vals, dtype=dtype).reshape(n, m)
    rows = []
    for _ in range(n):
        if m and data.draw(st.booleans()):
            if data.draw(st.integers(0, 5)) == 0:
                row = list(range(m)) * data.draw(st.integers(1, 2))  # everything (maybe twice)
            else:
                row = data.draw(st.lists(st.integers(0, m - 1), max_size=2 * m))  # unsorted, dups
        else:
            row = []
        rows.append(row)
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([x for r in rows for x in r], dtype=np.int64)
    threads = data.draw(st.sampled_from([1, 2]))
    ids, got = ops.topk(scores, k, exclude=(indptr, indices), num_threads=threads)
    rids, rvals = ref_topk(scores, k, (indptr, indices))
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(got, rvals)


# ---------------------------------------------------------------- ops.topk_dot


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "nq,ni,d,k",
    [(1, 1, 1, 1), (1, 40, 3, 5), (13, 33, 8, 4), (50, 500, 16, 10), (25, 97, 64, 120),
     (40, 3000, 33, 70), (7, 20, 5, 20)],
)
def test_topk_dot_matches_reference(nq, ni, d, k, dtype, num_threads, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, d)).astype(dtype)
    it = rng.standard_normal((ni, d)).astype(dtype)
    bias = rng.standard_normal(ni).astype(dtype)
    excl = random_exclusion(rng, nq, ni, min(ni, 12))
    ids, vals = ops.topk_dot(q, it, k, item_bias=bias, exclude=excl, num_threads=num_threads)
    assert ids.shape == (nq, k) and ids.dtype == np.int64 and vals.dtype == np.float32
    # Exactly topk over the same arithmetic, materialised ...
    dense = _dot_scores(q, it, bias)
    rids, rvals = ops.topk(dense, k, exclude=excl)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)
    # ... and a valid top-k of the exact float64 scores up to rounding.
    exact = q.astype(np.float64) @ it.astype(np.float64).T + bias.astype(np.float64)
    check_near_topk(ids, vals, exact, k, excl, rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_topk_dot_integer_data_is_exact_with_ties():
    # Small integers: every product and sum is exact, so ids must equal the
    # reference bit for bit, ties (to the lower id) included, on every level.
    rng = np.random.default_rng(9)
    q = rng.integers(-1, 2, (50, 4)).astype(np.float32)
    it = rng.integers(-1, 2, (700, 4)).astype(np.float32)
    bias = rng.integers(-1, 2, 700).astype(np.float32)
    excl = random_exclusion(rng, 50, 700, 30, unsorted=True, dups=True)
    exact = q @ it.T + bias
    rids, rvals = ref_topk(exact, 25, excl)
    for level in SUPPORTED:
        for threads in (1, 2):
            ids, vals = _topk_dot_simd(q, it, 25, level, item_bias=bias, exclude=excl,
                                       num_threads=threads)
            np.testing.assert_array_equal(ids, rids, err_msg=level)
            np.testing.assert_array_equal(vals, rvals, err_msg=level)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), nq=st.integers(0, 30), ni=st.integers(0, 80), d=st.integers(1, 5),
       k=st.integers(1, 100))
def test_topk_dot_property_ties(data, nq, ni, d, k):
    q = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=nq * d, max_size=nq * d)),
                 dtype=np.float64).reshape(nq, d)
    it = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=ni * d, max_size=ni * d)),
                  dtype=np.float64).reshape(ni, d)
    rows = [data.draw(st.lists(st.integers(0, ni - 1), max_size=ni + 3)) if ni else []
            for _ in range(nq)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([x for r in rows for x in r], dtype=np.int64)
    level = data.draw(st.sampled_from(SUPPORTED))
    ids, vals = _topk_dot_simd(q, it, k, level, exclude=(indptr, indices),
                               num_threads=data.draw(st.sampled_from([1, 2])))
    rids, rvals = ref_topk(q @ it.T if nq and ni else np.zeros((nq, ni)), k, (indptr, indices))
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_dot_simd_levels_agree(dtype):
    rng = np.random.default_rng(11)
    q = rng.standard_normal((45, 64)).astype(dtype)
    it = rng.standard_normal((1500, 64)).astype(dtype)
    bias = rng.standard_normal(1500).astype(dtype)
    excl = random_exclusion(rng, 45, 1500, 50)
    results = {lv: _topk_dot_simd(q, it, 10, lv, item_bias=bias, exclude=excl) for lv in SUPPORTED}
    fused = [lv for lv in SUPPORTED if lv != "generic"]
    # The FMA levels run the same operations in the same order: bit-identical.
    for lv in fused[1:]:
        np.testing.assert_array_equal(results[lv][0], results[fused[0]][0])
        np.testing.assert_array_equal(results[lv][1], results[fused[0]][1])
    exact = q.astype(np.float64) @ it.astype(np.float64).T + bias
    for lv in SUPPORTED:
        ids, vals = results[lv]
        check_near_topk(ids, vals, exact, 10, excl, rtol=1e-5 if dtype == np.float32 else 1e-12)
        dense = _dot_scores(q, it, bias, simd=lv)
        np.testing.assert_array_equal(ids, ops.topk(dense, 10, exclude=excl)[0])


def test_topk_dot_default_level_and_env_override():
    assert _core.simd_level() in LEVELS
    assert _ORDER[_core.simd_level()] <= _ORDER[_core.simd_detected()]
    code = "from metarec_fast import _core; print(_core.simd_level())"
    for level in SUPPORTED:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "METAREC_SIMD": level}, check=True)
        assert out.stdout.strip() == level
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "METAREC_SIMD": "sse9"})
    assert bad.returncode != 0 and "sse9" in bad.stderr and "ValueError" in bad.stderr


def test_topk_dot_unsupported_level_is_an_error():
    with pytest.raises(ValueError, match="bogus"):
        _topk_dot_simd(np.ones((2, 2), np.float32), np.ones((3, 2), np.float32), 1, "bogus")
    missing = [lv for lv in LEVELS if lv not in SUPPORTED]
    for lv in missing:
        with pytest.raises(ValueError, match=lv):
            _topk_dot_simd(np.ones((2, 2), np.float32), np.ones((3, 2), np.float32), 1, lv)


def test_topk_dot_without_bias_threads_identical():
    rng = np.random.default_rng(12)
    q = rng.standard_normal((301, 20)).astype(np.float32)
    it = rng.standard_normal((2100, 20)).astype(np.float32)
    a = ops.topk_dot(q, it, 15, num_threads=1)
    for threads in (2, 3, -1, None):  # different chunkings, same answer
        b = ops.topk_dot(q, it, 15, num_threads=threads)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], ops.topk(_dot_scores(q, it), 15)[0])


@pytest.mark.parametrize("nq,ni,d", [(0, 5, 3), (4, 0, 3), (0, 0, 2), (3, 6, 0)])
def test_topk_dot_empty(nq, ni, d):
    ids, vals = ops.topk_dot(np.zeros((nq, d), np.float32), np.zeros((ni, d), np.float32), 4)
    assert ids.shape == (nq, 4) and vals.shape == (nq, 4)
    if ni == 0:
        assert np.all(ids == -1) and np.all(np.isneginf(vals))
    if d == 0 and nq and ni:  # all scores 0: ties -> lowest ids
        np.testing.assert_array_equal(ids, np.tile([0, 1, 2, 3], (nq, 1)))


def test_topk_dot_exclude_everything_and_k_beyond_items():
    q = np.ones((2, 3), np.float32)
    it = np.arange(12, dtype=np.float32).reshape(4, 3)
    excl = sp.csr_matrix(np.array([[1, 1, 1, 1], [0, 1, 0, 0]]))
    ids, vals = ops.topk_dot(q, it, 6, exclude=excl)
    assert np.all(ids[0] == -1) and np.all(np.isneginf(vals[0]))
    np.testing.assert_array_equal(ids[1], [3, 2, 0, -1, -1, -1])
    np.testing.assert_array_equal(vals[1][:3], [30, 21, 3])


def test_topk_dot_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    q = rng.standard_normal((9, 8))
    it = rng.standard_normal((40, 8))
    ids, vals = ops.topk_dot(torch.from_numpy(q), torch.from_numpy(it), 5,
                             item_bias=torch.zeros(40, dtype=torch.float64))
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
    assert isinstance(vals, torch.Tensor) and vals.dtype == torch.float32
    np.testing.assert_array_equal(ids.numpy(), ops.topk_dot(q, it, 5)[0])


# ---------------------------------------------------------------- bad input


# Bad input: every case on every device (conftest.py `device`), same messages.


def test_topk_bad_inputs(device):
    s = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="-2"):
        ops.topk(s, -2, device=device)
    with pytest.raises(ValueError, match="got 0"):
        ops.topk(s, 0, device=device)
    with pytest.raises(TypeError, match="float"):
        ops.topk(s, 2.0, device=device)
    with pytest.raises(TypeError, match="bool"):
        ops.topk(s, True, device=device)
    with pytest.raises(TypeError, match="int64"):
        ops.topk(np.zeros((3, 4), np.int64), 2, device=device)
    with pytest.raises(ValueError, match=r"2-dimensional, got shape \(4,\)"):
        ops.topk(np.zeros(4, np.float32), 2, device=device)
    bad = s.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\(1, 2\)"):
        ops.topk(bad, 2, device=device)
    with pytest.raises(ValueError, match="4 entries, got 3"):
        ops.topk(s, 2, exclude=(np.array([0, 1, 1]), np.array([0])), device=device)
    with pytest.raises(ValueError, match=r"shape \(3, 4\), got \(2, 4\)"):
        ops.topk(s, 2, exclude=sp.csr_matrix((2, 4)), device=device)
    with pytest.raises(IndexError, match="column 9"):
        ops.topk(s, 2, exclude=(np.array([0, 1, 1, 1]), np.array([9])), device=device)
    with pytest.raises(TypeError, match="CSR"):
        ops.topk(s, 2, exclude=[[0], [1], [2]], device=device)
    with pytest.raises(ValueError, match="num_threads"):
        ops.topk(s, 2, num_threads=0, device=device)


def test_topk_dot_bad_inputs(device):
    q = np.zeros((3, 4), np.float32)
    it = np.zeros((5, 4), np.float32)
    with pytest.raises(TypeError, match="float64"):
        ops.topk_dot(q, it.astype(np.float64), 2, device=device)
    with pytest.raises(TypeError, match="float64"):
        ops.topk_dot(q, it, 2, item_bias=np.zeros(5), device=device)
    with pytest.raises(TypeError, match="int32"):
        ops.topk_dot(q.astype(np.int32), it, 2, device=device)
    with pytest.raises(ValueError, match=r"d=4.*d=3"):
        ops.topk_dot(q, np.zeros((5, 3), np.float32), 2, device=device)
    with pytest.raises(ValueError, match=r"\(5\), got 6"):
        ops.topk_dot(q, it, 2, item_bias=np.zeros(6, np.float32), device=device)
    with pytest.raises(ValueError, match="-1"):
        ops.topk_dot(q, it, -1, device=device)
    with pytest.raises(TypeError, match="str"):
        ops.topk_dot(q, it, "3", device=device)
    for name in ("queries", "items", "item_bias"):
        qq, ii, bb = q.copy(), it.copy(), np.zeros(5, np.float32)
        target = {"queries": qq, "items": ii, "item_bias": bb}[name]
        target.reshape(-1)[3] = np.nan
        with pytest.raises(ValueError, match=name + " contains NaN"):
            ops.topk_dot(qq, ii, 2, item_bias=bb, device=device)
    with pytest.raises(ValueError, match="4 entries, got 2"):
        ops.topk_dot(q, it, 2, exclude=(np.array([0, 1]), np.array([0])), device=device)
    with pytest.raises(IndexError, match="column 5"):
        ops.topk_dot(q, it, 2, exclude=(np.array([0, 0, 0, 1]), np.array([5])), device=device)
    with pytest.raises(ValueError, match="1-d"):
        ops.topk_dot(q, it, 2, item_bias=np.zeros((5, 1), np.float32), device=device)
    it_bad = it.copy()
    it_bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"items contains NaN or inf at index \(2, 1\)"):
        ops.topk_dot(q, it_bad, 2, device=device)
    with pytest.raises(ValueError, match="got 0"):
        ops.topk_dot(q, it, 0, device=device)


def test_core_checks_exclusion_itself():
    # The compiled entry points re-validate: unsorted rows or a bad indptr
    # reaching C++ directly raise instead of reading out of range.
    s = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="sorted"):
        _core.topk_f32(s, 1, np.array([0, 2, 2]), np.array([2, 1]), 1)
    with pytest.raises(ValueError, match="ends at"):
        _core.topk_f32(s, 1, np.array([0, 1, 5]), np.array([2, 1]), 1)
    with pytest.raises(IndexError, match="column 7"):
        _core.topk_dot_f32(s, s, 1, None, np.array([0, 1, 1]), np.array([7]), 1)
    with pytest.raises(ValueError, match="decreases"):
        _core.topk_f32(s, 1, np.array([0, 2, 1]), np.array([0]), 1)


def test_topk_dot_ties_across_item_blocks():
    # d=1 float32 puts 65,536 items in one cache block: rare top scores are
    # spread over two blocks, and the tail is filled by tied zeros (lowest ids).
    rng = np.random.default_rng(14)
    ni = 70_000
    it = np.zeros((ni, 1), np.float32)
    it[rng.choice(ni, 30, replace=False), 0] = 1.0
    it[65_530:65_545, 0] = 1.0  # straddles the block boundary
    q = np.array([[1.0], [-1.0], [0.0]], np.float32)
    excl = random_exclusion(rng, 3, ni, 20)
    exact = q @ it.T
    rids, rvals = ref_topk(exact, 60, excl)
    for level in SUPPORTED:
        ids, vals = _topk_dot_simd(q, it, 60, level, exclude=excl, num_threads=2)
        np.testing.assert_array_equal(ids, rids, err_msg=level)
        np.testing.assert_array_equal(vals, rvals, err_msg=level)


def test_topk_dot_never_materialises_scores():
    # 10,000 x 100,000 float32 scores would take 4 GB; the fused kernel needs
    # the inputs, the packed items and the results only.
    code = """
import resource, numpy as np
from metarec_fast import ops
rng = np.random.default_rng(0)
q = rng.standard_normal((10_000, 4), dtype=np.float32)
it = rng.standard_normal((100_000, 4), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ids, _ = ops.topk_dot(q, it, 5, num_threads=2)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert ids.shape == (10_000, 5)
print((after - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mib = int(out.stdout.strip())
    assert grown_mib < 200, f"peak memory grew by {grown_mib} MiB"


@pytest.mark.parametrize("nq", [3, 100])  # items packed per block / once up front
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_topk_dot_non_finite_items_named(nq, bad):
    it = np.zeros((300, 5), np.float32)
    it[201, 3] = bad
    it[250, 1] = np.nan
    with pytest.raises(ValueError, match=r"items contains NaN or inf at index \(201, 3\)"):
        ops.topk_dot(np.ones((nq, 5), np.float32), it, 4, num_threads=1)


@pytest.mark.parametrize("k", [7, 500])
def test_topk_dot_few_queries_split_catalogue(k):
    # Few queries: the catalogue is split into slices (merged per query) and
    # items are packed block by block. Integer data -> exact, tie-heavy scores.
    rng = np.random.default_rng(15)
    q = rng.integers(-1, 2, (5, 64)).astype(np.float32)
    it = rng.integers(-1, 2, (10_000, 64)).astype(np.float32)
    bias = rng.integers(-2, 3, 10_000).astype(np.float32)
    excl = random_exclusion(rng, 5, 10_000, 400, unsorted=True, dups=True)
    rids, rvals = ref_topk(q @ it.T + bias, k, excl)
    for level in SUPPORTED:
        for threads in (1, 2, 3):
            ids, vals = _topk_dot_simd(q, it, k, level, item_bias=bias, exclude=excl,
                                       num_threads=threads)
            np.testing.assert_array_equal(ids, rids, err_msg=f"{level} {threads}")
            np.testing.assert_array_equal(vals, rvals, err_msg=f"{level} {threads}")
    rng_f = np.random.default_rng(16)
    qf = rng_f.standard_normal((3, 64)).astype(np.float64)
    itf = rng_f.standard_normal((10_000, 64)).astype(np.float64)
    ids, _ = ops.topk_dot(qf, itf, k, num_threads=2)
    np.testing.assert_array_equal(ids, ops.topk(_dot_scores(qf, itf), k)[0])
