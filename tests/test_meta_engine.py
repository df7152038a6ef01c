"""The torch.func inner-loop engine and the meta-learning algorithms, against
explicitly unrolled per-user autograd loops (float64)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metarec_fast.meta import MetaLearner, TaskBatch, adapt  # noqa: E402
from metarec_fast.models import MetaMF  # noqa: E402

D = torch.float64


def make_tasks(seed, n_tasks=5, n_items=30, loss="mse", max_support=7, empty_query=False):
    rng = np.random.default_rng(seed)
    support, query = [], []
    for u in range(n_tasks):
        ns = int(rng.integers(1, max_support + 1))
        nq = 0 if (empty_query and u == 0) else int(rng.integers(1, 6))
        items = rng.choice(n_items, ns + nq, replace=False)
        if loss == "mse":
            r = rng.integers(1, 6, ns + nq).astype(float)
        else:
            r = rng.integers(0, 2, ns + nq).astype(float)
        support.append((items[:ns].tolist(), r[:ns].tolist()))
        query.append((items[ns:].tolist(), r[ns:].tolist()))
    return support, query


def unrolled_meta_loss(model, support, query, steps, lr, l2, first_order=False, lrs=None, feats=None):
    """One user at a time, the way a learn2learn user writes it: create_graph=True."""
    losses = []
    for u, ((s_it, s_r), (q_it, q_r)) in enumerate(zip(support, query)):
        p, b = model.head_p, model.head_b
        if feats is not None:
            shift = model.init_net(feats[u])
            p, b = p + shift[: model.dim], b + shift[model.dim]
        s_it = torch.as_tensor(s_it)
        s_r = torch.as_tensor(s_r, dtype=D)

        def predict(p, b, it):
            return model.item_embedding[it] @ p + b + model.item_bias[it] + model.global_bias

        def pw(pred, y):
            if model.loss == "mse":
                return (pred - y) ** 2
            return torch.nn.functional.binary_cross_entropy_with_logits(pred, y, reduction="none")

        for _ in range(steps):
            loss = pw(predict(p, b, s_it), s_r).mean() + 0.5 * l2 * (p**2).sum()
            gp, gb = torch.autograd.grad(loss, (p, b), create_graph=not first_order)
            lp, lb = (lrs if lrs is not None else (lr, lr))
            p, b = p - lp * gp, b - lb * gb
        if len(q_it):
            q_pred = predict(p, b, torch.as_tensor(q_it))
            losses.append(pw(q_pred, torch.as_tensor(q_r, dtype=D)).mean())
    return torch.stack(losses).mean()


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


ENGINES = ["torch", "cpp"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_maml_second_order_matches_unrolled_autograd(seed, steps, loss, engine):
    model = MetaMF(30, dim=4, loss=loss, random_state=seed, dtype=D, init_scale=0.5)
    with torch.no_grad():
        model.item_bias.normal_(generator=torch.Generator().manual_seed(seed))
    support, query = make_tasks(seed, loss=loss, empty_query=True)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    learner = MetaLearner(model, "maml", inner_steps=steps, inner_lr=0.3, l2=0.05, engine=engine)
    params = list(model.parameters())
    ours = learner(batch)
    ref = unrolled_meta_loss(model, support, query, steps, 0.3, 0.05)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for g_ours, g_ref in zip(grads(ours, params), grads(ref, params)):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_conditioned_initialisation_gradients_match(engine):
    model = MetaMF(30, dim=4, user_feature_dim=3, random_state=3, dtype=D)
    with torch.no_grad():
        model.init_net.weight.normal_(generator=torch.Generator().manual_seed(1))
    support, query = make_tasks(3)
    feats = torch.randn(len(support), 3, dtype=D, generator=torch.Generator().manual_seed(2))
    batch = TaskBatch.from_lists(support, query, dtype=D)
    batch.user_features = feats
    learner = MetaLearner(model, "maml", inner_steps=2, inner_lr=0.2, engine=engine)
    params = list(model.parameters())
    ours = learner(batch)
    ref = unrolled_meta_loss(model, support, query, 2, 0.2, 0.0, feats=feats)
    for g_ours, g_ref in zip(grads(ours, params), grads(ref, params)):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)
    assert any(p is model.init_net.weight for p in params)


@pytest.mark.parametrize("engine", ENGINES)
def test_first_order_matches_detached_reference_and_differs_from_maml(engine):
    model = MetaMF(30, dim=4, random_state=5, dtype=D, init_scale=0.5)
    support, query = make_tasks(5)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    params = list(model.parameters())
    fo = MetaLearner(model, "fomaml", inner_steps=3, inner_lr=0.3, engine=engine)(batch)
    so = MetaLearner(model, "maml", inner_steps=3, inner_lr=0.3, engine=engine)(batch)
    ref = unrolled_meta_loss(model, support, query, 3, 0.3, 0.0, first_order=True)
    g_fo, g_so, g_ref = grads(fo, params), grads(so, params), grads(ref, params)
    for a, b in zip(g_fo, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # The item table enters the Hessian of the support loss: the two must differ there.
    assert not torch.allclose(g_fo[0], g_so[0], rtol=1e-6, atol=1e-9)
    assert not torch.allclose(g_fo[3], g_so[3], rtol=1e-6, atol=1e-9)  # head_p


@pytest.mark.parametrize("engine", ENGINES)
def test_metasgd_learning_rates_get_exact_gradients(engine):
    model = MetaMF(30, dim=4, random_state=7, dtype=D, init_scale=0.5)
    support, query = make_tasks(7)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    learner = MetaLearner(model, "metasgd", inner_steps=2, inner_lr=0.2, engine=engine)
    with torch.no_grad():
        learner.inner_lrs[0].uniform_(0.1, 0.4, generator=torch.Generator().manual_seed(0))
    loss = learner(batch)
    loss.backward()
    lr_p, lr_b = learner.inner_lrs
    assert lr_p.grad is not None and lr_p.grad.abs().sum() > 0
    assert lr_b.grad is not None and lr_b.grad.abs() > 0
    # Against the unrolled loop with the same per-parameter rates.
    lp = lr_p.detach().clone().requires_grad_(True)
    lb = lr_b.detach().clone().requires_grad_(True)
    ref = unrolled_meta_loss(model, support, query, 2, None, 0.0, lrs=(lp, lb))
    g_ref = torch.autograd.grad(ref, (lp, lb))
    torch.testing.assert_close(lr_p.grad, g_ref[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lr_b.grad, g_ref[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_reptile_update_rule(engine):
    model = MetaMF(30, dim=4, random_state=9, dtype=D, init_scale=0.5)
    support, query = make_tasks(9)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    learner = MetaLearner(model, "reptile", inner_steps=3, inner_lr=0.2, engine=engine)
    theta_t = learner.adapt(batch)
    expected_p = model.head_p.detach() + 0.5 * (theta_t["head_p"].detach().mean(0) - model.head_p.detach())
    expected_b = model.head_b.detach() + 0.5 * (theta_t["head_b"].detach().mean(0) - model.head_b.detach())
    body_before = model.item_embedding.detach().clone()
    opt = torch.optim.SGD([model.head_p, model.head_b], lr=0.5)
    learner.meta_backward(batch)
    opt.step()
    torch.testing.assert_close(model.head_p.detach(), expected_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.head_b.detach(), expected_b, rtol=1e-12, atol=1e-12)
    # The body got the first-order query gradient but was not stepped by this optimiser.
    assert model.item_embedding.grad is not None
    assert torch.equal(model.item_embedding.detach(), body_before)


def test_head_only_adaptation_leaves_body_untouched():
    model = MetaMF(30, dim=4, random_state=11, dtype=D)
    before = copy.deepcopy(model.state_dict())
    support, query = make_tasks(11)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    adapted = adapt(model, batch, steps=4, inner_lr=0.5)
    assert set(adapted) == {"head_p", "head_b"}
    assert adapted["head_p"].shape == (len(support), 4)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    # Adapting another subset (the item biases, say) is also allowed.
    adapted = adapt(model, batch, steps=1, inner_lr=0.5, names=("item_bias",))
    assert adapted["item_bias"].shape == (len(support), 30)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
@pytest.mark.parametrize("engine", ENGINES)
def test_algorithms_recover_linear_users(algorithm, engine):
    """Users rate by a linear model over fixed item vectors: the meta-learned start must
    approach the users' centre, and adaptation must approach each user's truth."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_items, d = 200, 3
    model = MetaMF(n_items, dim=d, random_state=0, dtype=D)
    H = torch.as_tensor(rng.normal(size=(n_items, d)))
    center = torch.tensor([1.0, -0.5, 0.25], dtype=D)
    with torch.no_grad():
        model.item_embedding.copy_(H)
        model.head_p.zero_()
    model.item_embedding.requires_grad_(False)
    model.item_bias.requires_grad_(False)
    model.global_bias.requires_grad_(False)

    def tasks(n, seed):
        g = np.random.default_rng(seed)
        truth = center.numpy() + 0.3 * g.normal(size=(n, d))
        sup, qry = [], []
        for p in truth:
            items = g.choice(n_items, 25, replace=False)
            r = H.numpy()[items] @ p
            sup.append((items[:10].tolist(), r[:10].tolist()))
            qry.append((items[10:].tolist(), r[10:].tolist()))
        return TaskBatch.from_lists(sup, qry, dtype=D), torch.as_tensor(truth)

    learner = MetaLearner(model, algorithm, inner_steps=3, inner_lr=0.1, engine=engine)
    params = [model.head_p, model.head_b]
    if learner.inner_lrs is not None:
        params += list(learner.inner_lrs)
    opt = torch.optim.Adam(params, lr=0.05)
    for step in range(150):
        batch, _ = tasks(16, step)
        opt.zero_grad()
        learner.meta_backward(batch)
        opt.step()
    torch.testing.assert_close(model.head_p.detach(), center, atol=0.15, rtol=0)
    test, truth = tasks(50, 10_000)
    err_init = (model.head_p.detach() - truth).norm(dim=1).mean()
    # Meta-SGD's learned rates are tuned for the trained number of steps; the
    # others use a fixed small rate, so more steps only help them.
    steps = learner.inner_steps if algorithm == "metasgd" else 20
    err_adapted = (learner.adapt(test, steps=steps)["head_p"].detach() - truth).norm(dim=1).mean()
    assert err_adapted < 0.5 * err_init


