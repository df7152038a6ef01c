"""Fuzzing the loaders and the data constructors with malformed content.

Synthetic files (ML-100K ``u.data``, ML-1M ``ratings.dat``, the CSV releases'
``ratings.csv``, generic CSV/TSV/Parquet logs with a column mapping) are
written with random corruptions: missing or extra fields, non-numeric, NaN,
inf, negative or huge values, duplicate rows, blank lines, wrong separators,
CRLF, a truncated last line, a byte-order mark, unicode and binary garbage,
empty files. Every load either

* raises a documented exception (ValueError, TypeError, FileNotFoundError)
  whose message names the file, or
* returns an :class:`Interactions` that accounts for every input row: kept
  rows + ``duplicates_dropped`` == ``rows_read`` == the number of non-blank
  data lines written, with finite ratings and ids taken from the file
  (nothing is silently dropped).

Well-formed files must load, with exactly the expected deduplicated content.
METAREC_FUZZ_SCALE multiplies the number of examples for a long session.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from metarec_fast.data import Features, Interactions, load_ml1m, load_ml100k, load_movielens_csv, load_table
from metarec_fast.serving import Recommender

DOCUMENTED = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(max_examples=examples(30), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Field values that are wrong somewhere: not numbers, not integers, missing, non-finite,
# negative, beyond int64, unicode, control characters.
BAD_VALUES = ["", " ", "abc", "1.5", "nan", "NaN", "inf", "-inf", "1e400", "-1", "-7", "99999999999999999999",
              "1e3", "+3", "0x1f", "5,0", "None", "null", "NA", "N/A", "\u00e9\u2603", "\x00", "\t", "1 2", "١٢"]


@st.composite
def ratings_rows(draw, max_rows=12, string_ids=False):
    """Well-formed rows (user, item, rating, timestamp) as strings, with duplicates likely."""
    n = draw(st.integers(1, max_rows))
    ident = st.integers(0, 6) if not string_ids else st.sampled_from(["0", "3", "17", "u1", "u2", "x"])
    rows = []
    for _ in range(n):
        u, i = draw(ident), draw(ident)
        r = draw(st.one_of(st.integers(1, 5).map(str), st.sampled_from(["0.5", "3.5", "4.0", "1e0", "-2"])))
        t = draw(st.integers(0, 2_000_000_000))
        rows.append([str(u), str(i), r, str(t)])
    return rows


@st.composite
def corruptions(draw, n_fields):
    """A list of corruptions to apply to rows (or none)."""
    kinds = st.sampled_from(["value", "drop_field", "extra_field", "dup", "blank", "sep", "truncate", "crlf",
                             "garbage", "bom", "no_newline", "whitespace_line", "huge_row"])
    out = []
    for kind in draw(st.lists(kinds, max_size=3)):
        if kind == "value":
            out.append((kind, draw(st.integers(0, 10**6)), draw(st.integers(0, n_fields - 1)),
                        draw(st.sampled_from(BAD_VALUES) | st.text(max_size=4))))
        elif kind == "garbage":
            out.append((kind, draw(st.integers(0, 10**6)), draw(st.binary(min_size=1, max_size=12))))
        elif kind == "sep":
            out.append((kind, draw(st.integers(0, 10**6)), draw(st.sampled_from([",", ";", " ", "|", "\t", "::"]))))
        elif kind == "truncate":
            out.append((kind, draw(st.integers(1, 30))))
        else:
            out.append((kind, draw(st.integers(0, 10**6))))
    return out


def render(rows, sep, corr, header=None, quote_free=False):
    """The file's bytes: ``rows`` joined by ``sep`` with the corruptions applied."""
    lines = [sep.join(r).encode("utf-8") for r in rows]
    newline, final_newline, bom = b"\n", True, False
    for c in corr:
        kind, pos = c[0], c[1] if len(c) > 1 else 0
        at = pos % max(len(lines), 1)
        if kind == "value" and lines:
            fields = lines[at].split(sep.encode())
            fields[c[2] % len(fields)] = c[3].encode("utf-8", "surrogatepass")
            lines[at] = sep.encode().join(fields)
        elif kind == "drop_field" and lines:
            lines[at] = sep.encode().join(lines[at].split(sep.encode())[:-1])
        elif kind == "extra_field" and lines:
            lines[at] = lines[at] + sep.encode() + b"7"
        elif kind == "dup" and lines:
            lines.insert(at, lines[at])
        elif kind == "blank":
            lines.insert(at, b"")
        elif kind == "whitespace_line":
            lines.insert(at, b"  ")
        elif kind == "sep" and lines:
            lines[at] = lines[at].replace(sep.encode(), c[2].encode())
        elif kind == "truncate" and lines:
            lines[-1] = lines[-1][: max(len(lines[-1]) - pos, 0)]
            final_newline = False
        elif kind == "crlf":
            newline = b"\r\n"
        elif kind == "garbage":
            junk = c[2].replace(b'"', b"") if quote_free else c[2]
            lines.insert(at, junk)
        elif kind == "bom":
            bom = True
        elif kind == "no_newline":
            final_newline = False
        elif kind == "huge_row" and lines:
            lines.insert(at, sep.encode().join([b"9" * 25] * len(lines[0].split(sep.encode()))))
    if header is not None:
        lines.insert(0, header.encode())
    data = newline.join(lines) + (newline if final_newline and lines else b"")
    return (b"\xef\xbb\xbf" if bom else b"") + data


