"""The ``metarec-fast`` command line, end to end in subprocesses on small data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from metarec_fast import cli  # noqa: E402
from metarec_fast.reports import have_matplotlib  # noqa: E402

# CI installs matplotlib (the test extra); elsewhere the plot checks are skipped.
PLOTS = have_matplotlib()

# Tiny sizes: the whole file must stay well under ~90 s on 2 cores.
SMALL = ["--n-users", "240", "--n-items", "70", "--epochs", "1", "--dim", "4", "--inner-steps", "1",
         "--quiet", "--threads", "2", "--tune", "1", "--negatives", "20", "--support-negatives", "5"]
REPORT_KEYS = {"dataset", "scenario", "support", "seeds", "results", "counts", "config", "version"}
METRIC_KEYS = {"mae", "rmse", "query_ndcg@1", "query_ndcg@3", "precision@10", "recall@10", "ndcg@10", "hr@10",
               "map@10", "mrr@10"}


def run(*args: str, cwd: Path | None = None, check: bool = True, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}import sys; from metarec_fast.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    if check:
        assert out.returncode == 0, f"exit {out.returncode}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    return out


def check_report(path: Path, plots: bool = True) -> dict:
    report = json.loads(path.read_text())  # strict JSON: NaN is written as null
    assert set(report) >= REPORT_KEYS
    assert isinstance(report["dataset"], str) and isinstance(report["scenario"], str)
    assert isinstance(report["support"], (int, str))
    assert all(isinstance(s, int) for s in report["seeds"])
    assert report["results"]
    for r in report["results"]:
        assert set(r) >= {"model", "algorithm", "metrics", "std", "train_seconds"}
        assert isinstance(r["model"], str) and (r["algorithm"] is None or isinstance(r["algorithm"], str))
        assert set(r["metrics"]) >= METRIC_KEYS and set(r["std"]) >= METRIC_KEYS
        for v in list(r["metrics"].values()) + list(r["std"].values()):
            assert v is None or (isinstance(v, float) and math.isfinite(v))
        assert isinstance(r["train_seconds"], float)
    if plots:
        import matplotlib.image as mpimg

        assert report["plots"]
        for name in report["plots"]:
            img = mpimg.imread(path.parent / name)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    return report


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `train` run (options partly from a TOML config) shared by several tests."""
    tmp = tmp_path_factory.mktemp("train")
    (tmp / "cfg.toml").write_text(
        'dataset = "synthetic"\nsupport = 4\nseeds = [0, 1]\nengine-timing = true\n'
        'sweep_ks = [1, 2, 4]\n[train]\nalgorithm = ["maml", "metasgd", "bias", "popularity"]\n'
        '[evaluate]\nreport = "never-used"\n')
    out = run("train", "--config", str(tmp / "cfg.toml"), *SMALL, "--support", "5", "--report", str(tmp / "rep"),
              cwd=tmp)
    return tmp, out


def test_train_writes_report_models_bundle(trained):
    tmp, out = trained
    rep = check_report(tmp / "rep" / "report.json", plots=PLOTS)
    assert rep["support"] == 5  # the command line wins over the config file
    assert rep["seeds"] == [0, 1] and rep["dataset"] == "synthetic"
    # Baselines first; a rating and a ranking model per meta-learner (explicit ratings).
    assert [r["model"] for r in rep["results"]] == ["bias", "popularity", "metamf-maml", "metamf-maml-rank",
                                                   "metamf-metasgd", "metamf-metasgd-rank"]
    assert {r["algorithm"] for r in rep["results"]} == {"maml", "metasgd", None}
    if PLOTS:
        assert set(rep["plots"]) == {"training_curves.png", "support_sweep.png", "epoch_time.png"}
    assert rep["support_sweep"]["ks"] == [1, 2, 4]
    assert {(r["algorithm"], r["engine"]) for r in rep["engine_timing"]} == {
        (a, e) for a in ("maml", "metasgd") for e in ("cpp", "torch")}
    assert "metamf-maml/seed1" in rep["history"]
    models = tmp / "rep" / "models"
    for name in ("metamf-maml-seed0.state.npz", "metamf-maml-seed0.npz", "metamf-metasgd-seed1.npz", "bundle.npz"):
        assert (models / name).is_file(), name
    assert "report:" in out.stdout and "ndcg@10" in out.stdout and "bundle:" in out.stdout
    # The serving bundle is the best *ranking* model; the report says how items were ranked.
    assert "bundle: " in out.stdout and "-rank" in out.stdout.split("bundle: ")[1].splitlines()[0]
    assert "ties in seeded random order" in out.stdout and "against the best baseline" in out.stdout
    from metarec_fast.meta import load_model_file

    state = load_model_file(models / "metamf-maml-seed0.state.npz")
    assert state["format"] == "metarec-fast-model" and "model.item_embedding" in state["state_dict"]