def test_deterministic_for_a_seed():
    out = []
    for _ in range(2):
        model = MetaMF(30, dim=4, random_state=42)
        support, query = make_tasks(42)
        batch = TaskBatch.from_lists(support, query)
        learner = MetaLearner(model, "maml", inner_steps=2)
        learner.meta_backward(batch)
        out.append(model.item_embedding.grad.clone())
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(algorithm="sgd"), "algorithm"),
        (dict(inner_steps=-1), "inner_steps"),
        (dict(inner_steps=1.5), "inner_steps"),
        (dict(algorithm="reptile", inner_steps=0), "reptile"),
        (dict(inner_lr=0.0), "inner_lr"),
        (dict(l2=-1.0), "l2"),
        (dict(adapt=("user_head",)), "user_head"),
        (dict(engine="gpu"), "engine"),
        (dict(adapt=("head_p",), engine="cpp"), "engine='torch'"),
    ],
)
def test_misconfiguration_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaLearner(MetaMF(10, dim=2), **kwargs)


def test_model_validation():
    with pytest.raises(ValueError, match="n_items"):
        MetaMF(0)
    with pytest.raises(ValueError, match="loss"):
        MetaMF(5, loss="hinge")
    with pytest.raises(ValueError, match="tasks"):
        TaskBatch(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), torch.ones(2, 3),
                  torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 1), torch.ones(3, 1))


