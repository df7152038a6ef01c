"""Every script in examples/ runs (with its --small sizes) in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
EXPECT = {"quickstart.py": "top-5 for the new user", "serving.py": "after one more rating",
          "melu_protocol.py": "user_item_cold"}


def test_every_example_is_tested():
    assert set(SCRIPTS) == set(EXPECT)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), "--small"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert EXPECT[script] in out.stdout


def test_serving_example_reads_a_bundle(tmp_path):
    import numpy as np

    from metarec_fast.serving import Recommender

    rng = np.random.default_rng(0)
    Recommender(rng.normal(size=(50, 4)).astype(np.float32), np.zeros(50, np.float32), np.zeros(4, np.float32),
                3.0).save(tmp_path / "b.npz")
    out = subprocess.run([sys.executable, str(EXAMPLES / "serving.py"), "--bundle", str(tmp_path / "b.npz"),
                          "--small"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "50 items, d=4" in out.stdout


def test_example_config_parses():
    from metarec_fast import cli

    args = cli.parse(["train", "--config", str(EXAMPLES / "train.toml"), "--epochs", "1"])
    assert (args.dataset, args.support, args.seeds, args.epochs, args.inner_steps) == ("movielens-100k", 10,
                                                                                       [0, 1, 2], 1, 5)
    assert args.report == "ml100k-report"
    args = cli.parse(["evaluate", "b.npz", "--config", str(EXAMPLES / "train.toml")])
    assert (args.bundles, args.support, args.algorithm, args.report) == (
        ["b.npz"], 10, ["popularity", "bias", "itemknn", "ease"], "ml100k-eval")