def test_recommend_matches_python_api(trained):
    from metarec_fast.serving import Recommender

    tmp, _ = trained
    bundle = tmp / "rep" / "models" / "bundle.npz"
    rec = Recommender.load(bundle)
    raw = rec.config["item_raw_ids"]
    out = run("recommend", str(bundle), "--support", f"{raw[3]}:5,{raw[10]}:1,{raw[7]}:4",
              "--support", f"ann={raw[2]}:2", "-k", "7", "--format", "json")
    got = json.loads(out.stdout)["users"]
    states = rec.adapt([([3, 10, 7], [5.0, 1.0, 4.0]), ([2], [2.0])])
    ids, scores = rec.recommend(states, k=7)
    assert [u["user"] for u in got] == ["user0", "ann"]
    for u, row_ids, row_scores in zip(got, ids, scores):
        assert u["items"] == [raw[i] for i in row_ids]
        np.testing.assert_allclose(u["scores"], row_scores, rtol=1e-6)
    # The same users from a CSV, printed as a table.
    csv = tmp / "support.csv"
    csv.write_text(f"user,item,rating\nuser0,{raw[3]},5\nuser0,{raw[10]},1\nuser0,{raw[7]},4\nann,{raw[2]},2\n")
    out = run("recommend", str(bundle), "--csv", str(csv), "-k", "7")
    lines = [line.split() for line in out.stdout.splitlines()[1:]]
    assert [int(x[2]) for x in lines[:7]] == [raw[i] for i in ids[0]]
    assert [x[0] for x in lines] == ["user0"] * 7 + ["ann"] * 7


def test_evaluate_bundle_and_baselines(trained):
    tmp, _ = trained
    bundle = tmp / "rep" / "models" / "bundle.npz"
    run("evaluate", str(bundle), "--algorithm", "bias", "--report", str(tmp / "eval"), "--sweep-ks", "1", "3",
        "--no-plots")
    rep = check_report(tmp / "eval" / "report.json", plots=False)
    assert rep["support"] == 5 and rep["dataset"] == "synthetic"  # from the bundle's training config
    assert [r["model"] for r in rep["results"]][1:] == ["bias"]
    assert rep["results"][0]["model"].startswith("metamf-")
    # The bundle on its own training split scores like the trained model did.
    train = json.loads((tmp / "rep" / "report.json").read_text())
    run_ = next(s for s in train["per_seed"] if s["seed"] == rep["seeds"][0])
    bias_train = next(r for r in run_["results"] if r["model"] == "bias")
    assert rep["results"][1]["metrics"]["rmse"] == pytest.approx(bias_train["metrics"]["rmse"])