def make_melu(seed, loss="mse"):
    from metarec_fast.models import MeLU

    rng = np.random.default_rng(seed)
    n_items = 30
    item_cat = np.stack([rng.integers(0, 4, n_items), rng.integers(0, 6, n_items)], axis=1)
    lengths = rng.integers(0, 4, n_items)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    codes = rng.integers(0, 5, indptr[-1])
    return MeLU(item_cat, (4, 6), (2, 7), item_multi=(indptr, codes), multi_cardinality=5,
                embedding_dim=3, hidden=(5, 4), loss=loss, random_state=seed, dtype=D)


@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_generic_engine_on_melu_matches_unrolled_autograd(loss):
    from torch.func import functional_call

    model = make_melu(0, loss)
    support, query = make_tasks(4, loss=loss)
    batch = TaskBatch.from_lists(support, query, dtype=D)
    ufeat = torch.stack([torch.tensor([u % 2, u % 7]) for u in range(len(support))])
    batch.user_features = ufeat
    learner = MetaLearner(model, "maml", inner_steps=2, inner_lr=0.1, l2=0.01)
    ours = learner(batch)
    names = learner.adapted_names
    assert names and all(n.startswith(("decision.", "out.")) for n in names)
    params = dict(model.named_parameters())
    kind = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.binary_cross_entropy_with_logits
    losses = []
    for u, ((s_it, s_r), (q_it, q_r)) in enumerate(zip(support, query)):
        head = {n: params[n] for n in names}
        for _ in range(2):
            pred = functional_call(model, head, (torch.as_tensor(s_it),), {"user_features": ufeat[u]})
            l = kind(pred, torch.as_tensor(s_r, dtype=D))
            l = l + 0.005 * sum((head[n] ** 2).sum() for n in model.penalised_names)
            g = torch.autograd.grad(l, list(head.values()), create_graph=True)
            head = {n: head[n] - 0.1 * gi for n, gi in zip(names, g)}
        pred = functional_call(model, head, (torch.as_tensor(q_it),), {"user_features": ufeat[u]})
        losses.append(kind(pred, torch.as_tensor(q_r, dtype=D)))
    ref = torch.stack(losses).mean()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    plist = list(params.values())
    for a, b in zip(grads(ours, plist), grads(ref, plist)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_melu_validates_features():
    from metarec_fast.models import MeLU

    with pytest.raises(ValueError, match="item_categorical"):
        MeLU(np.zeros((5, 2), dtype=int), (3,), (2,))
    with pytest.raises(IndexError, match="column 0"):
        MeLU(np.full((5, 1), 3), (3,), (2,))
    model = make_melu(1)
    with pytest.raises(ValueError, match="user_features"):
        model(torch.tensor([1, 2]))


def test_melu_from_dataset_features_trains_and_scores():
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split
    from metarec_fast.meta import MetaScorer, MetaTrainer
    from metarec_fast.models import MeLU

    data = datasets.synthetic(n_users=200, n_items=60, n_interactions=5000, random_state=0)
    model, codes = MeLU.from_features(data.item_features, data.user_features, embedding_dim=4,
                                      hidden=(8,), rating_offset=3.0, random_state=0)
    assert codes.shape == (data.n_users, len(data.user_features.categorical))
    assert model.n_items == data.n_items
    train, val, test = cold_start_split(data, support=5, random_state=0)
    trainer = MetaTrainer(model, "maml", inner_steps=1, inner_lr=0.01, outer_lr=0.01,
                          user_features=codes, engine="auto", random_state=0)
    assert trainer.learner.engine == "torch"  # MeLU is not a linear head
    before = trainer.validation_loss(val)
    trainer.fit(train, val, epochs=2, show_progress=False)
    assert trainer.best_val < before
    scores = MetaScorer(trainer).score(test.subset([0, 1, 2]))
    assert scores.shape == (3, data.n_items) and np.isfinite(scores).all()


def test_cpp_engine_per_batch_caches_are_exact():
    """The C++ engine caches the CSR arrays and query counts on the batch: a
    repeated meta-gradient on one batch, a batch built afresh and the other
    dtype all give the same results as a first call."""
    from metarec_fast.meta.cpp_engine import batch_to_csr

    support, query = make_tasks(3, n_tasks=6, empty_query=True)

    def meta_grads(batch, dtype):
        model = MetaMF(30, dim=4, random_state=0, global_bias=3.0).to(dtype)
        learner = MetaLearner(model, "metasgd", inner_steps=2, inner_lr=0.1, engine="cpp")
        loss = learner(batch)
        return [loss.detach()] + list(torch.autograd.grad(loss, [p for p in learner.parameters()
                                                                 if p.requires_grad], allow_unused=True))

    batch = TaskBatch.from_lists(support, query, dtype=D)
    first = meta_grads(batch, D)
    assert batch_to_csr(batch, D) is batch_to_csr(batch, D)
    for again in (meta_grads(batch, D), meta_grads(TaskBatch.from_lists(support, query, dtype=D), D)):
        for a, b in zip(first, again):
            assert (a is None and b is None) or torch.equal(a, b)
    f32 = meta_grads(batch, torch.float32)  # the other dtype rebuilds its arrays
    assert batch_to_csr(batch, torch.float32)[0]["q_targets"].dtype == np.float32
    fresh32 = meta_grads(TaskBatch.from_lists(support, query, dtype=D), torch.float32)
    for a, b in zip(f32, fresh32):
        assert (a is None and b is None) or torch.equal(a, b)
