"""torch.distributed meta-training and sharded recommend: 2 gloo ranks on 127.0.0.1 vs one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import dist_worker  # noqa: E402

from metarec_fast.meta import MetaTrainer  # noqa: E402

WORKER = str(Path(__file__).parent / "dist_worker.py")
# Seconds: a hang guard that no test waits beyond. A launch takes 5-10 s (about 10 s on a
# loaded 2-core machine, mostly importing torch twice); a rank left waiting on a dead peer
# gives up after the process group's timeout (PG_TIMEOUT in dist_worker.py), so a run that
# fails instead of hanging always ends well before LIMIT, however busy the machine.
LIMIT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario, out, *args, world=2):
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, WORKER, scenario, str(r), str(world), port, str(out), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for r in range(world)]
    start, results = time.monotonic(), []
    try:
        for p in procs:
            left = max(LIMIT - (time.monotonic() - start), 1)
            stdout, stderr = p.communicate(timeout=left)
            results.append((p.returncode, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results, time.monotonic() - start


CASES = [("cpp", "maml", "task"), ("torch", "maml", "task"), ("cpp", "metasgd", "interaction"),
         ("torch", "reptile", "task"), ("cpp", "fomaml", "interaction"), ("implicit-cpp", "maml", "task"),
         ("implicit-torch", "reptile", "interaction"), ("cpp-mb1", "maml", "task")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """All CASES trained once by 2 ranks (one launch keeps the suite fast)."""
    out = tmp_path_factory.mktemp("dist-train")
    results, _ = launch("train", out, *[":".join(c) for c in CASES])
    for rank, (rc, err) in enumerate(results):
        assert rc == 0, f"rank {rank}: {err[-3000:]}"
    return out


@pytest.mark.parametrize("engine,algorithm,weighting", CASES)
def test_two_ranks_equal_one_process(trained, engine, algorithm, weighting):
    case = f"{engine}:{algorithm}:{weighting}"
    got = torch.load(trained / f"result-{case}.pt", weights_only=True)
    single = dist_worker.make_trainer(MetaTrainer, engine, algorithm, weighting)
    single.fit(*dist_worker.data_for(engine), epochs=2, show_progress=False)
    for name, ref in single.learner.state_dict().items():
        torch.testing.assert_close(got["state"][name], ref, rtol=1e-10, atol=1e-12, msg=name)
    np.testing.assert_allclose([r["train_loss"] for r in got["history"]],
                               [r["train_loss"] for r in single.history], rtol=1e-10)
    # Rank 0's checkpoint resumes in a single process (any number of ranks).
    resumed = dist_worker.make_trainer(MetaTrainer, engine, algorithm, weighting).load_checkpoint(
        trained / f"ckpt-{case}.pt")
    assert resumed.epoch == 2


def test_sharded_recommend_equals_single_process(tmp_path):
    results, _ = launch("recommend", tmp_path)
    for rank, (rc, err) in enumerate(results):
        assert rc == 0, f"rank {rank}: {err[-3000:]}"
    import scipy.sparse as sp

    from metarec_fast.distributed import recommend_sharded
    from metarec_fast.models import MetaMF
    from metarec_fast.serving import Recommender

    model = MetaMF(dist_worker.N_ITEMS, dim=dist_worker.DIM, random_state=0, dtype=torch.float64, global_bias=3.0)
    rec = Recommender.from_model(model, dtype=np.float64)
    support = sp.random(23, dist_worker.N_ITEMS, density=0.1, format="csr", random_state=0, dtype=np.float64)
    ids, scores = rec.recommend(rec.adapt(support), k=7)
    got = np.load(tmp_path / "gathered.npz")
    np.testing.assert_array_equal(got["ids"], ids)
    np.testing.assert_array_equal(got["scores"], scores)
    shards = [np.load(tmp_path / "shards" / f"shard-{r:05d}.npz") for r in range(2)]
    assert [len(s["users"]) for s in shards] == [11, 12]
    users = np.concatenate([s["users"] for s in shards])
    np.testing.assert_array_equal(users, np.arange(23))
    np.testing.assert_array_equal(np.concatenate([s["ids"] for s in shards]), ids)
    # Without a process group it is the single-process result.
    np.testing.assert_array_equal(recommend_sharded(rec, support, k=7)[0], ids)


def test_rank_that_raises_fails_the_run(tmp_path):
    results, seconds = launch("raise", tmp_path)
    (rc0, err0), (rc1, err1) = results
    assert rc0 != 0 and rc1 != 0
    assert "RemoteRankError" in err0 and "rank(s) [1] failed" in err0
    assert "boom on rank 1" in err1
    assert seconds < LIMIT


def test_rank_that_dies_fails_the_others_within_the_timeout(tmp_path):
    results, seconds = launch("die", tmp_path)
    (rc0, err0), (rc1, _) = results
    assert rc1 == 3
    assert rc0 != 0, err0
    assert seconds < LIMIT


def test_rank_that_fails_the_start_up_checks_stops_the_others(tmp_path):
    results, seconds = launch("startup-error", tmp_path)
    (rc0, err0), (rc1, err1) = results
    assert rc0 != 0 and rc1 != 0
    assert "ValueError: epochs must be an int >= 0, got -1" in err1
    assert "RemoteRankError" in err0 and "rank 1: ValueError: epochs must be an int >= 0" in err0
    # RemoteRankError (not a gloo timeout) on rank 0: it learnt of rank 1's error at once.
    assert "Timed out" not in err0 and seconds < LIMIT


def test_shutdown_without_a_process_group_does_nothing():
    from metarec_fast.distributed import DistributedSetupError, distributed_session, shutdown

    shutdown()
    shutdown(barrier=False)
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        with pytest.raises(DistributedSetupError, match="launch with torchrun"):
            with distributed_session():
                pass
    finally:
        os.environ.update(env)


def test_session_in_one_process_leaves_the_group(tmp_path):
    from metarec_fast.distributed import distributed_session

    with distributed_session(init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1, timeout=5) as rw:
        assert rw == (0, 1) and dist.is_initialized()
    assert not dist.is_initialized()
    with pytest.raises(KeyError):
        with distributed_session(init_method=f"file://{tmp_path / 'store2'}", rank=0, world_size=1, timeout=5):
            raise KeyError("inside")
    assert not dist.is_initialized()


def test_mismatched_data_is_detected_at_start_up(tmp_path):
    results, _ = launch("mismatch", tmp_path)
    for rc, err in results:
        assert rc != 0
        assert "differs across ranks" in err and "train content" in err


def test_trainer_needs_a_process_group():
    from metarec_fast.distributed import DistributedMetaTrainer
    from metarec_fast.models import MetaMF

    with pytest.raises(RuntimeError, match="not initialised"):
        DistributedMetaTrainer(MetaMF(10, dim=2, random_state=0))


def test_cli_train_distributed_under_torchrun(tmp_path):
    port = str(free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr", "127.0.0.1",
           "--master-port", port, "-m", "metarec_fast", "train", "--distributed", "--dist-timeout", "30",
           "--algorithm", "maml", "--n-users", "120", "--n-items", "40", "--epochs", "1", "--dim", "3",
           "--inner-steps", "1", "--quiet", "--threads", "1", "--no-plots", "--no-support-sweep",
           "--no-engine-timing", "--no-save-models", "--report", str(tmp_path / "rep")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["config"]["world_size"] == 2
    assert out.stdout.count("report:") == 1  # only rank 0 writes and prints


def test_cli_distributed_without_torchrun_is_a_clear_error(tmp_path):
    code = "import sys; from metarec_fast.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    out = subprocess.run([sys.executable, "-c", code, "train", "--distributed", "--quiet"], capture_output=True,
                         text=True, timeout=LIMIT, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "torchrun" in out.stderr
