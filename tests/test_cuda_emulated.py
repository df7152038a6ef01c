"""The CUDA kernels' logic, checked without a GPU.

Each kernel family of cpp/cuda (topk.cu, embedding.cu, adapt.cu: launchers and
kernels, unchanged) is compiled with g++ against tests/cuda_emu/cuda_runtime.h,
a host emulation of the CUDA runtime and built-ins (every CUDA thread a fiber;
block barriers and 32-lane warp shuffles are real rendezvous between fibers,
resumed in a shuffled order; a deadlock raises; scratch memory is poisoned
with NaN), together with one driver per family in tests/cuda_emu:

* emu_topk_main.cpp (an executable): first the emulation itself (a divergent
  barrier or shuffle must be reported as a deadlock, a missing barrier must
  change a result, collectives on a 32 x 32 block), then every top-k result
  bit for bit against a brute-force reference (shapes, ties, exclusions,
  slices, several launch groups forced by a tiny scratch budget, padding,
  NaN reports), and a subset again under AddressSanitizer + UBSan;
* emu_embedding_main.cpp (ctypes): gather, bags, check, group, backward and
  weight gradient bit for bit against the CPU kernels of ``_core``, with the
  launchers' grids and tiny grids (grid-stride loops), misaligned buffers
  (vector widths), and a stand-alone AddressSanitizer + UBSan stress run;
* emu_adapt_main.cpp (ctypes): the linear-head forward/backward against the
  CPU kernels of ``_core`` (float64 1e-10, float32 1e-4 relative) across the
  parameter grid, d on both sides of the register-slot boundaries, grid-stride
  loops (one fake SM), empty batches and the device-side input validation;
  and a stand-alone AddressSanitizer + UBSan stress run (outputs finite).

What this shows and what it cannot is in the header of cuda_runtime.h
(indexing, synchronisation, launch shapes, host logic: yes; performance, real
memory behaviour and nvcc's rounding: no; tests/test_cuda_*.py do that on a
GPU). METAREC_FUZZ_SCALE=N (N > 1) runs larger grids.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarec_fast import _core, ops
from test_embedding import SHAPES, bag_problem, random_bag_sizes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EMU = REPO / "tests" / "cuda_emu"
CUDA_SRC = REPO / "cpp" / "cuda"
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
SCALE = max(1, int(os.environ.get("METAREC_FUZZ_SCALE", "1")))

FLAGS = ["-std=c++17", "-ffp-contract=off", "-Wno-unknown-pragmas", f"-I{EMU}", f"-I{CUDA_SRC}",
         f"-I{REPO / 'cpp' / 'include'}"]


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    """Compiles the drivers once per session, in parallel: {name: path or None}
    (None: the AddressSanitizer build, when the toolchain has no sanitizers)."""
    if CXX is None:
        pytest.skip("needs a C++17 compiler (g++)")
    if not sys.platform.startswith("linux"):
        pytest.skip("the CUDA emulation needs Linux")
    if not (CUDA_SRC / "topk.cu").is_file():
        pytest.skip("needs the source tree")
    tmp = tmp_path_factory.mktemp("cuda_emu")
    jobs = {
        "topk": [*FLAGS, "-O1", "-DMETAREC_TOPK_SCRATCH_BYTES=256", "-x", "c++", str(CUDA_SRC / "topk.cu"),
                 "-x", "c++", str(EMU / "emu_topk_main.cpp")],
        "embedding": [*FLAGS, "-O1", "-fPIC", "-shared", str(EMU / "emu_embedding_main.cpp")],
        "adapt": [*FLAGS, "-O1", "-fPIC", "-shared", str(EMU / "emu_adapt_main.cpp")],
        "embedding_asan": [*FLAGS, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                           "-DMETAREC_EMU_MAIN", str(EMU / "emu_embedding_main.cpp")],
        "topk_asan": [*FLAGS, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                      "-DMETAREC_TOPK_SCRATCH_BYTES=256", "-x", "c++", str(CUDA_SRC / "topk.cu"), "-x", "c++",
                      str(EMU / "emu_topk_main.cpp")],
        "adapt_asan": [*FLAGS, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                       "-DMETAREC_EMU_MAIN", str(EMU / "emu_adapt_main.cpp")],
    }
    procs = {}
    for name, args in jobs.items():
        out = tmp / (name + (".so" if "-shared" in args else ""))
        procs[name] = (out, subprocess.Popen([CXX, *args, "-o", str(out)], stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True))
    result = {}
    for name, (out, proc) in procs.items():
        log, _ = proc.communicate(timeout=600)
        if name.endswith("_asan") and proc.returncode != 0:
            result[name] = None  # no sanitizer runtime
            continue
        assert proc.returncode == 0, f"{name} driver does not compile:\n{log[-4000:]}"
        result[name] = out
    return result


def _call(lib, fn, *args):
    rc = getattr(lib, fn)(*args)
    if rc != 0:
        exc = {1: ValueError, 2: IndexError}.get(rc, RuntimeError)
        raise exc(lib.emu_last_error().decode())


def _a(x):
    return None if x is None else x.ctypes.data


def _f64(x):
    return int(x.dtype == np.float64)


# ---------------------------------------------------------------------------
# top-k


def test_topk_kernels_equal_brute_force(builds):
    # The emulation's own checks first (deliberately broken kernels must be
    # caught), then the quick case list (the whole list with
    # METAREC_FUZZ_SCALE > 1: about 4x longer).
    args = [] if SCALE > 1 else ["--quick"]
    run = subprocess.run([str(builds["topk"]), *args], capture_output=True, text=True, timeout=600)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not failed, "\n".join(failed) + run.stderr[-3000:]
    assert "0 failures" in run.stdout


def test_topk_kernels_under_address_sanitizer(builds):
    # Exact-size host buffers for every input, output and scratch allocation:
    # no kernel or launcher reads or writes outside them (the quick subset;
    # the whole list with METAREC_FUZZ_SCALE > 1).
    exe = builds["topk_asan"]
    if exe is None:
        pytest.skip("the C++ toolchain has no AddressSanitizer")
    args = [] if SCALE > 1 else ["--quick"]
    run = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert run.returncode == 0 and not failed, "\n".join(failed) + run.stderr[-4000:]
    assert "0 failures" in run.stdout


# ---------------------------------------------------------------------------
# embedding

DTYPES = [np.float32, np.float64]
MODES = [("sum", False), ("mean", False), ("sum", True)]
_I64, _P, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int


@pytest.fixture(scope="module")
def emb(builds):
    lib = ctypes.CDLL(str(builds["embedding"]))
    lib.emu_last_error.restype = ctypes.c_char_p
    lib.emu_misaligned.restype = ctypes.c_longlong
    lib.emu_gather.argtypes = [_INT, _P, _I64, _I64, _P, _I64, _P, _INT]
    lib.emu_forward.argtypes = [_INT, _P, _I64, _I64, _P, _I64, _P, _I64, _P, _INT, _P, _INT]
    lib.emu_group.argtypes = [_P, _I64, _P, _I64, _I64, _P, _INT]
    lib.emu_check.argtypes = [_P, _I64, _I64, _P, _I64, _P, _INT]
    lib.emu_backward.argtypes = [_INT, _P, _I64, _I64, _P, _I64, _P, _INT, _P, _I64, _INT, _I64, _P, _INT]
    lib.emu_weight_grad.argtypes = [_INT, _P, _I64, _P, _I64, _I64, _P, _I64, _P, _P, _INT]
    return lib



def _misaligned(a):
    """A copy of ``a`` whose data starts one element past an allocation (breaks 16-byte alignment)."""
    buf = np.empty(a.size + 1, a.dtype)
    out = buf[1:].reshape(a.shape)
    out[...] = a
    return out


def emu_gather(lib, table, ids, blocks=0):
    out = np.full((len(ids), table.shape[1]), np.nan, table.dtype)
    _call(lib, "emu_gather", _f64(table), _a(table), table.shape[0], table.shape[1], _a(ids), len(ids), _a(out),
          blocks)
    return out


def emu_forward(lib, table, ids, offsets, weights, mode, blocks=0):
    out = np.full((len(offsets), table.shape[1]), np.nan, table.dtype)
    _call(lib, "emu_forward", _f64(table), _a(table), table.shape[0], table.shape[1], _a(ids), len(ids),
          _a(offsets), len(offsets), _a(weights), mode == "mean", _a(out), blocks)
    return out


def emu_group(lib, ids, offsets, num_rows, blocks=0):
    ws = np.full(7 * len(ids) + 2, -7, np.int64)
    _call(lib, "emu_group", _a(ids), len(ids), _a(offsets), len(offsets), num_rows, _a(ws), blocks)
    return ws


def emu_backward(lib, grad_out, ids, offsets, num_rows, weights, mode, sparse, blocks=0):
    n, d = len(ids), grad_out.shape[1]
    ws = emu_group(lib, ids, offsets, num_rows, blocks)
    if sparse:
        n_unique = int(ws[7 * n + 1])
        rows = ws[5 * n: 5 * n + n_unique].copy()
        dest = np.full((n_unique, d), np.nan, grad_out.dtype)
        _call(lib, "emu_backward", _f64(grad_out), _a(grad_out), len(offsets), d, _a(offsets), n, _a(weights),
              mode == "mean", _a(ws), n_unique, 0, num_rows, _a(dest), blocks)
        return rows, dest
    dest = np.full((num_rows, d), np.nan, grad_out.dtype)
    _call(lib, "emu_backward", _f64(grad_out), _a(grad_out), len(offsets), d, _a(offsets), n, _a(weights),
          mode == "mean", _a(ws), n, 1, num_rows, _a(dest), blocks)
    return dest


def emu_weight_grad(lib, grad_out, table, ids, offsets, blocks=0):
    out = np.full(len(ids), np.nan, table.dtype)
    _call(lib, "emu_weight_grad", _f64(table), _a(grad_out), len(offsets), _a(table), table.shape[0],
          table.shape[1], _a(ids), len(ids), _a(offsets), _a(out), blocks)
    return out


EMB_SHAPES = SHAPES + [(500, 2, [3, 9, 1, 0, 4] * 6), (64, 66, [5, 0, 8, 2]), (2, 130, [7, 1, 5])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,weighted", MODES)
def test_embedding_kernels_equal_cpu_bitwise(emb, dtype, mode, weighted):
    for shape in EMB_SHAPES:
        num_rows, d, sizes = shape
        table, ids, offsets, weights, grad_out = bag_problem(num_rows * 7 + d, num_rows, d, sizes, dtype, weighted)
        cpu_fwd = ops.embedding_bag(table, ids, offsets, weights, mode)
        cpu_dense = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode)
        cpu_rows, cpu_values = ops.embedding_bag_backward(grad_out, ids, offsets, num_rows, weights, mode,
                                                          sparse=True)
        cpu_wg = ops.embedding_bag_weight_grad(grad_out, table, ids, offsets) if weighted else None
        for blocks in (0, 1, 3):  # the launchers' grid, and tiny grids (grid-stride loops)
            for tab, g in ((table, grad_out), (_misaligned(table), _misaligned(grad_out))):
                where = f"shape {shape} blocks {blocks} aligned {tab is table}"
                assert emu_forward(emb, tab, ids, offsets, weights, mode, blocks).tobytes() == cpu_fwd.tobytes(), \
                    where
                np.testing.assert_array_equal(emu_gather(emb, tab, ids, blocks), table[ids], err_msg=where)
                assert emu_backward(emb, g, ids, offsets, num_rows, weights, mode, False, blocks).tobytes() == \
                    cpu_dense.tobytes(), where
                rows, values = emu_backward(emb, g, ids, offsets, num_rows, weights, mode, True, blocks)
                np.testing.assert_array_equal(rows, cpu_rows, err_msg=where)
                assert values.tobytes() == cpu_values.tobytes(), where
                if weighted:
                    assert emu_weight_grad(emb, g, tab, ids, offsets, blocks).tobytes() == cpu_wg.tobytes(), where
    assert emb.emu_misaligned() == 0  # every vector load/store was aligned to its width


@pytest.mark.parametrize("seed", range(3 * SCALE))
def test_embedding_kernels_random_and_hot_rows(emb, seed):
    rng = np.random.default_rng(seed)
    for dtype in DTYPES:
        for mode, weighted in MODES:
            d = [1, 3, 64, 100][rng.integers(0, 4)]
            table, ids, offsets, weights, grad_out = bag_problem(seed, 50, d, random_bag_sizes(rng, 120), dtype,
                                                                 weighted)
            assert emu_forward(emb, table, ids, offsets, weights, mode).tobytes() == \
                ops.embedding_bag(table, ids, offsets, weights, mode).tobytes()
            assert emu_backward(emb, grad_out, ids, offsets, 50, weights, mode, False).tobytes() == \
                ops.embedding_bag_backward(grad_out, ids, offsets, 50, weights, mode).tobytes()
    # one row looked up thousands of times; a huge table (30 key bits)
    ids = np.zeros(3000, np.int64)
    ids[::7] = 3
    offsets = np.arange(0, 3000, 10, dtype=np.int64)
    g = rng.standard_normal((len(offsets), 64)).astype(np.float32)
    for mode in ("sum", "mean"):
        assert emu_backward(emb, g, ids, offsets, 5, None, mode, False).tobytes() == \
            ops.embedding_bag_backward(g, ids, offsets, 5, mode=mode).tobytes()
    r, v = emu_backward(emb, g, ids * 10**8 + 7, offsets, 10**9, None, "sum", True)
    r_cpu, v_cpu = ops.embedding_bag_backward(g, ids * 10**8 + 7, offsets, 10**9, sparse=True)
    np.testing.assert_array_equal(r, r_cpu)
    assert v.tobytes() == v_cpu.tobytes()


def test_embedding_kernels_empty_and_bad_ids(emb):
    t = np.arange(12, dtype=np.float32).reshape(4, 3)
    e = np.zeros(0, np.int64)
    assert emu_forward(emb, t, e, np.zeros(2, np.int64), None, "mean").tolist() == [[0.0] * 3] * 2
    assert emu_forward(emb, t, e, e, None, "sum").shape == (0, 3)
    assert not emu_backward(emb, np.ones((2, 3), np.float32), e, np.zeros(2, np.int64), 4, None, "sum", False).any()
    rows, values = emu_backward(emb, np.ones((2, 3), np.float32), e, np.zeros(2, np.int64), 4, None, "sum", True)
    assert rows.shape == (0,) and values.shape == (0, 3)
    # ids the Python layer would reject: never read, they contribute nothing
    out = emu_forward(emb, t, np.array([1, 99, -5, 2], np.int64), np.array([0, 2], np.int64), None, "sum")
    np.testing.assert_array_equal(out, [t[1], t[2]])
    np.testing.assert_array_equal(emu_gather(emb, t, np.array([7, 0], np.int64)), [[0, 0, 0], t[0]])
    # the launchers' own argument checks
    with pytest.raises(ValueError, match="per-sample weights are only supported with mode='sum'"):
        emu_backward(emb, np.ones((1, 3), np.float32), np.array([1], np.int64), np.zeros(1, np.int64), 4,
                     np.ones(1, np.float32), "mean", False)
    with pytest.raises(ValueError, match="offsets is empty but ids has 1 entries"):
        emu_forward(emb, t, np.array([1], np.int64), e, None, "sum")


def test_embedding_check_kernel(emb):
    def check(ids, offsets, num_rows, blocks=0):
        ids = np.asarray(ids, np.int64)
        offsets = np.asarray(offsets, np.int64)
        r = np.full(4, 12345, np.int64)
        _call(emb, "emu_check", _a(ids), len(ids), num_rows, _a(offsets) if len(offsets) else None, len(offsets),
              _a(r), blocks)
        return r.tolist() if len(offsets) else r[:2].tolist()

    assert check([1, 2, 3, 4], [0, 2], 10) == [-1, -1, 0, 2]
    assert check([1, 10, -1, 99], [0, 2], 10) == [1, -1, 0, 2]
    assert check([1, 2, 3, 4], [1, 3, 2, 2, 0], 10) == [-1, 2, 1, 0]
    assert check([], [0, 0], 3) == [-1, -1, 0, 0]
    with pytest.raises(ValueError, match="offsets is empty but ids has 1 entries"):
        check([5], [], 3)
    assert check([], [], 3) == [-1, -1]
    big = np.zeros(200_000, np.int64)
    big[150_000], big[190_000], big[70_001] = 77, 55, -2
    offs = np.arange(0, 200_000, 10)
    offs[9000] = 5
    for blocks in (0, 1, 7):
        assert check(big, offs, 10, blocks) == [70_001, 9000, 0, 199_990]


def test_embedding_kernels_under_address_sanitizer(builds):
    # Random problems (empty bags, rejected ids and offsets, misaligned
    # buffers, tiny grids) on buffers of exactly the documented sizes: no
    # kernel or launcher reads or writes outside them, and every vector
    # access is aligned.
    exe = builds["embedding_asan"]
    if exe is None:
        pytest.skip("the C++ toolchain has no AddressSanitizer")
    run = subprocess.run([str(exe), str(400 * SCALE)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "0 misaligned" in run.stdout


# ---------------------------------------------------------------------------
# adapt (linear-head inner loop)

_D = ctypes.c_double
_BATCH = [_P, _P, _I64, _I64, _I64, _P, _P, _P, _I64, _P, _P, _I64, _P, _P, _INT, _P, _I64, _D, _INT, _D, _INT]
TOL = {np.float64: 1e-10, np.float32: 1e-4}
LOSSES = ["mse", "logistic"]


@pytest.fixture(scope="module")
def adapt(builds):
    lib = ctypes.CDLL(str(builds["adapt"]))
    lib.emu_last_error.restype = ctypes.c_char_p
    lib.emu_launches.restype = ctypes.c_longlong
    lib.emu_forward.argtypes = [_INT, *_BATCH, _P, _P]
    lib.emu_backward.argtypes = [_INT, *_BATCH, _P, _P, _INT, _INT, _P, _P, _P, _P, _P, _P]
    lib.emu_set_sm_count.argtypes = [_INT]
    yield lib
    lib.emu_set_sm_count(2)


def adapt_problem(rng, n_users, n_items, d, max_s, max_q, loss, per_user, per_param, dtype):
    """A batch like the CPU bindings take it (user 0: one support item, user 1:
    none, user 2: no query, user 3: one query)."""
    H = (rng.standard_normal((n_items, d)) * 0.5 / np.sqrt(max(1.0, d / 5.0))).astype(dtype)
    c = rng.standard_normal(n_items).astype(dtype)
    ns = rng.integers(0, max_s + 1, n_users)
    nq = rng.integers(0, max_q + 1, n_users)
    for u, (attr, v) in enumerate([(ns, 1), (ns, 0), (nq, 0), (nq, 1)][:n_users]):
        attr[u] = v
    if n_items == 0:
        ns[:] = 0
        nq[:] = 0
    s_items = rng.integers(0, max(n_items, 1), int(ns.sum())).astype(np.int64)
    q_items = rng.integers(0, max(n_items, 1), int(nq.sum())).astype(np.int64)
    if loss == "mse":
        s_t = (rng.integers(1, 6, len(s_items)) - 3).astype(dtype)
    else:
        s_t = rng.integers(0, 2, len(s_items)).astype(dtype)
    n_theta = n_users if per_user else 1
    return dict(
        H=H, c=c,
        support_indptr=np.concatenate([[0], np.cumsum(ns)]).astype(np.int64), support_items=s_items,
        support_targets=s_t,
        query_indptr=np.concatenate([[0], np.cumsum(nq)]).astype(np.int64), query_items=q_items,
        p0=(rng.standard_normal((n_theta, d)) * 0.3).astype(dtype), b0=rng.standard_normal(n_theta).astype(dtype),
        per_user_theta0=per_user, alpha_p=rng.uniform(0.05, 0.2, d if per_param else 1).astype(dtype),
        alpha_b=0.13, steps=0, l2=0.05, loss=loss,
    )


def _batch_args(b):
    n_users = len(b["support_indptr"]) - 1
    return [b["H"].ctypes.data, b["c"].ctypes.data, b["H"].shape[0], b["H"].shape[1], n_users,
            _a(b["support_indptr"]), _a(b["support_items"]), _a(b["support_targets"]), len(b["support_items"]),
            _a(b["query_indptr"]), _a(b["query_items"]), len(b["query_items"]), _a(b["p0"]), _a(b["b0"]),
            int(b["per_user_theta0"]), _a(b["alpha_p"]), len(b["alpha_p"]), b["alpha_b"], b["steps"], b["l2"],
            LOSSES.index(b["loss"])]


def emu_adapt_forward(lib, b):
    dt = b["H"].dtype
    n_users, d = len(b["support_indptr"]) - 1, b["H"].shape[1]
    traj = np.full((n_users, b["steps"] + 1, d + 1), -777, dt)
    pred = np.full(len(b["query_items"]), -777, dt)
    _call(lib, "emu_forward", _f64(b["H"]), *_batch_args(b), _a(traj), _a(pred))
    return traj, pred


def emu_adapt_backward(lib, b, traj, grad, second, alpha_grad):
    dt = b["H"].dtype
    out = {k: np.full(np.shape(v) if k != "alpha_b" else (1,), -9, dt)
           for k, v in (("p0", b["p0"]), ("b0", b["b0"]), ("alpha_p", b["alpha_p"]), ("alpha_b", 0),
                        ("H", b["H"]), ("c", b["c"]))}
    _call(lib, "emu_backward", _f64(b["H"]), *_batch_args(b), _a(traj), _a(grad), int(second), int(alpha_grad),
          *(_a(out[k]) for k in ("p0", "b0", "alpha_p", "alpha_b", "H", "c")))
    out["alpha_b"] = out["alpha_b"][0]
    return out


def assert_close(got, want, rtol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    scale = max(1e-3, float(np.abs(want).max())) if want.size else 1.0
    bad = ~(np.abs(got - want) <= rtol * (scale + np.abs(want)))
    assert not bad.any(), f"{what}: {int(bad.sum())} of {bad.size} differ, first at {np.argwhere(bad)[0]}: " \
                          f"{got[bad][0]!r} vs {want[bad][0]!r}"


def check_adapt(lib, b, second, alpha_grad, what):
    """Emulated CUDA forward/backward vs the CPU kernels; returns the number of arrays compared."""
    rtol = TOL[b["H"].dtype.type]
    keys = ("H", "c", "support_indptr", "support_items", "support_targets", "query_indptr", "query_items", "p0",
            "b0", "per_user_theta0", "alpha_p", "alpha_b", "steps", "l2", "loss")
    args = [b[k] for k in keys]
    traj_cpu, pred_cpu = _core.linear_head_forward(*args, 1)
    traj, pred = emu_adapt_forward(lib, b)
    assert_close(traj, traj_cpu, rtol, f"trajectory {what}")
    assert_close(pred, pred_cpu, rtol, f"query_pred {what}")
    grad = np.random.default_rng(len(pred)).standard_normal(len(pred)).astype(b["H"].dtype)
    g_cpu = _core.linear_head_backward(*args, traj_cpu, grad, second, alpha_grad, 1)
    g = emu_adapt_backward(lib, b, traj, grad, second, alpha_grad)
    for k in ("p0", "b0", "alpha_p", "alpha_b", "H", "c"):
        assert_close(g[k], g_cpu[k], rtol, f"grad {k} {what}")
    return 8


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_adapt_equals_cpu_across_the_grid(adapt, dtype, loss, steps):
    rng = np.random.default_rng([steps, LOSSES.index(loss), np.dtype(dtype).itemsize])
    for rep in range(SCALE):
        for per_user in (False, True):
            for per_param in (False, True):
                b = adapt_problem(rng, 10, 20, 5, 5, 4, loss, per_user, per_param, dtype)
                b["steps"] = steps
                for second in (True, False):
                    for alpha_grad in (True, False):
                        check_adapt(adapt, b, second, alpha_grad,
                                    f"per_user={per_user} per_param={per_param} second={second} "
                                    f"alpha_grad={alpha_grad} rep={rep}")


# Register slots per lane: 1 (d <= 32), 2 (<= 64), 4 (<= 128), 8 (<= 256), then global scratch.
DIMS = [1, 2, 31, 32, 33, 64, 65, 128, 129, 256, 257, 300]


@pytest.mark.parametrize("d", DIMS)
def test_adapt_register_slot_boundaries(adapt, d):
    rng = np.random.default_rng(d)
    for dtype, loss, per_user, per_param in [(np.float64, "mse", d % 2 == 1, d % 3 == 0),
                                             (np.float32, "logistic", d % 2 == 0, True)]:
        b = adapt_problem(rng, 9, 15, d, 4, 3, loss, per_user, per_param, dtype)
        b["steps"] = 2
        check_adapt(adapt, b, True, True, f"d={d} {np.dtype(dtype).name}")
        if d in (33, 257):
            check_adapt(adapt, b, False, True, f"d={d} first order")


def test_adapt_grid_stride_loops(adapt):
    # One fake SM: the per-user kernels cap their grids (16 blocks with
    # registers, 4 with scratch), so each warp takes several users.
    rng = np.random.default_rng(7)
    adapt.emu_set_sm_count(1)
    try:
        for n_users, n_items, d, loss, per_user, per_param, dtype in [
            (150, 30, 7, "mse", True, True, np.float64),
            (150, 30, 7, "logistic", False, False, np.float64),
            (40, 30, 300, "mse", False, True, np.float64),
            (40, 10, 260, "logistic", True, False, np.float32),
        ]:
            b = adapt_problem(rng, n_users, n_items, d, 3, 3, loss, per_user, per_param, dtype)
            b["steps"] = 2
            check_adapt(adapt, b, True, True, f"users={n_users} d={d}")
            check_adapt(adapt, b, False, False, f"users={n_users} d={d} first order")
    finally:
        adapt.emu_set_sm_count(2)


@pytest.mark.parametrize("per_user", [False, True])
def test_adapt_empty_batches(adapt, per_user):
    rng = np.random.default_rng(int(per_user))
    for n_users, n_items, max_s, max_q, loss, per_param, steps in [
        (0, 5, 3, 3, "mse", True, 2),       # no users
        (0, 0, 3, 3, "mse", True, 2),       # no users, no items
        (6, 1, 3, 3, "mse", True, 2),       # one item
        (1, 3, 3, 3, "logistic", False, 3),  # one user
        (6, 4, 0, 0, "mse", True, 2),       # empty support and query everywhere
        (5, 0, 3, 3, "mse", True, 2),       # no items (so no entries)
        (4, 6, 0, 3, "logistic", True, 1),  # empty support, queries
        (4, 6, 3, 0, "mse", False, 1),      # support, empty queries
    ]:
        b = adapt_problem(rng, n_users, n_items, 4, max_s, max_q, loss, per_user, per_param, np.float64)
        b["steps"] = steps
        for second, alpha_grad in [(True, True), (False, False)]:
            check_adapt(adapt, b, second, alpha_grad, f"users={n_users} items={n_items} s={max_s} q={max_q}")


def test_adapt_device_validation_matches_cpu_errors(adapt):
    # The launchers validate the CSR arrays on the device (atomicMin status
    # words) and raise the CPU kernel's exception with its message.
    def batch(s_indptr, s_items, q_indptr, q_items):
        b = adapt_problem(np.random.default_rng(0), 2, 3, 2, 1, 1, "mse", False, False, np.float64)
        b.update(support_indptr=np.array(s_indptr, np.int64), support_items=np.array(s_items, np.int64),
                 support_targets=np.ones(len(s_items)), query_indptr=np.array(q_indptr, np.int64),
                 query_items=np.array(q_items, np.int64), steps=2)
        return b

    cases = [
        (([0, 1, 2], [0, 3], [0, 0, 1], [1]), IndexError, "support items contains id 3"),
        (([0, 1, 2], [0, 2], [0, 0, 1], [-1]), IndexError, "query items contains id -1"),
        (([0, 1, 2], [0, 2], [0, 0, 1], [3]), IndexError, "query items contains id 3"),
        (([0, 2, 1], [0], [0, 0, 1], [1]), ValueError, "support indptr decreases at row 1"),
        (([1, 1, 2], [0, 2], [0, 0, 1], [1]), ValueError, "support indptr must start at 0"),
        (([0, 1, 2], [0, 7], [0, 2, 1], [1]), ValueError, "query indptr decreases at row 1"),  # structure first
    ]
    for (s_indptr, s_items, q_indptr, q_items), exc, msg in cases:
        b = batch(s_indptr, s_items, q_indptr, q_items)
        with pytest.raises(exc, match=msg) as cpu:
            _core.linear_head_forward(*[b[k] for k in ("H", "c", "support_indptr", "support_items",
                                                       "support_targets", "query_indptr", "query_items", "p0",
                                                       "b0", "per_user_theta0", "alpha_p", "alpha_b", "steps",
                                                       "l2", "loss")], 1)
        with pytest.raises(exc) as emu:
            emu_adapt_forward(adapt, b)
        assert str(emu.value) == str(cpu.value)
        grad = np.zeros(len(q_items))
        with pytest.raises(exc) as emu:
            emu_adapt_backward(adapt, b, np.zeros((2, 3, 3)), grad, True, True)
        assert str(emu.value) == str(cpu.value)
    # An indptr that does not end at nnz: the bindings reject it before the
    # CPU kernel sees it, so only the device message is checked.
    for args, msg in [(([0, 1, 2], [0, 2], [0, 0, 0], [1]), "query indptr ends at 0 but there are 1 query items")]:
        with pytest.raises(ValueError, match=msg):
            emu_adapt_forward(adapt, batch(*args))


def test_adapt_kernels_under_address_sanitizer(builds):
    # Random batches (empty users/items/sets, every register-slot variant and
    # the scratch path, 1-3 fake SMs, bad ids and indptr) on buffers of
    # exactly the documented sizes: no launcher or kernel reads or writes
    # outside them, bad input raises, and no output is NaN (scratch is
    # NaN-poisoned, so an unwritten scratch read that reaches a result shows).
    exe = builds["adapt_asan"]
    if exe is None:
        pytest.skip("the C++ toolchain has no AddressSanitizer")
    run = subprocess.run([str(exe), str(150 * SCALE)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " 0 failures" in run.stdout
