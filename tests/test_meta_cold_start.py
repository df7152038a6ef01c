"""Cold-start quality features of the meta-learners, each against a slow reference:

* the amortised start (``MetaMF(support_encoder=True)``): meta-gradients of both
  engines against an unrolled per-user autograd loop with the encoder written out,
  and the numpy serving twin against the torch encoder;
* the ranking meta-objectives (sampled softmax with logQ correction, BPR) against
  per-task loops;
* task augmentation (``TaskSet.resplit``) and explicit-rating positives
  (``positive_threshold``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metarec_fast.meta import MetaLearner, MetaTrainer, TaskBatch  # noqa: E402
from metarec_fast.models import MetaMF  # noqa: E402
from metarec_fast.models import mf as mf_module  # noqa: E402
from metarec_fast.models.base import query_objective_losses  # noqa: E402
from metarec_fast import serving  # noqa: E402

D = torch.float64
N_ITEMS = 30


def make_tasks(seed, n_tasks=6, loss="mse", max_support=7):
    rng = np.random.default_rng(seed)
    support, query = [], []
    for u in range(n_tasks):
        ns = int(rng.integers(1, max_support + 1))
        nq = int(rng.integers(2, 7))
        items = rng.choice(N_ITEMS, ns + nq, replace=False)
        r = rng.integers(1, 6, ns + nq).astype(float) if loss == "mse" else rng.integers(0, 2, ns + nq).astype(float)
        if loss != "mse":
            r[0] = r[ns] = 1.0  # at least one positive on each side
        support.append((items[:ns].tolist(), r[:ns].tolist()))
        query.append((items[ns:].tolist(), r[ns:].tolist()))
    return support, query


def encoder_model(loss, seed):
    model = MetaMF(N_ITEMS, dim=4, loss=loss, random_state=seed, dtype=D, init_scale=0.5, support_encoder=True,
                   query_objective="softmax" if loss == "logistic" else "pointwise")
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        model.item_bias.normal_(generator=g)
        model.encoder.weight.normal_(std=0.3, generator=g)
        model.encoder.bias.normal_(std=0.3, generator=g)
    return model


def reference_start(model, items, targets):
    """theta_0 of one user, the encoder written out with Python sums."""
    e = model.encoder_table
    c = model.item_bias + model.global_bias
    if model.loss == "logistic":
        pos = [i for i, t in zip(items, targets) if t > 0]
        x = sum(e[i] for i in pos) / max(len(pos), 1)
    else:
        n = len(items)
        mean_e = sum(e[i] for i in items) / n
        mean_re = sum((t - c[i]) * e[i] for i, t in zip(items, targets)) / n
        shrunk = sum(t - c[i] for i, t in zip(items, targets)) / (n + mf_module.SUPPORT_SHRINK)
        x = torch.cat([mean_e, mean_re, shrunk.reshape(1)])
    shift = model.encoder.weight @ x + model.encoder.bias
    return model.head_p + shift[: model.dim], model.head_b + shift[model.dim]


def reference_meta_loss(model, support, query, steps, lr, first_order=False):
    per_task = []
    for (s_it, s_r), (q_it, q_r) in zip(support, query):
        p, b = reference_start(model, s_it, s_r)
        s_t, q_t = torch.as_tensor(s_it), torch.as_tensor(q_it)
        y_s, y_q = torch.as_tensor(s_r, dtype=D), torch.as_tensor(q_r, dtype=D)

        def predict(p, b, it):
            return model.item_embedding[it] @ p + b + model.item_bias[it] + model.global_bias

        for _ in range(steps):
            pred = predict(p, b, s_t)
            if model.loss == "mse":
                loss = ((pred - y_s) ** 2).mean()
            else:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, y_s)
            gp, gb = torch.autograd.grad(loss, (p, b), create_graph=not first_order)
            p, b = p - lr * gp, b - lr * gb
        pred = predict(p, b, q_t)
        if model.loss == "mse":
            per_task.append(((pred - y_q) ** 2).mean())
        else:  # softmax over the query entries, logQ-corrected to the catalogue
            pos = y_q > 0
            n_pos, n_neg = int(pos.sum()), int((~pos).sum())
            shift = math.log(max(N_ITEMS - n_pos, 1) / max(n_neg, 1))
            logits = torch.where(pos, pred, pred + shift)
            per_task.append((torch.logsumexp(logits, 0) - pred[pos]).mean())
    return torch.stack(per_task).mean()


@pytest.mark.parametrize("engine", ["torch", "cpp"])
@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("seed", [0, 1])
def test_support_encoder_meta_gradients_match_unrolled_autograd(engine, algorithm, loss, seed):
    model = encoder_model(loss, seed)
    support, query = make_tasks(seed, loss=loss)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    learner = MetaLearner(model, algorithm, inner_steps=3, inner_lr=0.3, engine=engine)
    params = [p for p in model.parameters()]
    ours = learner(batch)
    ref = reference_meta_loss(model, support, query, 3, 0.3, first_order=algorithm == "fomaml")
    torch.testing.assert_close(ours, ref, rtol=1e-11, atol=1e-11)
    g_ours = torch.autograd.grad(ours, params, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), g_ours, g_ref):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)
    # The encoder is really trained: its gradient is not zero.
    enc = dict(zip([n for n, _ in model.named_parameters()], g_ours))
    assert enc["encoder.weight"].abs().sum() > 0 and enc["encoder_table"].abs().sum() > 0


def test_mse_encoder_starts_at_the_shrunk_user_bias():
    model = MetaMF(N_ITEMS, dim=3, support_encoder=True, random_state=0, dtype=D)
    support, query = make_tasks(3)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    init = model.initial_adapted(("head_p", "head_b"), batch)
    for u, (items, ratings) in enumerate(support):
        resid = np.asarray(ratings) - float(model.global_bias.detach())
        expected = resid.sum() / (len(items) + mf_module.SUPPORT_SHRINK)
        assert float(init["head_b"][u].detach()) == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(init["head_p"], model.head_p.detach().expand(len(support), -1))


@pytest.mark.parametrize("loss", ["mse", "logistic"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_serving_encoder_equals_training_encoder(loss, dtype):
    model = encoder_model(loss, 4)
    support, query = make_tasks(4, loss=loss)
    support.append(([], []))  # a user with no support: pools to zeros
    query.append(([1], [1.0]))
    batch = TaskBatch.from_lists(support, query, dtype=D)
    learner = MetaLearner(model, "maml", inner_steps=2, inner_lr=0.2, engine="cpp")
    rec = serving.Recommender.from_model(model, learner, dtype=dtype)
    expected = learner.adapt(batch)
    states = rec.adapt(support)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(states.p, expected["head_p"].detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(states.b, expected["head_b"].detach().numpy(), rtol=tol, atol=tol)
    assert serving.SUPPORT_SHRINK == mf_module.SUPPORT_SHRINK


def test_encoder_bundle_round_trip(tmp_path):
    model = encoder_model("mse", 5)
    learner = MetaLearner(model, "maml", inner_steps=2, inner_lr=0.2, engine="cpp")
    rec = serving.Recommender.from_model(model, learner, dtype=np.float64)
    path = rec.save(tmp_path / "bundle.npz")
    back = serving.Recommender.load(path)
    support = [([1, 2, 3], [5.0, 1.0, 4.0]), ([7], [2.0])]
    a, b = rec.adapt(support), back.adapt(support)
    np.testing.assert_array_equal(a.p, b.p)
    np.testing.assert_array_equal(back.encoder_table, rec.encoder_table)
    with pytest.raises(ValueError, match="support"):
        back.initial_state(2)
    with pytest.raises(ValueError, match="go together"):
        serving.Recommender(rec.item_vectors, rec.item_offsets, rec.p0, 0.0, encoder_table=rec.encoder_table)
    with pytest.raises(ValueError, match="encoder_weight"):
        serving.Recommender(rec.item_vectors, rec.item_offsets, rec.p0, 0.0, encoder_table=rec.encoder_table,
                            encoder_weight=rec.encoder_weight[:, 1:], encoder_bias=rec.encoder_bias)


# ----------------------------------------------------------------- ranking objectives
def loop_objective(kind, pred, target, rows, n_tasks, n_items=None):
    out, flags = [], []
    for t in range(n_tasks):
        p, y = pred[rows == t], target[rows == t]
        pos, neg = p[y > 0], p[y <= 0]
        if kind == "softmax":
            if n_items is not None:
                shift = math.log(max(n_items - pos.numel(), 1) / max(neg.numel(), 1))
                logits = torch.cat([pos, neg + shift])
            else:
                logits = p
            lse = torch.logsumexp(logits, 0) if logits.numel() else torch.zeros((), dtype=p.dtype)
            out.append((lse - pos).mean() if pos.numel() else torch.zeros((), dtype=p.dtype))
            flags.append(float(pos.numel() > 0))
        else:
            pairs = [torch.nn.functional.softplus(n - q) for q in pos for n in neg]
            out.append(torch.stack(pairs).mean() if pairs else torch.zeros((), dtype=p.dtype))
            flags.append(float(bool(pairs)))
    return torch.stack(out), torch.tensor(flags, dtype=pred.dtype)


@pytest.mark.parametrize("kind,n_items", [("softmax", None), ("softmax", 50), ("bpr", None)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_objectives_equal_per_task_loops(kind, seed, n_items):
    rng = np.random.default_rng(seed)
    n_tasks = 5
    sizes = rng.integers(0, 8, n_tasks)
    sizes[0] = 0  # an empty task
    rows = torch.as_tensor(np.repeat(np.arange(n_tasks), sizes))
    pred = torch.as_tensor(rng.normal(size=rows.numel()) * 3, dtype=D).requires_grad_(True)
    target = torch.as_tensor(rng.integers(0, 2, rows.numel()).astype(float), dtype=D)
    ours, flags = query_objective_losses("logistic", kind, pred, target, rows, n_tasks, n_items=n_items)
    ref, ref_flags = loop_objective(kind, pred, target, rows, n_tasks, n_items)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flags, ref_flags)
    g1 = torch.autograd.grad(ours.sum(), pred)[0]
    g2 = torch.autograd.grad(ref.sum(), pred)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["softmax", "bpr"])
def test_ranking_objectives_same_on_both_engines(kind):
    support, query = make_tasks(8, loss="logistic")
    batch = TaskBatch.from_lists(support, query, dtype=D)
    losses, grads = [], []
    for engine in ("torch", "cpp"):
        model = MetaMF(N_ITEMS, dim=4, loss="logistic", query_objective=kind, random_state=8, dtype=D, init_scale=0.5)
        loss = MetaLearner(model, "maml", inner_steps=2, inner_lr=0.4, engine=engine)(batch)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-11, atol=1e-11)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_query_objective_needs_logistic_and_a_known_name():
    with pytest.raises(ValueError, match="logistic"):
        MetaMF(10, loss="mse", query_objective="softmax")
    with pytest.raises(ValueError, match="query_objective"):
        MetaMF(10, loss="logistic", query_objective="listnet")


# ----------------------------------------------------------------- task augmentation
def small_taskset(seed=0):
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split

    data = datasets.synthetic(n_users=120, n_items=40, random_state=seed)
    return cold_start_split(data, scenario="user", support=5, random_state=seed).train


@pytest.mark.parametrize("sizes", [[1], [1, 3, 20], [1000]])
def test_resplit_keeps_each_history_and_moves_the_boundary(sizes):
    tasks = small_taskset()
    out = tasks.resplit(sizes, random_state=1)
    assert len(out) == len(tasks)
    total = tasks.support.lengths + tasks.query.lengths
    np.testing.assert_array_equal(out.support.lengths + out.query.lengths, total)
    allowed = set(sizes) | set((total - 1).tolist())
    assert set(out.support.lengths.tolist()) <= allowed
    assert (out.query.lengths >= 1).all()
    for t in range(len(tasks)):
        def history(ts, name):
            s, q = ts.support, ts.query
            return np.concatenate([getattr(s, name)[s.indptr[t]:s.indptr[t + 1]],
                                   getattr(q, name)[q.indptr[t]:q.indptr[t + 1]]])
        for name in ("items", "ratings"):
            np.testing.assert_array_equal(history(out, name), history(tasks, name))
    again = tasks.resplit(sizes, random_state=1)
    np.testing.assert_array_equal(again.support.lengths, out.support.lengths)
    with pytest.raises(ValueError, match="sizes"):
        tasks.resplit([0, 2])


def test_trainer_resplits_every_epoch():
    tasks = small_taskset(1)
    model = MetaMF(tasks.n_items, dim=4, random_state=0)
    seen = []
    original = type(tasks).resplit

    def spy(self, sizes, random_state=None):
        out = original(self, sizes, random_state)
        seen.append(out.support.lengths.copy())
        return out

    type(tasks).resplit = spy
    try:
        MetaTrainer(model, "maml", inner_steps=1, support_sizes=(1, 2, 8), random_state=0).fit(
            tasks, epochs=2, show_progress=False)
    finally:
        type(tasks).resplit = original
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])
    with pytest.raises(ValueError, match="support_sizes"):
        MetaTrainer(model, "maml", support_sizes=())


def test_positive_threshold_marks_low_ratings_as_negatives():
    support = [([1, 2, 3], [5.0, 2.0, 4.0])]
    query = [([4, 5], [1.0, 4.5])]
    batch = TaskBatch.from_lists(support, query, dtype=D)
    out = batch.with_negatives(torch.tensor([[9, 10]]), None, positive_threshold=4.0)
    assert out.support_ratings.tolist() == [[1.0, 0.0, 1.0]]
    assert out.query_ratings.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert out.query_mask.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    plain = batch.with_negatives(torch.tensor([[9, 10]]), None)
    assert plain.query_ratings.tolist() == [[1.0, 1.0, 0.0, 0.0]]
