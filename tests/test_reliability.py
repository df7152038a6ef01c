"""Promises that hold under stress: concurrency, interrupts, crash-safe files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from metarec_fast import metrics, ops
from metarec_fast.ops.adapt import linear_head_adapt


def _calls():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((300, 32), dtype=np.float32)
    items = rng.standard_normal((3000, 32), dtype=np.float32)
    excl = sp.random(300, 3000, density=0.01, format="csr", random_state=0)
    table = rng.standard_normal((500, 16))
    ids = rng.integers(0, 500, 2000)
    offsets = np.arange(0, 2000, 10)
    rel = sp.random(300, 3000, density=0.003, format="csr", random_state=1)
    top = ops.topk_dot(q, items, 20, exclude=excl)[0]
    support = (np.arange(0, 3001, 10), rng.integers(0, 3000, 3000), rng.integers(1, 6, 3000).astype(float))
    return {
        "topk_dot": lambda: ops.topk_dot(q, items, 20, exclude=excl)[0],
        "embedding_bag": lambda: ops.embedding_bag(table, ids, offsets, mode="mean"),
        "ranking": lambda: metrics.ranking(top, rel, ks=(5, 20)).per_query["ndcg@20"],
        "adapt": lambda: linear_head_adapt(items.astype(np.float64), np.zeros(3000), support,
                                           np.zeros(32), 0.0, steps=3).trajectory,
    }


@pytest.mark.parametrize("name", ["topk_dot", "embedding_bag", "ranking", "adapt"])
def test_eight_python_threads_give_serial_results(name):
    call = _calls()[name]
    serial = [call() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda _: call(), range(8)))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


def test_thread_count_changes_between_calls_are_safe():
    import metarec_fast as mf

    call = _calls()["topk_dot"]
    before = mf.get_num_threads()
    try:
        results = []
        for n in (1, 2, 1, 3, 2):
            mf.set_num_threads(n)
            results.append(call())
    finally:
        mf.set_num_threads(before)
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_a_long_kernel_and_the_process_stays_usable():
    """Ctrl-C stops a kernel mid-call, not at its end: the kernel polls for it between chunks.

    The bound is relative to a calibration taken in the same child process, so it holds on a
    loaded machine: the child times 1/8 of the call (``estimate`` = 8x that), the SIGINT is
    sent a quarter of the way into the first call, and it must stop within 0.25 * estimate + 0.5 s.
    Without polling it would run to the end of the call, about 0.75 * estimate later, which
    exceeds the bound whenever the call takes more than 1 s (it takes ~4 s on 2 idle cores).
    """
    code = textwrap.dedent("""
        import signal, sys, time, numpy as np
        # SIGINT's disposition and mask are inherited from the test process (SIG_IGN and a
        # blocked mask survive exec): the kernel's polling is what is tested, so restore them.
        inherited = (str(signal.getsignal(signal.SIGINT)), sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        from metarec_fast import ops
        rng = np.random.default_rng(0)
        q = rng.standard_normal((12000, 64), dtype=np.float32)
        items = rng.standard_normal((400_000, 64), dtype=np.float32)
        t = time.perf_counter()
        ops.topk_dot(q[:1500], items, 10)
        print("ready", 8 * (time.perf_counter() - t), flush=True)
        start = time.perf_counter()
        try:
            while time.perf_counter() - start < 120:  # more calls if the machine sped up
                ops.topk_dot(q, items, 10)
            print("never interrupted; inherited SIGINT handler and mask:", inherited, flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        ids, _ = ops.topk_dot(q[:2], items[:100], 3)
        print("usable", ids.shape, flush=True)
    """)
    # One retry, only for a lost signal ("never interrupted"): seen once in a CI run on a machine
    # loaded by three other jobs, not reproduced since (open question in issue 18's note). A
    # kernel that does not poll still fails the latency bound on both attempts.
    for attempt in range(2):
        line, latency, estimate, rest = _interrupt_once(code)
        if not line.startswith("never interrupted"):
            break
    assert line == "interrupted", line
    bound = 0.25 * estimate + 0.5
    assert latency < bound, f"took {latency:.2f} s to stop (bound {bound:.2f} s; one call ~{estimate:.2f} s)"
    assert "usable (2, 3)" in rest


def _interrupt_once(code: str) -> tuple[str, float, float, str]:
    """Start the child, SIGINT it a quarter into its first long call; (line, latency, estimate, rest)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    word, estimate = proc.stdout.readline().split()
    assert word == "ready"
    estimate = float(estimate)
    time.sleep(0.25 * estimate)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    line = proc.stdout.readline().strip()
    latency = time.perf_counter() - sent
    rest = proc.stdout.read()
    proc.wait(timeout=60)
    return line, latency, estimate, rest


def kill_while_saving(setup: str, save: str) -> None:
    """Run ``setup``, then ``save`` once and in a loop; SIGKILL mid-loop.

    No timing bound: the saves run back to back, so the kill lands in one of them (or between
    two) wherever the machine's load puts it, and the caller checks that the file on disk is
    then a complete earlier save, whichever moment that was."""
    code = textwrap.dedent(setup) + f"\n{save}\nprint('saved', flush=True)\nwhile True:\n    {save}\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "saved"
    time.sleep(0.7)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_during_save_keeps_the_previous_bundle(tmp_path):
    from metarec_fast.serving import Recommender

    path = tmp_path / "bundle.npz"
    kill_while_saving("""
        import numpy as np
        from metarec_fast.serving import Recommender
        rng = np.random.default_rng(0)
        rec = Recommender(rng.standard_normal((400_000, 32)).astype(np.float32),
                          np.zeros(400_000, np.float32), np.zeros(32, np.float32), 0.0)
    """, f"rec.save(r'{path}')")
    rec = Recommender.load(path)  # the last complete write, never a torn one
    assert rec.n_items == 400_000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "bundle.npz"]
    assert all(name.endswith(".tmp") for name in leftovers)


def test_repeated_calls_do_not_grow_memory():
    calls = _calls()

    def rss_mib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return 0.0

    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    for call in calls.values():
        for _ in range(50):
            call()
    before = rss_mib()
    for call in calls.values():
        for _ in range(1000):
            call()
    assert rss_mib() - before < 40, "resident memory grew by more than 40 MiB over 1,000 calls of each kernel"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_during_checkpoint_keeps_the_previous_checkpoint(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "ckpt.pt"
    setup = textwrap.dedent("""
        from metarec_fast.meta import MetaTrainer
        from metarec_fast.models import MetaMF
        trainer = MetaTrainer(MetaMF(300_000, dim=32, random_state=0), "maml")
    """)
    kill_while_saving(setup, f"trainer.save_checkpoint(r'{path}')")
    check = setup + f"\ntrainer.load_checkpoint(r'{path}')\nprint('loaded')\n"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "loaded" in out.stdout, out.stderr[-2000:]