def data_lines(data: bytes, header: bool) -> int:
    """Non-blank lines after the header: the rows a loader must account for."""
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    if header:
        lines = lines[1:]
    return sum(1 for ln in lines if ln.rstrip(b"\r"))


def expected_content(rows):
    """(user, item) -> (rating, timestamp) after deduplication (latest timestamp, then last row)."""
    out = {}
    for u, i, r, t in rows:
        key = (u, i)
        if key not in out or int(t) >= out[key][1]:
            out[key] = (float(r), int(t))
    return out


def check_result(d: Interactions, data: bytes, header: bool) -> None:
    s = d.summary()
    written = data_lines(data, header)
    assert s["rows_read"] == written, (s, written)
    assert len(d) + s["duplicates_dropped"] == s["rows_read"]
    assert np.isfinite(d.ratings).all()
    assert (d.users >= 0).all() and (d.users < d.n_users).all()
    assert (d.items >= 0).all() and (d.items < d.n_items).all()
    if d.user_raw_ids.dtype.kind in "iu":
        assert (d.user_raw_ids >= 0).all()
    if d.item_raw_ids.dtype.kind in "iu":
        assert (d.item_raw_ids >= 0).all()


def check_error(exc: BaseException, path: Path) -> None:
    assert isinstance(exc, DOCUMENTED), repr(exc)
    assert str(path) in str(exc) or path.name in str(exc), f"message does not name the file: {exc}"


def check_content(d: Interactions, rows, as_int=True) -> None:
    want = expected_content(rows)
    assert len(d) == len(want)
    m = d.to_pandas(raw_ids=True)
    got = {(str(u), str(i)): (float(r), int(t)) for u, i, r, t in
           zip(m["user"], m["item"], m["rating"], m["timestamp"])}
    want = {k: (float(np.float32(v[0])), v[1]) for k, v in want.items()}
    assert got == want


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-loaders")


def load_or_error(fn, path, data, header):
    try:
        d = fn()
    except DOCUMENTED as exc:
        check_error(exc, path)
        return None
    check_result(d, data, header)
    return d


# ---------------------------------------------------------------- MovieLens formats


