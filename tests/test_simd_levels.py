"""Every SIMD level the CPU supports, forced the way a user would force it
(METAREC_SIMD in a fresh interpreter: the level is read once per process),
gives the same results through the public API: embedding bags bit-identical
to the generic level and to a numpy reference, top-k ids identical across the
FMA levels and (here, without near-ties) to the generic level."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from metarec_fast import _core
from metarec_fast._config import config

LEVELS = ["generic", "avx2", "avx512"]
SUPPORTED = LEVELS[: LEVELS.index(_core.simd_detected()) + 1]

# Runs in a subprocess with METAREC_SIMD set: writes every result to an .npz.
WORKER = r"""
import sys
import numpy as np
from metarec_fast._config import config
from metarec_fast import _core, ops

rng = np.random.default_rng(5)
out = {"level": np.array(_core.simd_level()), "emb_level": np.array(_core.embedding_simd_level()),
       "simd_kernels": np.array(config()["simd_kernels"])}
for dtype in (np.float32, np.float64):
    name = np.dtype(dtype).name
    for d in (3, 16, 64, 100, 259):
        table = rng.standard_normal((500, d)).astype(dtype)
        sizes = rng.integers(0, 30, 60)
        ids = rng.integers(0, 500, int(sizes.sum()))
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        weights = rng.standard_normal(len(ids)).astype(dtype)
        for mode, w in (("sum", None), ("mean", None), ("weighted", weights)):
            m = "mean" if mode == "mean" else "sum"
            key = f"{name}-{d}-{mode}"
            out[f"table-{key}"], out[f"ids-{key}"], out[f"offsets-{key}"] = table, ids, offsets
            out[f"weights-{key}"] = weights if w is not None else np.zeros(0, dtype)
            out[f"bag-{key}"] = ops.embedding_bag(table, ids, offsets, w, m, num_threads=2)
    q = rng.standard_normal((40, 32)).astype(dtype)
    items = rng.standard_normal((900, 32)).astype(dtype)
    ids, vals = ops.topk_dot(q, items, 10, num_threads=2)
    out[f"q-{name}"], out[f"items-{name}"] = q, items
    out[f"topk_ids-{name}"], out[f"topk_vals-{name}"] = ids, vals
np.savez(sys.argv[1], **out)
"""


def np_bag(table, ids, offsets, weights, mode):
    """Sequential per-bag sum in the table's dtype (multiply, then add)."""
    d = table.shape[1]
    res = np.zeros((len(offsets), d), table.dtype)
    ends = np.append(offsets[1:], len(ids))
    for b, (s, e) in enumerate(zip(offsets, ends)):
        acc = np.zeros(d, table.dtype)
        for j in range(s, e):
            acc = acc + (table[ids[j]] if weights is None else weights[j] * table[ids[j]])
        if mode == "mean" and e > s:
            acc = acc * (table.dtype.type(1) / table.dtype.type(e - s))
        res[b] = acc
    return res


@pytest.fixture(scope="module")
def per_level(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("simd")
    results = {}
    for level in SUPPORTED:
        path = tmp / f"{level}.npz"
        env = {**os.environ, "METAREC_SIMD": level}
        proc = subprocess.run([sys.executable, "-c", WORKER, str(path)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        with np.load(path) as z:
            results[level] = {k: z[k] for k in z.files}
    return results


def test_forced_level_is_used_and_reported(per_level):
    for level, r in per_level.items():
        assert str(r["level"]) == level
        emb = str(r["emb_level"])
        assert LEVELS.index(emb) <= LEVELS.index(level)
        assert f"topk={level}" in str(r["simd_kernels"])
        assert f"embedding_bag={emb}" in str(r["simd_kernels"])
    assert str(per_level["generic"]["emb_level"]) == "generic"


def test_embedding_bag_identical_across_levels_and_to_numpy(per_level):
    generic = per_level["generic"]
    keys = [k for k in generic if k.startswith("bag-")]
    assert len(keys) == 2 * 5 * 3
    for key in keys:
        case = key[len("bag-"):]
        w = generic[f"weights-{case}"]
        mode = case.rsplit("-", 1)[1]
        ref = np_bag(generic[f"table-{case}"], generic[f"ids-{case}"], generic[f"offsets-{case}"],
                     w if mode == "weighted" else None, "mean" if mode == "mean" else "sum")
        for level, r in per_level.items():
            assert r[key].dtype == ref.dtype
            assert r[key].tobytes() == generic[key].tobytes(), (level, case)
            assert r[key].tobytes() == ref.tobytes(), (level, case)


def test_topk_dot_ids_identical_across_levels(per_level):
    # Scores come back as float32 for both input dtypes.
    for name, rtol in (("float32", 1e-5), ("float64", 1e-6)):
        generic = per_level["generic"]
        exact = generic[f"q-{name}"].astype(np.float64) @ generic[f"items-{name}"].astype(np.float64).T
        ref_ids = np.argsort(-exact, axis=1, kind="stable")[:, :10]
        for level, r in per_level.items():
            # Random normal data: no near-ties at the top, so every level
            # (generic multiply+add, FMA levels fused) picks the same ids.
            np.testing.assert_array_equal(r[f"topk_ids-{name}"], ref_ids, err_msg=level)
            np.testing.assert_allclose(r[f"topk_vals-{name}"], np.take_along_axis(exact, ref_ids, 1),
                                       rtol=rtol)
        fused = [lv for lv in per_level if lv != "generic"]
        for level in fused[1:]:
            assert per_level[level][f"topk_vals-{name}"].tobytes() == \
                per_level[fused[0]][f"topk_vals-{name}"].tobytes()


def test_bad_environment_level_is_a_value_error_on_first_use():
    code = ("import numpy as np; from metarec_fast import ops; "
            "ops.embedding_bag(np.ones((3, 2), np.float32), [0, 1], [0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "METAREC_SIMD": "sse9"}, timeout=60)
    assert proc.returncode != 0 and "ValueError" in proc.stderr and "sse9" in proc.stderr


def test_config_reports_every_kernel_family():
    kernels = config()["simd_kernels"]
    for area in ("topk=", "adapt=", "embedding_bag="):
        assert area in kernels
    assert f"embedding_bag={_core.embedding_simd_level()}" in kernels
