"""Fuzzing the ``metarec-fast`` command line: random argument lists and TOML configs.

Every call of the in-process entry point ``metarec_fast.cli.main(argv)`` ends
with exit code 0, or 2 with exactly one line on stderr ("metarec-fast: error:
..." or argparse's usage line) -- never a traceback, never the "internal
error" exit 1 that marks a bug. The argument and config parsing is fuzzed with
the commands replaced by stubs (fast, and it reaches every flag); the cheap
commands (recommend, evaluate up to loading, datasets, info) and a tiny train
run for real. METAREC_FUZZ_SCALE multiplies the number of examples.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

pytest.importorskip("torch")

from fuzzing import examples  # noqa: E402
from metarec_fast import cli  # noqa: E402
from metarec_fast.serving import Recommender  # noqa: E402

SUBCOMMANDS = list(cli.COMMANDS)


def fuzz(n):
    return settings(max_examples=examples(n), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def flags_of(command: str) -> list[str]:
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    # --verbose is left out: it shows tracebacks on purpose (tests/test_cli.py checks that).
    return sorted(s for s in sub._option_string_actions if s not in ("-h", "--help", "-v", "--verbose"))


FLAGS = {c: flags_of(c) for c in SUBCOMMANDS}
ALL_FLAGS = sorted({f for fs in FLAGS.values() for f in fs})

# Values that are wrong for some flag: negative, zero, huge, non-finite, non-numeric, unicode, empty.
VALUE = st.one_of(
    st.sampled_from(["0", "1", "-1", "3", "0.5", "1e400", "nan", "inf", "-inf", "", " ", "rest", "x", "1,2",
                     "\u2603", "99999999999999999999", "-0", "1e-300", "maml", "bias", "mf", "melu", "cpp", "torch",
                     "user-cold", "json", "table", "synthetic", "csv:", "parquet:/nope", "movielens-100k",
                     "user=a,item", "=", "--", "-", "a:b", "1:nan", ":", "u=1:2,3:4"]),
    st.integers(-5, 10**20).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)


def call(argv):
    """main(argv) -> (exit code, stdout, stderr), with SystemExit from argparse turned into its code."""
    if currently_in_test_context():  # plain regression tests call this too
        assume(not any(a == "-v" or a.startswith("--verb") for a in argv))  # --verbose: tracebacks on purpose
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code, out.getvalue(), err.getvalue()


def check(argv, code, stdout, stderr):
    if currently_in_test_context():
        event(f"exit {code}" + (f": {stderr[:100]}" if code == 2 else ""))  # pytest --hypothesis-show-statistics shows how many runs got through
    assert code in (0, 2), f"exit {code} for {argv!r}: {stderr[-2000:]}"
    assert "Traceback" not in stderr, f"{argv!r}: {stderr[-2000:]}"
    if code == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, f"{argv!r}: {stderr[-2000:]}"
        assert lines[0].startswith("metarec-fast"), lines[0]


@pytest.fixture
def stubbed(monkeypatch):
    """Every command replaced by a stub: the fuzzing reaches parsing and config handling only."""
    for name in SUBCOMMANDS:
        monkeypatch.setitem(cli.COMMANDS, name, lambda args: 0)


@st.composite
def argv_lists(draw):
    command = draw(st.sampled_from(SUBCOMMANDS + ["frobnicate", "", "--version", "--help"]))
    argv = [command] if command else []
    flags = FLAGS.get(command, ALL_FLAGS)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind < 5:
            argv.append(draw(st.sampled_from(flags)))
            for _ in range(draw(st.integers(0, 2))):
                argv.append(draw(VALUE))
        elif kind < 7:
            argv.append(draw(st.sampled_from(flags)) + "=" + draw(VALUE))
        elif kind < 8:
            argv.append(draw(st.sampled_from(ALL_FLAGS)))  # a flag of another command
        else:
            argv.append(draw(VALUE))  # a stray positional
    return argv


@fuzz(100)
@given(argv=argv_lists())
def test_random_argument_lists(stubbed, argv):
    code, stdout, stderr = call(argv)
    check(argv, code, stdout, stderr)


# ---------------------------------------------------------------- TOML configs

TOML_SCALARS = st.one_of(
    st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(
        lambda x: "nan" if x != x else ("inf" if x == float("inf") else ("-inf" if x == float("-inf") else repr(x)))),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=8).map(json.dumps),  # a TOML basic string is a JSON string
    st.sampled_from(["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "0x1f", "1_000", "{}", "{a = 1}",
                     '"rest"', '"maml"', '"synthetic"', '"csv:/nope.csv"', '"user-cold"']),
)
TOML_VALUES = st.one_of(TOML_SCALARS, st.lists(TOML_SCALARS, max_size=3).map(lambda v: "[" + ", ".join(v) + "]"))


@st.composite
def toml_documents(draw):
    keys = [f.lstrip("-") for f in ALL_FLAGS] + ["help", "config", "bundles", "bundle", "nope", "suport"]
    key = st.sampled_from(keys).map(lambda k: k.replace("-", "_") if draw(st.booleans()) else k)
    lines = [f"{draw(key)} = {draw(TOML_VALUES)}" for _ in range(draw(st.integers(0, 4)))]
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"[{draw(st.sampled_from(SUBCOMMANDS + ['trian', 'x.y']))}]")
        lines += [f"{draw(key)} = {draw(TOML_VALUES)}" for _ in range(draw(st.integers(0, 3)))]
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 5)) == 0:  # raw garbage, possibly not UTF-8
        return draw(st.binary(max_size=40))
    return text.encode("utf-8", "surrogatepass")


@fuzz(100)
@given(doc=toml_documents(), command=st.sampled_from(SUBCOMMANDS), extra=st.lists(VALUE, max_size=2))
def test_random_toml_configs(stubbed, tmp_path_factory, doc, command, extra):
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(doc)
    argv = [command, "--config", str(path)] + (["b.npz"] if command in ("evaluate", "recommend") else []) + extra
    code, stdout, stderr = call(argv)
    check(argv, code, stdout, stderr)


# ---------------------------------------------------------------- real commands


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("cli-bundle") / "bundle.npz"
    Recommender(rng.normal(size=(15, 3)), np.zeros(15), np.zeros(3), 0.0, steps=1,
                config={"item_raw_ids": [f"m{i}" for i in range(15)]}).save(path)
    return path


def mostly(good, bad, one_in=5):
    """``good`` most of the time, ``bad`` one time in ``one_in``."""
    return st.integers(0, one_in - 1).flatmap(lambda n: bad if n == 0 else good)


SUPPORT_ITEM = mostly(st.sampled_from(["m1", "m3", "m7", "m14"]),
                      st.integers(-1, 15).map(str) | st.sampled_from(["m99", "", "x", "\u2603", " m1 ", "m1\r"]))
RATING = mostly(st.integers(1, 5).map(str), st.floats(-10, 10).map(repr) | VALUE)


@st.composite
def support_specs(draw):
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        item = draw(SUPPORT_ITEM)
        rating = draw(st.none() | RATING)
        parts.append(item if rating is None else f"{item}:{rating}")
    spec = ",".join(parts)
    if draw(st.booleans()):
        spec = f"{draw(st.sampled_from(['u1', '', '=', 'a=b']))}={spec}"
    return spec


@fuzz(60)
@given(specs=st.lists(support_specs(), min_size=1, max_size=3), k=st.integers(0, 7).flatmap(lambda n: VALUE if n == 0 else st.integers(1, 20).map(str)),
       data=st.data())
def test_recommend(bundle, tmp_path_factory, specs, k, data):
    argv = ["recommend", str(bundle), "-k", k]
    if data.draw(st.booleans()):
        for s in specs:
            argv += ["--support", s]
    else:  # the same support sets as a CSV file, possibly malformed
        path = tmp_path_factory.getbasetemp() / "support.csv"
        header = data.draw(st.sampled_from(["user,item,rating", "user,item", "item,rating", "", "user;item"]))
        lines = [f"u{n},{pair.replace(':', ',')}" for n, s in enumerate(specs)
                 for pair in s.partition("=")[2 if "=" in s else 0].split(",")]
        if data.draw(st.booleans()):  # a short line, a blank line or a stray quote somewhere
            at = data.draw(st.integers(0, len(lines)))
            lines.insert(at, data.draw(st.sampled_from(["u9", "", '"', "u9,", ",,,", "u9,m1,5,extra"])))
        body = "\n".join(lines)
        path.write_text(header + "\n" + body + "\n", encoding="utf-8", errors="surrogatepass")
        argv += ["--csv", str(path)]
    for extra in data.draw(st.lists(st.sampled_from([["--dense-ids"], ["--include-seen"], ["--format", "json"],
                                                     ["--format", "table"], ["--threads", "2"], ["--format"]]),
                                    max_size=3)):
        argv += extra
    code, stdout, stderr = call(argv)
    check(argv, code, stdout, stderr)


@fuzz(40)
@given(data=st.data())
def test_evaluate_info_datasets(tmp_path_factory, data):
    base = tmp_path_factory.getbasetemp()
    junk = base / "junk.npz"
    junk.write_bytes(data.draw(st.binary(max_size=64)))
    command = data.draw(st.sampled_from(["evaluate", "info", "datasets"]))
    if command == "evaluate":
        argv = ["evaluate", data.draw(st.sampled_from([str(junk), str(base / "missing.npz"), str(base)])),
                "--dataset", data.draw(st.sampled_from(["synthetic", "nope", "csv:/nope.csv", "movielens-1m"])),
                "--data-home", str(base / "no-data"), "--no-download", "--report", str(base / "eval-rep")]
    elif command == "datasets":
        argv = ["datasets", "--data-home", data.draw(st.sampled_from([str(base / "dh"), str(junk), "", "\u2603"]))]
    else:
        argv = ["info"]
    code, stdout, stderr = call(argv)
    check(argv, code, stdout, stderr)


TINY = ["--epochs", "1", "--dim", "2", "--quiet", "--threads", "1", "--no-plots", "--no-support-sweep",
        "--no-engine-timing", "--no-save-models", "--algorithm", "maml", "bias"]
# A working tiny setting per flag, and hostile values for it.
TRAIN_BASE = {"--n-users": ["80"], "--n-items": ["30"], "--support": ["3"], "--query": ["rest"],
              "--val-fraction": ["0.1"], "--test-fraction": ["0.2"], "--scenario": ["user-cold"],
              "--ks": ["1", "5"], "--threshold": ["4"], "--meta-batch-size": ["8"], "--inner-lr": ["0.1"],
              "--inner-steps": ["1"], "--by": ["time"], "--seeds": ["0"]}
TRAIN_HOSTILE = {"--n-users": [["1"], ["2"], ["400"]], "--n-items": [["1"], ["2"], ["200"]],
                 "--support": [["1"], ["40"]], "--query": [["1"], ["500"]], "--val-fraction": [["0.001"], ["0.7"]],
                 "--test-fraction": [["0.001"], ["0.8"]], "--scenario": [["item-cold"], ["both-cold"], ["warm"]],
                 "--ks": [["1", "1000"], ["3", "1"]], "--threshold": [["nan"], ["-inf"], ["1e9"]],
                 "--meta-batch-size": [["1"], ["100000"]], "--inner-lr": [["1e30"], ["1e-300"]],
                 "--inner-steps": [["0"], ["6"]], "--by": [["random"]], "--seeds": [["1", "1"], ["4294967296"]],
                 "--n-interactions": [["1"], ["80"], ["5000"]], "--implicit": [[]], "--dim": [["1"], ["300"]],
                 "--l2": [["1e300"]], "--model": [["melu"]], "--engine": [["torch"]]}


@fuzz(15)
@given(data=st.data())
def test_train_with_hostile_settings(tmp_path_factory, data):
    """A tiny real train with one to three extreme split / model settings: a clear error or a report."""
    base = tmp_path_factory.getbasetemp()
    settings_ = dict(TRAIN_BASE)
    for flag in data.draw(st.lists(st.sampled_from(sorted(TRAIN_HOSTILE)), min_size=1, max_size=3, unique=True)):
        settings_[flag] = data.draw(st.sampled_from(TRAIN_HOSTILE[flag]))
    argv = ["train", *TINY, "--report", str(base / "train-rep")]
    for flag, values in settings_.items():
        if len(values) == 1:
            argv.append(f"{flag}={values[0]}")  # "=" form: "-inf" is a value, not an option
        else:
            argv += [flag, *values]
    code, stdout, stderr = call(argv)
    check(argv, code, stdout, stderr)


# ---------------------------------------------------------------- regressions


def test_unknown_config_table_is_an_error(stubbed, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("support = 3\n[trian]\nepochs = 2\n")
    code, _, stderr = call(["train", "--config", str(path)])
    assert code == 2 and "unknown table [trian]" in stderr


def test_diverging_training_is_a_user_error(tmp_path):
    """Found by the fuzzer: --l2 1e300 made training diverge, reported as an internal error (exit 1)."""
    code, _, stderr = call(["train", *TINY, "--report", str(tmp_path / "rep"), "--n-users", "80", "--n-items", "30",
                            "--support", "3", "--l2", "1e300"])
    assert code == 2 and "training diverged: lower --inner-lr" in stderr and len(stderr.strip().splitlines()) == 1


def test_control_characters_in_arguments_stay_on_one_line(stubbed):
    """Found by the fuzzer: a stray "\\r" argument split argparse's error over two lines."""
    code, _, stderr = call(["demo", "\r"])
    assert code == 2 and stderr.count("\n") == 1 and "\\r" in stderr


def test_support_csv_short_line_and_bad_encoding(bundle, tmp_path):
    """Found by the fuzzer: a CSV line without an item crashed (AttributeError, exit 1)."""
    path = tmp_path / "s.csv"
    path.write_text("user,item,rating\nu1,m1,5\nu1\n")
    code, _, stderr = call(["recommend", str(bundle), "--csv", str(path)])
    assert code == 2 and "s.csv, line 3: missing item" in stderr
    path.write_bytes(b"user,item,rating\nu1,m\xff1,5\n")
    code, _, stderr = call(["recommend", str(bundle), "--csv", str(path)])
    assert code == 2 and "s.csv is not UTF-8 text" in stderr
