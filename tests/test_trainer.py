"""MetaTrainer: learning, determinism, checkpoint resume, divergence, bad config."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from metarec_fast.meta import DivergenceError, MetaTrainer  # noqa: E402
from metarec_fast.models import MetaMF  # noqa: E402

from linear_tasks import N_ITEMS, DIM, linear_tasks  # noqa: E402


def new_trainer(seed=0, algorithm="maml", **kw):
    model = MetaMF(N_ITEMS, dim=DIM, random_state=seed, dtype=torch.float64, global_bias=3.0)
    kw.setdefault("outer_lr", 0.02)
    return MetaTrainer(model, algorithm=algorithm, inner_steps=2, inner_lr=0.1,
                       meta_batch_size=16, random_state=seed, **kw)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
def test_fit_reduces_validation_loss(algorithm):
    train, val = linear_tasks(64, 0), linear_tasks(32, 1)
    trainer = new_trainer(algorithm=algorithm)
    before = trainer.validation_loss(val)
    trainer.fit(train, val, epochs=8, show_progress=False)
    assert len(trainer.history) == 8
    assert min(r["val_loss"] for r in trainer.history) < 0.8 * before
    # The best epoch's parameters are restored.
    assert trainer.validation_loss(val) == pytest.approx(trainer.best_val, rel=1e-12)


def test_same_seed_same_model():
    train = linear_tasks(40, 0)
    a = new_trainer(seed=3).fit(train, epochs=2, show_progress=False)
    b = new_trainer(seed=3).fit(train, epochs=2, show_progress=False)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    train, val = linear_tasks(40, 0), linear_tasks(16, 1)
    full = new_trainer(seed=5).fit(train, val, epochs=4, show_progress=False)
    ckpt = tmp_path / "ckpt.pt"
    new_trainer(seed=5).fit(train, val, epochs=2, show_progress=False, checkpoint=ckpt)
    resumed = new_trainer(seed=99).load_checkpoint(ckpt)
    assert resumed.epoch == 2
    resumed.fit(train, val, epochs=4, show_progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for (name, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_divergence_names_epoch_and_keeps_checkpoint(tmp_path):
    train = linear_tasks(32, 0)
    ckpt = tmp_path / "ckpt.pt"
    trainer = new_trainer(seed=1)
    trainer.fit(train, epochs=1, show_progress=False, checkpoint=ckpt)
    good = ckpt.read_bytes()
    with torch.no_grad():
        trainer.model.head_p.fill_(float("nan"))
    with pytest.raises(DivergenceError, match=r"epoch 2, step 1"):
        trainer.fit(train, epochs=3, show_progress=False, checkpoint=ckpt)
    assert ckpt.read_bytes() == good
    new_trainer(seed=1).load_checkpoint(ckpt)


def test_truncated_or_foreign_checkpoint_is_rejected(tmp_path):
    trainer = new_trainer()
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    data = path.read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.pt.*(corrupted or truncated|no header)"):
        new_trainer().load_checkpoint(tmp_path / "t.pt")
    torch.save({"something": 1}, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="not a metarec-fast checkpoint"):
        new_trainer().load_checkpoint(tmp_path / "f.pt")
    flipped = bytearray(data)
    flipped[len(data) * 2 // 3] ^= 0x01
    (tmp_path / "b.pt").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        new_trainer().load_checkpoint(tmp_path / "b.pt")
    with pytest.raises(ValueError, match="reptile"):
        new_trainer(algorithm="reptile").load_checkpoint(path)


def test_callback_can_stop_and_patience_stops():
    train, val = linear_tasks(32, 0), linear_tasks(8, 1)
    seen = []
    trainer = new_trainer().fit(train, val, epochs=5, show_progress=False,
                                callback=lambda r: seen.append(r["epoch"]) or r["epoch"] < 2)
    assert seen == [1, 2] and trainer.epoch == 2
    trainer = new_trainer().fit(train, val, epochs=10, show_progress=False, patience=2, min_delta=1e9)
    assert trainer.epoch == 3  # epoch 1 sets the best, 2 and 3 fail to beat it by min_delta


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(engine="jax"), "engine"),
        (dict(meta_batch_size=0), "meta_batch_size"),
        (dict(outer_lr=-1.0), "outer_lr"),
        (dict(clip_grad=0.0), "clip_grad"),
    ],
)
def test_bad_trainer_config(kwargs, match):
    model = MetaMF(5, dim=2)
    with pytest.raises(ValueError, match=match):
        MetaTrainer(model, **kwargs)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "metasgd"])
def test_cpp_and_torch_engines_reach_the_same_parameters(algorithm):
    train = linear_tasks(48, 0)
    a = new_trainer(seed=2, algorithm=algorithm, engine="cpp").fit(train, epochs=3, show_progress=False)
    b = new_trainer(seed=2, algorithm=algorithm, engine="torch").fit(train, epochs=3, show_progress=False)
    assert a.learner.engine == "cpp" and b.learner.engine == "torch"
    for (name, x), (_, y) in zip(a.learner.state_dict().items(), b.learner.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12, msg=name)
