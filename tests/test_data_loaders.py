"""Loaders (MovieLens 100K / 1M / CSV family, generic CSV/TSV/Parquet) and datasets.movielens."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metarec_fast import datasets
from metarec_fast.data import load_ml1m, load_ml100k, load_movielens, load_movielens_csv, load_table

# ---------------------------------------------------------------- MovieLens 100K


def test_ml100k_counts_and_features(ml100k):
    d = ml100k
    assert (d.n_users, d.n_items, len(d)) == (943, 1682, 100_000)
    s = d.summary()
    assert s["duplicates_dropped"] == 0 and s["rows_read"] == 100_000
    assert s["rating_min"] == 1 and s["rating_max"] == 5
    assert d.timestamps is not None and d.timestamps.min() > 8e8
    uf, itf = d.user_features, d.item_features
    u1 = d.user_index(1)  # 1|24|M|technician|85711
    assert uf.numeric["age"][u1] == 24
    assert uf.vocab["gender"][uf.categorical["gender"][u1]] == "M"
    assert uf.vocab["occupation"][uf.categorical["occupation"][u1]] == "technician"
    assert uf.cardinality("occupation") == 21 and uf.cardinality("gender") == 2
    assert uf.vocab["age_group"][uf.categorical["age_group"][u1]] == "18"
    i1 = d.item_index(1)  # Toy Story: Animation, Children's, Comedy; 01-Jan-1995
    indptr, codes = itf.multi["genres"]
    assert sorted(itf.vocab["genres"][codes[indptr[i1]:indptr[i1 + 1]]]) == ["Animation", "Children's", "Comedy"]
    assert itf.cardinality("genres") == 19
    assert itf.numeric["release_date"][i1] == 9131  # days from 1970-01-01 to 1995-01-01
    assert itf.numeric["year"][i1] == 1995
    assert itf.raw["title"][i1] == "Toy Story (1995)"
    assert s["items_without_features"] == 0 and s["users_without_features"] == 0
    # the rating of user 196 for item 242 (first line of u.data)
    assert d.csr()[d.user_index(196), d.item_index(242)] == 3


def test_ml100k_without_features(ml100k_path):
    d = load_ml100k(ml100k_path, features=False)
    assert d.user_features is None and d.item_features is None and len(d) == 100_000


def test_movielens_folder_detection(ml100k_path):
    assert len(load_movielens(ml100k_path)) == 100_000
    assert len(datasets.movielens(ml100k_path)) == 100_000


# ------------------------------------------------------------- small files, exact formats


def write_ml1m(folder: Path, ratings: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes(ratings if ratings is not None else (
        b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
        b"2::3408::4::978300275\n3::661::2::978301968\n1::1193::4::978300761\n"
    ))
    (folder / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    (folder / "movies.dat").write_bytes(
        b"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        b"661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        b"3408::Erin Brockovich (2000)::Drama\n"
        b"3409::Pok\xe9mon, \"The\" Movie (1999)::Animation|Children's\n"
    )
    return folder


def test_ml1m_format(tmp_path):
    d = load_ml1m(write_ml1m(tmp_path / "ml-1m"))
    assert (d.n_users, d.n_items, len(d)) == (3, 3, 5)
    assert d.summary()["duplicates_dropped"] == 1
    # (1, 1193) twice: the later timestamp (rating 4) is kept
    assert d.csr()[d.user_index(1), d.item_index(1193)] == 4
    uf, itf = d.user_features, d.item_features
    u2 = d.user_index(2)
    assert uf.vocab["occupation"][uf.categorical["occupation"][u2]] == "self-employed"
    assert uf.vocab["age_group"][uf.categorical["age_group"][u2]] == "56"
    indptr, codes = itf.multi["genres"]
    i = d.item_index(661)
    assert list(itf.vocab["genres"][codes[indptr[i]:indptr[i + 1]]]) == ["Animation", "Children's", "Musical"]
    assert itf.numeric["year"][d.item_index(3408)] == 2000
    assert load_movielens(tmp_path / "ml-1m").n_users == 3


def test_ml1m_latin1_titles_kept(tmp_path):
    folder = write_ml1m(tmp_path / "m", b"1::3409::5::1\n")
    d = load_ml1m(folder)
    assert d.item_features.raw["title"][0] == 'Pokémon, "The" Movie (1999)'


def write_csv_release(folder: Path, ratings: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings if ratings is not None else (
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
        "2,1,2.5,1445714835\n2,193609,3.5,1537109082\n"
    ))
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "193609,Andrew Dice Clay: Dice Rules (1991),(no genres listed)\n"
    )
    return folder


@pytest.mark.parametrize("name", ["ml-latest-small", "ml-20m", "ml-25m"])
def test_csv_family_format(tmp_path, name):
    d = load_movielens_csv(write_csv_release(tmp_path / name))
    assert (d.n_users, d.n_items, len(d)) == (2, 3, 4)
    assert d.csr()[d.user_index(1), d.item_index(3)] == 4.5
    itf = d.item_features
    assert itf.raw["title"][d.item_index(3)] == "American President, The (1995)"
    indptr, _ = itf.multi["genres"]
    assert np.diff(indptr)[d.item_index(193609)] == 0  # "(no genres listed)"
    assert itf.numeric["year"][d.item_index(193609)] == 1991
    assert "(no genres listed)" not in set(itf.vocab["genres"])


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("content, line, text", [
    (b"1\t2\t3\t4\n5\t6\t7\t8\n9\t10\t11\n", 3, "9\\t10\\t11"),     # too few fields
    (b"1\t2\t3\t4\n5\t6\tx\t8\n", 2, "5\\t6\\tx\\t8"),                 # non-numeric rating
    (b"1\t2\t3\t4\n\n-5\t6\t1\t8\n", 3, "-5\\t6\\t1\\t8"),             # negative id after a blank line
    (b"1\t2\t3\t4\n5\t6\tnan\t8\n", 2, "5\\t6\\tnan\\t8"),             # NaN rating
    (b"1\t2\t3\t4\n5\t\t1\t8\n", 2, "5\\t\\t1\\t8"),                   # missing item id
])
def test_ml100k_malformed_line_names_file_line_content(tmp_path, content, line, text):
    (tmp_path / "u.data").write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_ml100k(tmp_path, features=False)
    msg = str(info.value)
    assert "u.data" in msg and f"line {line}" in msg and text in msg, msg


def test_ml1m_malformed_line(tmp_path):
    folder = write_ml1m(tmp_path / "m", b"1::2::3::4\n1::3::4::5\n1::4::five::6\n")
    with pytest.raises(ValueError, match=r"ratings.dat, line 3: .*'1::4::five::6'"):
        load_ml1m(folder)
    folder = write_ml1m(tmp_path / "n", b"1::2::3::4\n1::3::4\n")
    with pytest.raises(ValueError, match=r"ratings.dat, line 2: expected 4 fields, found 3: '1::3::4'"):
        load_ml1m(folder)


def test_csv_bad_rows_count_the_header(tmp_path):
    folder = write_csv_release(tmp_path / "a", "userId,movieId,rating,timestamp\n1,1,4,1\n1,2,4,2\n-3,1,2,3\n")
    with pytest.raises(ValueError, match=r"ratings.csv, line 4: negative user id -3: '-3,1,2,3'"):
        load_movielens_csv(folder)
    folder = write_csv_release(tmp_path / "b", "userId,movieId,rating,timestamp\n1,1,NaN,1\n")
    with pytest.raises(ValueError, match=r"line 2: rating is nan"):
        load_movielens_csv(folder)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"userId,movieId,rating,timestamp\n"])
def test_empty_file_is_an_error(tmp_path, content):
    folder = write_csv_release(tmp_path / "e")
    (folder / "ratings.csv").write_bytes(content)
    with pytest.raises(ValueError, match="empty"):
        load_movielens_csv(folder)
    (tmp_path / "u.data").write_bytes(b"" if content else b"")
    with pytest.raises(ValueError, match="empty"):
        load_ml100k(tmp_path, features=False)


def test_missing_folder():
    with pytest.raises(FileNotFoundError, match="no MovieLens ratings file"):
        load_movielens("/nonexistent/folder")


# --------------------------------------------------------------------- generic


def test_load_table_csv_tsv_parquet_with_mapping(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"uid": ["u1", "u2", "u1"], "iid": [10, 20, 20], "stars": [1.0, 2.0, 3.0],
                       "when": [5, 6, 7], "extra": ["a", "b", "c"]})
    mapping = {"user": "uid", "item": "iid", "rating": "stars", "timestamp": "when"}
    df.to_csv(tmp_path / "log.csv", index=False)
    df.to_csv(tmp_path / "log.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "log.parquet")
    for name in ("log.csv", "log.tsv", "log.parquet"):
        d = load_table(tmp_path / name, columns=mapping)
        np.testing.assert_array_equal(d.user_raw_ids, ["u1", "u2"])
        np.testing.assert_array_equal(d.item_raw_ids, [10, 20])
        np.testing.assert_array_equal(d.csr().toarray(), [[1, 3], [0, 2]])
        assert d.timestamps is not None
    implicit = load_table(tmp_path / "log.csv", columns={"user": "uid", "item": "iid", "rating": "nope"})
    assert implicit.implicit
    with pytest.raises(ValueError, match=r"column 'who' \(user\) not found"):
        load_table(tmp_path / "log.csv", columns={"user": "who"})
    with pytest.raises(ValueError, match="unknown column roles"):
        load_table(tmp_path / "log.csv", columns={"person": "uid"})
    with pytest.raises(ValueError, match="unknown format"):
        load_table(tmp_path / "log.xlsx")


def test_load_table_bad_rows(tmp_path):
    (tmp_path / "a.csv").write_text("user,item,rating\n1,2,3\n4,5\n")
    with pytest.raises(ValueError, match=r"a.csv, line 3: expected 3 fields, found 2: '4,5'"):
        load_table(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("user,item,rating\n1,2,3\n4,,5\n")
    with pytest.raises(ValueError, match=r"b.csv, line 3: missing item id: '4,,5'"):
        load_table(tmp_path / "b.csv")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user": [1, 2], "item": [1, 2], "rating": [1.0, None]}), tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"c.parquet, row 1: rating at row 1"):
        load_table(tmp_path / "c.parquet")


# -------------------------------------------------------------------- datasets


def test_data_home_order(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_DATA", str(tmp_path / "env"))
    assert datasets.data_home() == tmp_path / "env"
    assert datasets.data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("METAREC_DATA")
    assert "metarec-fast" in str(datasets.data_home())


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown MovieLens variant"):
        datasets.movielens("7k")


def test_offline_says_which_file_to_put_where(tmp_path, monkeypatch):
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.movielens("1m", data_home=tmp_path, download=False)
    msg = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in msg
    assert str(tmp_path / "ml-1m.zip") in msg and str(tmp_path / "ml-1m" / "ratings.dat") in msg
    assert "c4d9eecfca2ab87c1945afe126590906" in msg

    import pooch

    def fail(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(pooch, "retrieve", fail)
    with pytest.raises(datasets.DatasetNotFoundError, match="downloading it failed .*no network") as info:
        datasets.movielens("100k", data_home=tmp_path)
    assert str(tmp_path / "ml-100k" / "u.data") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def _zip_folder(folder: Path, archive: Path) -> str:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{folder.name}/{f.name}")
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_is_checked_unpacked_and_cached(tmp_path, monkeypatch):
    src = write_ml1m(tmp_path / "src" / "ml-1m")
    built = tmp_path / "built.zip"
    md5 = _zip_folder(src, built)
    rel = datasets.MOVIELENS["1m"]
    monkeypatch.setitem(datasets.MOVIELENS, "1m", rel._replace(known_hash=f"md5:{md5}"))
    calls = []
    import pooch

    def fake_retrieve(url, known_hash, fname, path, progressbar=False):
        calls.append((url, known_hash))
        target = Path(path) / fname
        target.write_bytes(built.read_bytes())
        return str(target)

    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    home = tmp_path / "cache"
    d = datasets.movielens("ml-1m", data_home=home)
    assert len(d) == 5 and calls == [("https://files.grouplens.org/datasets/movielens/ml-1m.zip", f"md5:{md5}")]
    assert (home / "ml-1m" / "ratings.dat").is_file()
    datasets.movielens("1m", data_home=home)  # cached: no second download
    assert len(calls) == 1


def test_archive_put_in_cache_by_hand_is_checked(tmp_path, monkeypatch):
    src = write_ml1m(tmp_path / "src" / "ml-1m")
    home = tmp_path / "cache"
    home.mkdir()
    md5 = _zip_folder(src, home / "ml-1m.zip")
    rel = datasets.MOVIELENS["1m"]
    monkeypatch.setitem(datasets.MOVIELENS, "1m", rel._replace(known_hash="md5:" + "0" * 32))
    with pytest.raises(ValueError, match="damaged or not the official archive"):
        datasets.movielens("1m", data_home=home, download=False)
    monkeypatch.setitem(datasets.MOVIELENS, "1m", rel._replace(known_hash=f"md5:{md5}"))
    assert len(datasets.movielens("1m", data_home=home, download=False)) == 5


def test_synthetic_entry_point():
    d = datasets.synthetic(200, 100, random_state=3)
    assert d.n_users == 200 and d.n_items == 100 and not d.implicit


def test_load_table_without_header(tmp_path):
    (tmp_path / "log.tsv").write_text("7\t1\t2.5\t100\n8\t1\t4\t200\n")
    d = load_table(tmp_path / "log.tsv", header=False)
    assert (d.n_users, d.n_items, len(d)) == (2, 1, 2)
    np.testing.assert_array_equal(d.timestamps, [100, 200])
    (tmp_path / "pairs.csv").write_text("a,x\nb,y\n")
    d = load_table(tmp_path / "pairs.csv", header=False)
    assert d.implicit and list(d.user_raw_ids) == ["a", "b"]


def test_load_table_iso_timestamps(tmp_path):
    (tmp_path / "t.csv").write_text("user,item,timestamp\n1,2,2020-01-01T00:00:10\n1,3,2020-01-01 00:00:20\n")
    d = load_table(tmp_path / "t.csv")
    np.testing.assert_array_equal(d.timestamps, [1577836810, 1577836820])
    (tmp_path / "u.csv").write_text("user,item,timestamp\n1,2,5\n1,3,\n")
    with pytest.raises(ValueError, match=r"u.csv, line 3: missing timestamp|u.csv, line 3: timestamp"):
        load_table(tmp_path / "u.csv")
    (tmp_path / "v.csv").write_text("user,item,timestamp\n1,2,2020-01-01\n1,3,yesterday\n")
    with pytest.raises(ValueError, match=r"v.csv, line 3: timestamp 'yesterday' is neither"):
        load_table(tmp_path / "v.csv")