@FUZZ
@given(rows=ratings_rows(), corr=corruptions(4))
def test_ml100k_u_data(folder, rows, corr):
    path = folder / "ml100k" / "u.data"
    path.parent.mkdir(exist_ok=True)
    data = render(rows, "\t", corr)
    path.write_bytes(data)
    d = load_or_error(lambda: load_ml100k(path.parent, features=False), path, data, header=False)
    if not corr:
        assert d is not None
        check_content(d, rows)


@FUZZ
@given(rows=ratings_rows(), corr=corruptions(4))
def test_ml1m_ratings_dat(folder, rows, corr):
    path = folder / "ml1m" / "ratings.dat"
    path.parent.mkdir(exist_ok=True)
    data = render(rows, "::", corr)
    path.write_bytes(data)
    d = load_or_error(lambda: load_ml1m(path.parent, features=False), path, data, header=False)
    if not corr:
        assert d is not None
        check_content(d, rows)


@FUZZ
@given(rows=ratings_rows(), corr=corruptions(4))
def test_movielens_ratings_csv(folder, rows, corr):
    path = folder / "mlcsv" / "ratings.csv"
    path.parent.mkdir(exist_ok=True)
    data = render(rows, ",", corr, header="userId,movieId,rating,timestamp")
    path.write_bytes(data)
    d = load_or_error(lambda: load_movielens_csv(path.parent, features=False), path, data, header=True)
    if not corr:
        assert d is not None
        check_content(d, rows)


# ---------------------------------------------------------------- generic CSV / TSV


ROLES = ["user", "item", "rating", "timestamp"]


@FUZZ
@given(rows=ratings_rows(string_ids=True), corr=corruptions(4), data=st.data())
def test_load_table_csv_tsv(folder, rows, corr, data):
    sep = data.draw(st.sampled_from([",", "\t", ";"]))
    ext = {",": "csv", "\t": "tsv", ";": "csv"}[sep]
    names = ["uid", "iid", "stars", "ts"]
    # A column mapping that may name a missing column or leave rating/timestamp out.
    mapping = {"user": "uid", "item": "iid"}
    if data.draw(st.booleans()):
        mapping["rating"] = data.draw(st.sampled_from(["stars", "nope"]))
    if data.draw(st.booleans()):
        mapping["timestamp"] = "ts"
    if data.draw(st.integers(0, 9)) == 0:
        mapping[data.draw(st.sampled_from(["user", "item"]))] = "missing_col"
    header = data.draw(st.booleans())
    if not header:  # columns in role order: user, item, rating, timestamp
        mapping = {"user": "uid", "item": "iid", "rating": "stars", "timestamp": "ts"}
    path = folder / f"log.{ext}"
    content = render(rows, sep, corr, header=sep.join(names) if header else None, quote_free=True)
    path.write_bytes(content)
    d = load_or_error(lambda: load_table(path, columns=mapping, sep=sep if sep == ";" else None, header=header),
                      path, content, header)
    if d is not None and not corr and "missing_col" not in mapping.values():
        if mapping.get("rating") == "stars" and mapping.get("timestamp") == "ts":
            check_content(d, rows)
        else:
            assert d.implicit == (mapping.get("rating") != "stars")


@FUZZ
@given(data=st.data())
def test_load_table_header_fuzz(folder, data):
    """Random header lines and column mappings: a column not found is named in the error."""
    header = data.draw(st.lists(st.sampled_from(["user", "item", "rating", "timestamp", "x", "", "user ",
                                                 "\u00e9", "item"]), min_size=1, max_size=5))
    n = len(header)
    body = "\n".join(",".join(str((r + c) % 4) for c in range(n)) for r in range(3))
    path = folder / "hdr.csv"
    content = (",".join(header) + "\n" + body + "\n").encode()
    path.write_bytes(content)
    try:
        d = load_table(path)
    except DOCUMENTED as exc:
        check_error(exc, path)
        if "user" not in header or "item" not in header:
            assert "not found" in str(exc)
        return
    check_result(d, content, header=True)


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\r\n", b"   \n", b"user,item,rating\n", b"\xff\xfe\x00"])
def test_empty_or_garbage_files(folder, content):
    for loader, name, kwargs in ((load_ml100k, "u.data", {"features": False}),
                                 (load_ml1m, "ratings.dat", {"features": False}),
                                 (load_movielens_csv, "ratings.csv", {"features": False})):
        path = folder / f"empty-{name}" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            loader(path.parent, **kwargs)
        check_error(info.value, path)
    for name in ("empty.csv", "empty.tsv", "empty.parquet"):
        path = folder / name
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            load_table(path)
        check_error(info.value, path)