def test_demo_runs_all_meta_learners_and_baselines(tmp_path):
    out = run("demo", *SMALL, "--n-users", "150", "--n-items", "50", "--sweep-ks", "1", "3", cwd=tmp_path)
    rep = check_report(tmp_path / "metarec-report" / "report.json", plots=PLOTS)
    names = [r["model"] for r in rep["results"]]
    assert names == ["popularity", "bias", "pretrain-finetune", "itemknn", "ease", "als"] + [
        f"metamf-{a}{s}" for a in ("maml", "fomaml", "reptile", "metasgd") for s in ("", "-rank")]
    assert rep["config"]["engine"] == "cpp"
    assert "metarec-report" in out.stdout and "pretrain-finetune" in out.stdout


def test_train_melu_and_csv_without_matplotlib(tmp_path):
    from metarec_fast import datasets

    data = datasets.synthetic(n_users=150, n_items=50, random_state=1)
    df = data.to_pandas()
    df["item"] = "m" + df["item"].astype(str)
    df.rename(columns={"user": "uid", "item": "iid", "rating": "stars"}).to_csv(tmp_path / "log.csv", index=False)
    # No matplotlib: plots are skipped with a one-line message, everything else works.
    out = run("train", "--dataset", f"csv:{tmp_path / 'log.csv'}", "--columns",
              "user=uid,item=iid,rating=stars,timestamp=timestamp", "--algorithm", "maml", "bias", *SMALL,
              "--support", "3", "--report", str(tmp_path / "rep"), "--no-engine-timing", cwd=tmp_path,
              pre="import sys; sys.modules['matplotlib'] = None; ")
    assert "plots skipped: matplotlib is not installed" in out.stdout
    rep = check_report(tmp_path / "rep" / "report.json", plots=False)
    assert rep["plots"] == [] and rep["dataset"].startswith("csv:")
    raw = run("recommend", str(tmp_path / "rep" / "models" / "bundle.npz"), "--support", "m3:5", "--format", "json")
    assert all(str(i).startswith("m") for i in json.loads(raw.stdout)["users"][0]["items"])
    # MeLU trains with the torch engine; no serving bundle for an MLP head.
    out = run("train", "--model", "melu", "--algorithm", "maml", *SMALL, "--n-users", "120", "--n-items", "40",
              "--support", "3", "--report", str(tmp_path / "melu"), "--no-plots", cwd=tmp_path)
    rep = check_report(tmp_path / "melu" / "report.json", plots=False)
    assert rep["results"][0]["model"] == "melu-maml" and rep["config"]["engine"] == "torch"
    assert "no serving bundle" in out.stdout


def test_train_on_movielens_100k(ml100k_path, tmp_path):
    home = ml100k_path.parent
    if ml100k_path.name != "ml-100k":
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "ml-100k").symlink_to(ml100k_path)
        home = tmp_path / "home"
    run("train", "--dataset", "movielens-100k", "--data-home", str(home), "--no-download", "--algorithm", "maml",
        "bias", "--epochs", "1", "--dim", "8", "--inner-steps", "2", "--quiet", "--no-engine-timing",
        "--no-plots", "--tune", "1", "--report", str(tmp_path / "rep"), cwd=tmp_path)
    rep = check_report(tmp_path / "rep" / "report.json", plots=False)
    assert rep["dataset"] == "movielens-100k"
    by = {r["model"]: r for r in rep["results"]}
    assert list(by) == ["bias", "metamf-maml", "metamf-maml-rank"]
    assert 0.5 < by["metamf-maml"]["metrics"]["rmse"] < 1.5
    assert by["metamf-maml-rank"]["metrics"]["ndcg@10"] > 0.05
    assert rep["counts"]["seed0"]["test_tasks"] > 100


