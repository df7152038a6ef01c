"""CUDA top-k (ops.topk / ops.topk_dot on the GPU) against the CPU twins and
the slow references of tests/test_topk.py. Runs only with a CUDA build and a
device (benchmarks/gpu_check.sh); skips elsewhere.

The fused kernel computes each score as bias + fused multiply-adds over d in
order, exactly like the CPU's AVX2 / AVX-512 kernels, so its ids and scores
are compared with those bit for bit; the explicit-score kernel must equal the
CPU topk exactly on any data.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from cuda_support import cuda_tests
from fuzzing import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_topk import SUPPORTED, check_near_topk, random_exclusion, ref_topk

from metarec_fast import ops
from metarec_fast.ops.topk import _dot_scores, _topk_cuda, _topk_dot_cuda, _topk_dot_simd

pytestmark = cuda_tests

torch = pytest.importorskip("torch")

FMA_LEVEL = next((lv for lv in ("avx512", "avx2") if lv in SUPPORTED), None)


def dev():
    return torch.device("cuda", torch.cuda.current_device())


def cu(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(dev())


def host(t):
    assert t.is_cuda, "results of a GPU run are CUDA tensors"
    return t.cpu().numpy()


def gpu_topk_dot(q, it, k, bias=None, excl=None, slices=0):
    ids, vals = _topk_dot_cuda(q, it, k, bias, excl, dev(), slices=slices)
    return host(ids), host(vals)


def gpu_topk(s, k, excl=None, slices=0):
    ids, vals = _topk_cuda(s, k, excl, dev(), slices=slices)
    return host(ids), host(vals)


# ---------------------------------------------------------------- topk_dot


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "nq,ni,d,k",
    [(1, 1, 1, 1), (1, 40, 3, 5), (13, 33, 8, 4), (50, 500, 16, 10), (25, 97, 64, 120),
     (40, 3000, 33, 70), (7, 20, 5, 20), (300, 2000, 64, 100), (129, 257, 7, 3),
     (200, 1500, 1, 9), (65, 700, 130, 1000)],
)
def test_topk_dot_matches_cpu(nq, ni, d, k, dtype, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, d)).astype(dtype)
    it = rng.standard_normal((ni, d)).astype(dtype)
    bias = rng.standard_normal(ni).astype(dtype)
    excl = random_exclusion(rng, nq, ni, min(ni, 12))
    ids_t, vals_t = ops.topk_dot(cu(q), cu(it), k, item_bias=cu(bias), exclude=excl)
    assert ids_t.is_cuda and vals_t.is_cuda and ids_t.device == dev()
    assert ids_t.dtype == torch.int64 and vals_t.dtype == torch.float32
    assert tuple(ids_t.shape) == (nq, k) and tuple(vals_t.shape) == (nq, k)
    ids, vals = host(ids_t), host(vals_t)
    exact = q.astype(np.float64) @ it.astype(np.float64).T + bias.astype(np.float64)
    check_near_topk(ids, vals, exact, k, excl, rtol=1e-5 if dtype == np.float32 else 1e-12)
    if FMA_LEVEL is not None:  # the same arithmetic: bit for bit
        rids, rvals = _topk_dot_simd(q, it, k, FMA_LEVEL, item_bias=bias, exclude=excl)
        np.testing.assert_array_equal(ids, rids)
        np.testing.assert_array_equal(vals, rvals)
        dense = _dot_scores(q, it, bias, simd=FMA_LEVEL)
        np.testing.assert_array_equal(ids, ops.topk(dense, k, exclude=excl)[0])
    # numpy inputs with device="cuda": the same answer, as CUDA tensors
    ids2, vals2 = ops.topk_dot(q, it, k, item_bias=bias, exclude=excl, device="cuda")
    np.testing.assert_array_equal(host(ids2), ids)
    np.testing.assert_array_equal(host(vals2), vals)


@pytest.mark.parametrize("slices", [1, 2, 3, 7, 50])
def test_topk_dot_integer_data_exact_ties_any_slicing(slices):
    # Small integers: every product and sum is exact, so ids must equal the
    # reference bit for bit (ties to the lower id), however the items are split.
    rng = np.random.default_rng(9)
    q = rng.integers(-1, 2, (300, 4)).astype(np.float32)
    it = rng.integers(-1, 2, (2000, 4)).astype(np.float32)
    bias = rng.integers(-1, 2, 2000).astype(np.float32)
    excl = random_exclusion(rng, 300, 2000, 30, unsorted=True, dups=True)
    rids, rvals = ref_topk(q @ it.T + bias, 25, excl)
    ids, vals = gpu_topk_dot(q, it, 25, bias, excl, slices=slices)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)
    # float64 and a k beyond one warp's worth
    ids, vals = gpu_topk_dot(q.astype(np.float64), it.astype(np.float64), 100,
                             bias.astype(np.float64), excl, slices=slices)
    rids, rvals = ref_topk(q @ it.T + bias, 100, excl)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), nq=st.integers(0, 140), ni=st.integers(0, 300), d=st.integers(0, 9),
       k=st.integers(1, 300), slices=st.integers(0, 5))
def test_topk_dot_property_ties(data, nq, ni, d, k, slices):
    q = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=nq * d, max_size=nq * d)),
                 dtype=np.float64).reshape(nq, d)
    it = np.array(data.draw(st.lists(st.integers(-2, 2), min_size=ni * d, max_size=ni * d)),
                  dtype=np.float64).reshape(ni, d)
    rows = [data.draw(st.lists(st.integers(0, ni - 1), max_size=ni + 3)) if ni else []
            for _ in range(nq)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([x for r in rows for x in r], dtype=np.int64)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    ids, vals = gpu_topk_dot(q.astype(dtype), it.astype(dtype), k, None, (indptr, indices),
                             slices=slices)
    rids, rvals = ref_topk(q @ it.T if nq and ni else np.zeros((nq, ni)), k, (indptr, indices))
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)


def test_topk_dot_ties_across_tiles_and_slices():
    # d=1: rare top scores spread over many item tiles, the tail filled by tied
    # zeros (lowest ids first), every query ranking the same items.
    rng = np.random.default_rng(14)
    ni = 70_000
    it = np.zeros((ni, 1), np.float32)
    it[rng.choice(ni, 30, replace=False), 0] = 1.0
    it[65_530:65_545, 0] = 1.0
    q = np.tile(np.array([[1.0], [-1.0], [0.0]], np.float32), (50, 1))
    excl = random_exclusion(rng, 150, ni, 20)
    rids, rvals = ref_topk(q @ it.T, 60, excl)
    for slices in (0, 1, 4, 30):
        ids, vals = gpu_topk_dot(q, it, 60, None, excl, slices=slices)
        np.testing.assert_array_equal(ids, rids, err_msg=str(slices))
        np.testing.assert_array_equal(vals, rvals, err_msg=str(slices))


def test_topk_dot_all_equal_scores_fill_buffers():
    # Every score equal: every candidate ties and only the id decides, which
    # exercises the buffer overflow / flush / retry path on every tile.
    q = np.ones((257, 3), np.float32)
    it = np.ones((5000, 3), np.float32)
    for k in (1, 31, 32, 33, 100, 1024):
        ids, vals = gpu_topk_dot(q, it, k)
        np.testing.assert_array_equal(ids, np.tile(np.arange(k), (257, 1)))
        assert np.all(vals == 3.0)


@pytest.mark.parametrize("nq,ni,d", [(0, 5, 3), (4, 0, 3), (0, 0, 2), (3, 6, 0), (1, 1, 0)])
def test_topk_dot_empty(nq, ni, d):
    ids, vals = ops.topk_dot(np.zeros((nq, d), np.float32), np.zeros((ni, d), np.float32), 4,
                             device="cuda")
    assert tuple(ids.shape) == (nq, 4) and ids.is_cuda
    cids, cvals = ops.topk_dot(np.zeros((nq, d), np.float32), np.zeros((ni, d), np.float32), 4)
    np.testing.assert_array_equal(host(ids), cids)
    np.testing.assert_array_equal(host(vals), cvals)


def test_topk_dot_exclude_everything_and_k_beyond_items():
    q = np.ones((2, 3), np.float32)
    it = np.arange(12, dtype=np.float32).reshape(4, 3)
    excl = sp.csr_matrix(np.array([[1, 1, 1, 1], [0, 1, 0, 0]]))
    ids, vals = gpu_topk_dot(q, it, 6, None, excl)
    assert np.all(ids[0] == -1) and np.all(np.isneginf(vals[0]))
    np.testing.assert_array_equal(ids[1], [3, 2, 0, -1, -1, -1])
    np.testing.assert_array_equal(vals[1][:3], [30, 21, 3])
    # k far beyond the catalogue is fine (only min(k, n_items) is limited)
    ids, vals = gpu_topk_dot(q, it, 5000, None, None)
    np.testing.assert_array_equal(ids[:, :4], [[3, 2, 1, 0]] * 2)
    assert np.all(ids[:, 4:] == -1) and np.all(np.isneginf(vals[:, 4:]))


def test_topk_dot_k_limit():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    it = rng.standard_normal((3000, 8)).astype(np.float32)
    ids, _ = gpu_topk_dot(q, it, 1024)
    np.testing.assert_array_equal(ids, ops.topk_dot(q, it, 1024)[0])
    with pytest.raises(ValueError, match="1024"):
        ops.topk_dot(q, it, 1025, device="cuda")
    with pytest.raises(ValueError, match="1024"):
        ops.topk(q @ it.T, 2000, device="cuda")


def test_topk_dot_overflowing_products_are_skipped_like_cpu():
    # inf - inf = NaN scores are left out (never returned), as on the CPU.
    big = np.float32(3e38)
    q = np.array([[big, big], [1.0, 0.0]], np.float32)
    it = np.array([[big, -big], [1.0, 1.0], [0.5, 0.0]], np.float32)
    ids, vals = gpu_topk_dot(q, it, 3)
    cids, cvals = ops.topk_dot(q, it, 3)
    np.testing.assert_array_equal(ids, cids)
    np.testing.assert_array_equal(vals, cvals)


def test_topk_dot_streams_devices_and_views():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((64, 40)).astype(np.float32)
    it = rng.standard_normal((900, 40)).astype(np.float32)
    want = ops.topk_dot(cu(q), cu(it), 7)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        got = ops.topk_dot(cu(q), cu(it), 7)
    side.synchronize()
    np.testing.assert_array_equal(host(got[0]), host(want[0]))
    # a non-contiguous CUDA view is copied, not misread
    wide = cu(np.concatenate([it, it], axis=1))
    got = ops.topk_dot(cu(q), wide[:, :40], 7)
    np.testing.assert_array_equal(host(got[0]), host(want[0]))
    # CUDA exclusions are accepted (validated on the host)
    excl = random_exclusion(rng, 64, 900, 10)
    a = ops.topk_dot(cu(q), cu(it), 7, exclude=(cu(excl[0]), cu(excl[1])))
    b = ops.topk_dot(q, it, 7, exclude=excl)
    np.testing.assert_array_equal(host(a[0]), b[0])
    # device rules with real tensors
    with pytest.raises(ValueError, match="items is on the CPU"):
        ops.topk_dot(cu(q), it, 3)
    with pytest.raises(ValueError, match="device='cpu'"):
        ops.topk_dot(cu(q), cu(it), 3, device="cpu")
    with pytest.raises(ValueError, match="does not exist"):
        ops.topk_dot(q, it, 3, device=f"cuda:{torch.cuda.device_count()}")


def test_topk_dot_bad_inputs_on_gpu():
    # The input checks run on every device in tests/test_topk.py
    # (test_topk_dot_bad_inputs with the `device` fixture); here CUDA tensors.
    q = np.zeros((3, 4), np.float32)
    it = np.zeros((5, 4), np.float32)
    with pytest.raises(TypeError, match="float64"):
        ops.topk_dot(cu(q), cu(it.astype(np.float64)), 2)
    for name in ("queries", "items", "item_bias"):
        qq, ii, bb = q.copy(), it.copy(), np.zeros(5, np.float32)
        target = {"queries": qq, "items": ii, "item_bias": bb}[name]
        target.reshape(-1)[3] = np.nan
        with pytest.raises(ValueError, match=name + " contains NaN"):
            ops.topk_dot(cu(qq), cu(ii), 2, item_bias=cu(bb))


def test_topk_dot_large_against_torch():
    # A scaled-down serving shape against torch's matmul + topk (float64
    # reference scores; ties impossible in practice with random data).
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(3000, 64, device="cuda", generator=g)
    it = torch.randn(200_000, 64, device="cuda", generator=g)
    bias = torch.randn(200_000, device="cuda", generator=g)
    ids, vals = ops.topk_dot(q, it, 100, item_bias=bias)
    exact = (q[:200].double() @ it.double().T + bias.double())
    ref_vals, ref_ids = torch.topk(exact, 100, dim=1)
    got = ids[:200]
    same = (got == ref_ids).float().mean().item()
    assert same > 0.999, same
    torch.testing.assert_close(vals[:200].double(), ref_vals, rtol=1e-5, atol=1e-4)
    # every row sorted, no repeats
    assert bool((vals[:, 1:] <= vals[:, :-1]).all())
    srt = torch.sort(ids, dim=1).values
    assert bool((srt[:, 1:] != srt[:, :-1]).all())


# ---------------------------------------------------------------- topk (explicit scores)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "shape,k",
    [((1, 1), 1), ((1, 7), 3), ((5, 40), 10), ((37, 300), 5), ((37, 300), 100), ((8, 50), 50),
     ((8, 50), 80), ((3, 2000), 200), ((64, 129), 1), ((2, 100_000), 1000), ((500, 3000), 33)],
)
def test_topk_matches_cpu(shape, k, dtype, seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal(shape).astype(dtype)
    excl = random_exclusion(rng, shape[0], shape[1], 5 + shape[1] // 10)
    for ex in (None, excl):
        ids_t, vals_t = ops.topk(cu(scores), k, exclude=ex)
        assert ids_t.is_cuda and ids_t.dtype == torch.int64 and vals_t.dtype == torch.float32
        rids, rvals = ops.topk(scores, k, exclude=ex)
        np.testing.assert_array_equal(host(ids_t), rids)
        np.testing.assert_array_equal(host(vals_t), rvals)


@pytest.mark.parametrize("slices", [1, 2, 5, 64])
def test_topk_heavy_ties_infinities_any_slicing(slices):
    rng = np.random.default_rng(3)
    scores = rng.integers(-20, 20, (6, 30_000)).astype(np.float32)
    scores[:, ::7] = -np.inf
    scores[1, 5000:5100] = np.inf
    scores[2] = -np.inf
    excl = random_exclusion(rng, 6, 30_000, 300, unsorted=True, dups=True)
    for k in (1, 64, 65, 1000, 1024):
        ids, vals = gpu_topk(scores, k, excl, slices=slices)
        rids, rvals = ops.topk(scores, k, exclude=excl)
        np.testing.assert_array_equal(ids, rids, err_msg=f"k={k}")
        np.testing.assert_array_equal(vals, rvals, err_msg=f"k={k}")


def test_topk_infinite_scores_and_padding():
    s = np.array([[np.inf, -np.inf, 1.0, -np.inf], [-np.inf] * 4], dtype=np.float64)
    ids, vals = gpu_topk(s, 6, (np.array([0, 1, 3]), np.array([2, 0, 3])))
    np.testing.assert_array_equal(ids, [[0, 1, 3, -1, -1, -1], [1, 2, -1, -1, -1, -1]])
    assert vals[0, 0] == np.inf and np.all(np.isneginf(vals[0, 1:]))


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(0, 6), m=st.integers(0, 3000), k=st.integers(1, 300),
       slices=st.integers(0, 4))
def test_topk_property_ties_and_exclusions(data, n, m, k, slices):
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 4, (n, m)).astype(data.draw(st.sampled_from([np.float32, np.float64])))
    excl = random_exclusion(rng, n, m, data.draw(st.integers(0, m + 2)), unsorted=True, dups=True)
    ids, vals = gpu_topk(scores, k, excl, slices=slices)
    rids, rvals = ops.topk(scores, k, exclude=excl)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_array_equal(vals, rvals)


@pytest.mark.parametrize("shape,k", [((0, 5), 3), ((4, 0), 2), ((0, 0), 1)])
def test_topk_empty(shape, k):
    ids, vals = gpu_topk(np.zeros(shape, np.float32), k)
    assert ids.shape == (shape[0], k) and vals.shape == (shape[0], k)
    assert np.all(ids == -1) and np.all(np.isneginf(vals))


def test_topk_nan_is_reported_with_its_position():
    s = np.zeros((300, 5000), np.float32)
    s[201, 4000] = np.nan
    s[250, 10] = np.nan
    with pytest.raises(ValueError, match=r"scores contains NaN at index \(201, 4000\)"):
        ops.topk(cu(s), 3)
    # excluded positions too (as on the CPU), and any slicing
    indptr = np.zeros(301, np.int64)
    indptr[202:] = 1  # row 201 excludes item 4000
    excl = (indptr, np.array([4000], np.int64))
    for slices in (1, 3):
        with pytest.raises(ValueError, match=r"NaN at index \(201, 4000\)"):
            gpu_topk(s, 3, excl, slices=slices)
    # a later call is unaffected
    ok = np.ones((2, 3), np.float32)
    assert gpu_topk(ok, 2)[0].tolist() == [[0, 1], [0, 1]]


def test_topk_bad_inputs_on_gpu():
    # On every device in tests/test_topk.py (test_topk_bad_inputs); here CUDA tensors.
    s = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="-2"):
        ops.topk(cu(s), -2)
    with pytest.raises(ValueError, match="2-dimensional"):
        ops.topk(cu(np.zeros(4, np.float32)), 2)
    with pytest.raises(IndexError, match="column 9"):
        ops.topk(cu(s), 2, exclude=(np.array([0, 1, 1, 1]), np.array([9])))