def test_missing_files(folder):
    for loader in (load_ml100k, load_ml1m, load_movielens_csv):
        with pytest.raises(FileNotFoundError):
            loader(folder / "nowhere", features=False)
    with pytest.raises(FileNotFoundError):
        load_table(folder / "nowhere.csv")
    with pytest.raises(FileNotFoundError):
        load_table(folder / "nowhere.parquet")


# ---------------------------------------------------------------- Parquet


@st.composite
def arrow_columns(draw, n):
    """A column of one of several Arrow types, with nulls, NaN, inf, negative and huge values."""
    import pyarrow as pa

    kind = draw(st.sampled_from(["int", "uint", "float", "string", "bool", "null", "bigint"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "int":
        values = rng.integers(-2, 8, n).tolist()
    elif kind == "uint":
        return pa.array(rng.integers(0, 8, n).astype(np.uint32))
    elif kind == "bigint":
        values = rng.integers(2**62, 2**63 - 1, n, dtype=np.int64).tolist()
    elif kind == "float":
        values = rng.choice([0.0, 1.0, 2.5, -1.0, np.nan, np.inf, -np.inf, 1e300, 3.0], n).tolist()
    elif kind == "string":
        values = rng.choice(["a", "b", "", "7", "\u2603", "-1"], n).tolist()
    elif kind == "bool":
        values = rng.integers(0, 2, n).astype(bool).tolist()
    else:
        return pa.nulls(n)
    if draw(st.booleans()) and n:
        values[draw(st.integers(0, n - 1))] = None
    return pa.array(values)


@FUZZ
@given(data=st.data())
def test_load_table_parquet(folder, data):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    n = data.draw(st.integers(0, 8))
    names = data.draw(st.lists(st.sampled_from(["user", "item", "rating", "timestamp", "extra"]),
                               min_size=1, max_size=5, unique=True))
    table = pa.table({name: data.draw(arrow_columns(n)) for name in names})
    path = folder / "log.parquet"
    pq.write_table(table, path)
    try:
        d = load_table(path)
    except DOCUMENTED as exc:
        check_error(exc, path)
        return
    s = d.summary()
    assert s["rows_read"] == n and len(d) + s["duplicates_dropped"] == n
    assert np.isfinite(d.ratings).all()


# ---------------------------------------------------------------- constructors


VALUES = st.one_of(st.integers(-3, 10), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
                   st.none(), st.booleans(), st.sampled_from([2**63 - 1, 2**64, -(2**63)]))


def as_array(values, how):
    if how == "object":
        return np.array(values, dtype=object)
    try:
        return np.array(values)
    except (ValueError, OverflowError, TypeError):
        return np.array(values, dtype=object)


@FUZZ
@given(users=st.lists(VALUES, max_size=8), data=st.data())
def test_interactions_from_arrays(users, data):
    n = len(users)
    items = data.draw(st.lists(VALUES, min_size=n, max_size=n + data.draw(st.integers(0, 1))))
    ratings = data.draw(st.none() | st.lists(VALUES, min_size=n, max_size=n))
    timestamps = data.draw(st.none() | st.lists(st.integers(-5, 10) | st.none() | st.floats(), min_size=n,
                                                max_size=n))
    how = data.draw(st.sampled_from(["natural", "object"]))
    args = [as_array(v, how) if v is not None else None for v in (users, items, ratings, timestamps)]
    try:
        d = Interactions.from_arrays(*args)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    s = d.summary()
    assert s["rows_read"] == n and len(d) + s["duplicates_dropped"] == n
    assert np.isfinite(d.ratings).all()
    assert len(d.user_raw_ids) == d.n_users and len(d.item_raw_ids) == d.n_items


@FUZZ
@given(data=st.data())
def test_features_constructors(data):
    n = data.draw(st.integers(0, 6))
    col = st.lists(VALUES, min_size=n, max_size=n)
    columns = {"id": data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n, unique=True)),
               "cat": data.draw(col), "num": data.draw(col),
               "multi": data.draw(st.lists(st.text("ab|c", max_size=6) | st.none(), min_size=n, max_size=n))}
    kinds = data.draw(st.sets(st.sampled_from(["cat", "num", "multi"])))
    try:
        f = Features.from_columns(columns, id_column="id", categorical=["cat"] if "cat" in kinds else [],
                                  numeric=["num"] if "num" in kinds else [],
                                  multi={"multi": "|"} if "multi" in kinds else None)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert f.n == n
    for codes in f.categorical.values():
        assert codes.shape == (n,) and codes.min(initial=-1) >= -1
    for values in f.numeric.values():
        assert values.shape[0] == n
    # Malformed direct construction: wrong shapes, bad indptr, duplicate ids.
    bad = data.draw(st.sampled_from(["cat_shape", "indptr", "ids", "num_shape", "vocab"]))
    kwargs = {
        "cat_shape": dict(categorical={"c": np.zeros(n + 1)}, vocab={"c": np.array(["a"], dtype=object)}),
        "indptr": dict(multi={"m": (np.array([0, 2, 1] + [1] * n), np.zeros(1))},
                       vocab={"m": np.array(["a"], dtype=object)}),
        "ids": dict(ids=np.zeros(n + 2)),
        "num_shape": dict(numeric={"x": np.zeros((n + 1, 2))}),
        "vocab": dict(categorical={"c": np.zeros(n)}),
    }[bad]
    with pytest.raises(ValueError):
        Features(n, **kwargs)


# ---------------------------------------------------------------- serving bundle


@pytest.fixture(scope="module")
def bundle_bytes(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("bundle") / "b.npz"
    Recommender(rng.normal(size=(12, 3)), np.zeros(12), np.zeros(3), 0.0, steps=1).save(path)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_bundle_load_rejects_damaged_files(folder, bundle_bytes, data):
    """Bit flips, truncation, overwritten ranges and appended junk: a loadable bundle or a clear ValueError."""
    blob = bytearray(bundle_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "overwrite", "append", "prefix"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(blob) - 1))
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "overwrite":
        pos = data.draw(st.integers(0, len(blob) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=32))
        blob[pos:pos + len(junk)] = junk
    elif kind == "append":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    else:
        blob = bytearray(data.draw(st.binary(max_size=64))) + blob
    path = folder / "damaged.npz"
    path.write_bytes(bytes(blob))
    try:
        rec = Recommender.load(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    # Loaded: the damage missed every array and the header (e.g. zip padding or appended junk);
    # the content is then exactly the original.
    ref = Recommender.load(folder / "ref.npz") if (folder / "ref.npz").exists() else None
    if ref is None:
        (folder / "ref.npz").write_bytes(bundle_bytes)
        ref = Recommender.load(folder / "ref.npz")
    np.testing.assert_array_equal(rec.item_vectors, ref.item_vectors)
    np.testing.assert_array_equal(rec.p0, ref.p0)
    assert math.isfinite(rec.b0)
    ids, _ = rec.recommend(rec.adapt(([0, 1], [1.0, 2.0])), k=3)
    assert ids.shape == (1, 3)



# ---------------------------------------------------------------- regressions found by the fuzzers


def test_duplicate_header_column_is_named(folder):
    path = folder / "dup-header.csv"
    path.write_text("user,user,item\n1,2,3\n")
    with pytest.raises(ValueError, match=r"column 'user' \(user\) appears 2 times in the header"):
        load_table(path)


def test_parquet_integer_ids_with_nulls_stay_exact(folder):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = folder / "null-ids.parquet"
    pq.write_table(pa.table({"user": pa.array([None, 5855857634249700807]), "item": [1, 2]}), path)
    with pytest.raises(ValueError, match=r"null-ids.parquet, row 0: missing user id"):
        load_table(path)
    pq.write_table(pa.table({"user": [1, 2], "item": [True, False]}), path)
    with pytest.raises(TypeError, match=r"null-ids.parquet: item ids must be integers or strings"):
        load_table(path)
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        load_table(path)


def test_values_beyond_the_stored_types_are_rejected():
    with pytest.raises(ValueError, match=r"rating 1e\+39 at row 1 is beyond float32.s range"):
        Interactions.from_arrays([0, 1], [0, 0], [1.0, 1e39])
    with pytest.raises(ValueError, match=r"timestamp 1e\+300 at row 0 does not fit in int64"):
        Interactions.from_arrays([0], [0], [1.0], [1e300])
    with pytest.raises(ValueError, match="timestamp .* does not fit in int64"):
        Interactions.from_arrays([0], [0], [1.0], np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(ValueError, match=r"user id 1e\+19 at row 0 does not fit in int64"):
        Interactions.from_arrays([1e19], [0])


def test_float_timestamps_and_features_beyond_range_are_rejected(folder):
    """Found in CI's warnings: 'inf' parsed as a float timestamp was cast to int64
    garbage, and a numeric feature beyond float32 became inf, both silently."""
    path = folder / "inf-ts.csv"
    path.write_text("user,item,rating,timestamp\n1,2,3.0,100.5\n1,3,4.0,inf\n")
    with pytest.raises(ValueError, match=r"inf-ts.csv, line 3: .*timestamp inf is not a valid epoch time"):
        load_table(path)
    path.write_text("user,item,rating,timestamp\n1,2,3.0,100.5\n1,3,4.0,1e300\n")
    with pytest.raises(ValueError, match=r"line 3: .*timestamp 1e\+300 is not a valid epoch time"):
        load_table(path)
    with pytest.raises(ValueError, match=r"numeric feature 'age': value 1e\+39 at row 1 is beyond float32"):
        Features.from_columns({"age": np.array([1.0, 1e39])}, numeric=["age"])
    ages = Features.from_columns({"age": np.array(["3", "x"], dtype=object)}, numeric=["age"]).numeric["age"]
    assert ages[0] == 3 and np.isnan(ages[1])


def test_bom_before_a_blank_first_line(folder):
    """Found by the long fuzzing run: the line numbers in messages counted a BOM-only line."""
    path = folder / "bom" / "u.data"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"\xef\xbb\xbf\n1\t2\t3\t4\n5\t6\tx\t8\n")
    with pytest.raises(ValueError, match=r"u.data, line 3: .*'5\\t6\\tx\\t8'"):
        load_ml100k(path.parent, features=False)
    path.write_bytes(b"\xef\xbb\xbf\n1\t2\t3\t4\n")
    assert load_ml100k(path.parent, features=False).summary()["rows_read"] == 1


def test_bundle_with_damaged_zip_flags(folder, bundle_bytes):
    """Found by the long fuzzing run: flag bits flipped in the zip directory ("encrypted",
    "compressed patched data") escaped Recommender.load as RuntimeError / NotImplementedError."""
    for bit in (0x01, 0x20):
        blob = bytearray(bundle_bytes)
        pos = blob.find(b"PK\x01\x02")  # the first central directory entry; flags at offset 8
        blob[pos + 8] |= bit
        path = folder / "flags.npz"
        path.write_bytes(bytes(blob))
        with pytest.raises(ValueError, match="not a readable metarec-fast bundle"):
            Recommender.load(path)