def test_bench_datasets_info_version(tmp_path, ml100k_path):
    out = run("bench", "--repeats", "1", "--scale", "0.05", "--format", "json")
    rows = json.loads(out.stdout)["rows"]
    assert {r["kernel"] for r in rows} == {"topk_dot", "embedding_bag", "metrics.ranking", "adapt fwd+bwd (MAML)"}
    assert all(r["speedup"] > 0 for r in rows)
    out = run("datasets", "--data-home", str(tmp_path))
    assert "synthetic" in out.stdout and "movielens-100k" in out.stdout and "missing" in out.stdout
    if ml100k_path.name == "ml-100k":
        out = run("datasets", "--data-home", str(ml100k_path.parent))
        line = next(x for x in out.stdout.splitlines() if x.startswith("movielens-100k"))
        assert "present" in line
    assert "version" in run("info").stdout
    from metarec_fast import __version__

    assert __version__ in run("--version").stdout
    mod = subprocess.run([sys.executable, "-m", "metarec_fast", "--version"], capture_output=True, text=True)
    assert mod.returncode == 0 and __version__ in mod.stdout


# ------------------------------------------------------------------ errors: exit 2, one line
def one_line_error(args: list[str], capsys, match: str) -> str:
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and match in lines[0], lines[0]
    return lines[0]


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    one_line_error(["train", "--dataset", "foo"], capsys, "unknown dataset 'foo'; expected synthetic")
    one_line_error(["train", "--dataset", f"csv:{tmp_path / 'nope.csv'}"], capsys, "nope.csv does not exist")
    one_line_error(["train", "--dataset", "movielens-1m", "--data-home", str(tmp_path), "--no-download"], capsys,
                   f"expected {tmp_path / 'ml-1m' / 'ratings.dat'}")
    one_line_error(["recommend", str(tmp_path / "b.npz"), "--support", "1:5"], capsys, "b.npz does not exist")
    one_line_error(["evaluate", str(tmp_path / "b.npz")], capsys, "b.npz does not exist")
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--support", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--support: expected a positive integer, got '0'" in err[0]
    for bad in (["train", "--inner-lr", "-1"], ["train", "--query", "some"], ["train", "--algorithm", "sgd"],
                ["train", "--scenario", "lukewarm"], ["train", "--epochs", "x"], ["frobnicate"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(bad)
        assert exc.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1, bad
    one_line_error(["train", "--distributed"], capsys, "launch with torchrun")
    one_line_error(["train", "--model", "melu", "--engine", "cpp"], capsys, "needs --engine torch")
    one_line_error(["train", "--config", str(tmp_path / "none.toml")], capsys, "none.toml does not exist")
    (tmp_path / "bad.toml").write_text("suport = 3\n")
    one_line_error(["train", "--config", str(tmp_path / "bad.toml")], capsys, "unknown key 'suport'")
    (tmp_path / "bad2.toml").write_text("support = -3\n")
    one_line_error(["train", "--config", str(tmp_path / "bad2.toml")], capsys, "support: expected a positive")
    (tmp_path / "bad3.toml").write_text("support = [\n")
    one_line_error(["train", "--config", str(tmp_path / "bad3.toml")], capsys, "not valid TOML")
    # A split the data cannot give is a bad hyper-parameter too.
    one_line_error(["train", "--n-users", "30", "--n-items", "20", "--support", "400", "--quiet"], capsys,
                   "interactions a task needs")


def test_error_in_subprocess_and_verbose_traceback(tmp_path):
    out = run("train", "--dataset", "nope", check=False)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == ("metarec-fast: error: unknown dataset 'nope'; expected synthetic, "
                                  + ", ".join(cli.MOVIELENS_SPECS) + ", csv:PATH or parquet:PATH")
    out = run("--verbose", "recommend", str(tmp_path / "x.npz"), "--support", "1", check=False)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_config_values_are_checked_like_flags(tmp_path):
    (tmp_path / "c.toml").write_text('support = 7\nquery = "rest"\nseeds = [3, 4]\nplots = false\nquiet = true\n'
                                     'scenario = "item-cold"\n[demo]\nepochs = 9\n')
    args = cli.parse(["train", "--config", str(tmp_path / "c.toml"), "--seeds", "5"])
    # epochs: None = each objective's default (the [demo] table does not apply to train).
    assert (args.support, args.query, args.seeds, args.plots, args.quiet, args.scenario, args.epochs) == (
        7, "rest", [5], False, True, "item-cold", None)
    args = cli.parse(["demo", "--config", str(tmp_path / "c.toml")])
    assert args.epochs == 9 and args.n_users == cli.DEMO["n_users"]


def test_recut_keeps_query_fixed():
    from metarec_fast import datasets
    from metarec_fast.data import cold_start_split
    from metarec_fast.reports import recut

    data = datasets.synthetic(n_users=200, n_items=60, random_state=0)
    test = cold_start_split(data, support=5, random_state=0).test
    a, b = recut(test, 1, 8), recut(test, 8, 8)
    assert len(a) == len(b) == int(((test.support.lengths + test.query.lengths) > 8).sum())
    np.testing.assert_array_equal(a.query.items, b.query.items)
    assert set(a.support.lengths) == {1} and set(b.support.lengths) == {8}
    t = int(np.flatnonzero((test.support.lengths + test.query.lengths) > 8)[0])
    merged = np.concatenate([test.support.items[test.support.indptr[t]:test.support.indptr[t + 1]],
                             test.query.items[test.query.indptr[t]:test.query.indptr[t + 1]]])
    np.testing.assert_array_equal(b.support.items[:8], merged[:8])
    np.testing.assert_array_equal(b.query.items[:b.query.indptr[1]], merged[8:])


def test_train_loss_and_tune_flags(tmp_path):
    """--loss picks the models (rating only, ranking only with a given objective), --tune the trials;
    flags left out keep each objective's library default."""
    args = cli.parse(["train", "--loss", "softmax", "--inner-lr", "0.2"])
    from metarec_fast.cli.train import _meta_configs
    from metarec_fast.experiments import RANKING_DEFAULT, RATING_DEFAULT

    objectives, rating, ranking = _meta_configs(args)
    assert objectives == ("ranking",) and ranking.loss == "softmax" and ranking.inner_lr == 0.2
    assert ranking.negatives == RANKING_DEFAULT.negatives and rating.init == RATING_DEFAULT.init
    assert _meta_configs(cli.parse(["train"]))[0] == "auto"
    assert _meta_configs(cli.parse(["train", "--loss", "mse"]))[0] == ("rating",)
    assert cli.parse(["train"]).tune == 3 and cli.parse(["demo"]).tune == 1
    at = SMALL.index("--tune")
    small = SMALL[:at] + SMALL[at + 2:]
    run("train", *small, "--algorithm", "fomaml", "popularity", "--loss", "mse", "--tune", "2",
        "--no-support-sweep", "--no-engine-timing", "--no-plots", "--report", str(tmp_path / "a"), cwd=tmp_path)
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert [r["model"] for r in rep["results"]] == ["popularity", "metamf-fomaml"]
    trials = rep["config"]["tuning"]["metamf-fomaml"]["seed0"]
    assert len(trials) == 2
    # Flags the user gave are kept by the search; the rest is searched.
    assert all(t["config"]["dim"] == 4 and t["config"]["inner_steps"] == 1 for t in trials)
    assert "dim" in rep["config"]["tune_fixed"] and "outer_lr" not in rep["config"]["tune_fixed"]
    assert rep["config"]["search_space"]["rating"]["inner_lr"]
    run("train", *SMALL, "--algorithm", "maml", "--loss", "bpr", "--no-support-sweep", "--no-engine-timing",
        "--no-plots", "--report", str(tmp_path / "b"), cwd=tmp_path)
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [r["model"] for r in rep["results"]] == ["metamf-maml-rank"]
    assert rep["config"]["rank_meta"]["loss"] == "bpr"
    out = run("train", "--loss", "bpr", "--init", "pretrained", check=False, cwd=tmp_path)
    assert out.returncode == 2 and "--init" in out.stderr
