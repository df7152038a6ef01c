"""Loaders for MovieLens (100K, 1M, 10M, latest-small, 20M, 25M) and generic CSV/TSV/Parquet logs.

Parsing is done by pyarrow (``pyarrow.csv``, ``pyarrow.parquet``), imported
inside the functions (pyarrow itself may import pandas when it is installed).
The 1M/10M ``::`` format is read as bytes, ``::`` replaced by a one-byte
separator and handed to ``pyarrow.csv`` (latin-1), which is much faster than
pandas' python engine for multi-character separators.

Every error in a file names the file, the 1-based line number and the line's
content: a malformed line (wrong number of fields, a non-numeric value), a
missing or negative id, a NaN rating. An empty file is an error too. A file
whose estimated peak memory exceeds what is available raises MemoryError
before it is read (see :mod:`metarec_fast.data._memory`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._memory import CSV_EXPANSION, PARQUET_EXPANSION, check_fits
from .features import Features
from .interactions import Interactions, RowError

_SEP = b"\x1f"  # the one-byte separator that replaces "::"

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]
# ML-1M's age groups (the code is the group's lower bound); ML-100K ages are binned the same way.
AGE_GROUPS = np.array([1, 18, 25, 35, 45, 50, 56])


class _Text:
    """A file's bytes with helpers to report a line (1-based) and its content."""

    def __init__(self, path: Path, data: bytes, sep_display: bytes | None = None, encoding: str = "utf-8") -> None:
        self.path, self.data, self.sep_display, self.encoding = path, data, sep_display, encoding
        self._lines: list[bytes] | None = None

    @property
    def lines(self) -> list[bytes]:
        if self._lines is None:
            self._lines = self.data.split(b"\n")
        return self._lines

    def content(self, line: int) -> str:
        raw = self.lines[line - 1].rstrip(b"\r")
        if self.sep_display is not None:
            raw = raw.replace(_SEP, self.sep_display)
        return raw.decode(self.encoding, errors="replace")

    def line_of_row(self, row: int, header_lines: int) -> int:
        """The line of the ``row``-th data row (blank lines are skipped, as the parser does)."""
        seen = -1
        for ln, raw in enumerate(self.lines, start=1):
            if ln <= header_lines or not raw.strip():
                continue
            seen += 1
            if seen == row:
                return ln
        return len(self.lines)

    def error(self, line: int, message: str) -> ValueError:
        return ValueError(f"{self.path}, line {line}: {message}: {self.content(line)!r}")

    def diagnose(self, sep: bytes, kinds: Sequence[str | None], header_lines: int) -> ValueError | None:
        """Find the first malformed line: wrong field count or a field that is not a number."""
        ncols = len(kinds)
        for ln, raw in enumerate(self.lines, start=1):
            if ln <= header_lines:
                continue
            line = raw.rstrip(b"\r")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) != ncols:
                return self.error(ln, f"expected {ncols} fields, found {len(fields)}")
            for pos, (field, kind) in enumerate(zip(fields, kinds)):
                if kind is None:
                    continue
                text = field.strip()
                try:
                    int(text) if kind == "int" else float(text)
                except ValueError:
                    what = "an integer" if kind == "int" else "a number"
                    return self.error(ln, f"field {pos + 1} ({field.decode(self.encoding, 'replace')!r}) is not {what}")
        return None


def _check_file(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    check_fits(path, path.stat().st_size * CSV_EXPANSION, "text file")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark is never data (and not a line of its own)
        data = data[3:]
    if not data.strip():
        raise ValueError(f"{path} is empty: no interactions to read")
    return data


def _read_ratings(
    path: Path,
    sep: str,
    names: Sequence[str],
    kinds: Sequence[str | None],
    header: bool,
    encoding: str = "utf-8",
    multichar: bool = False,
) -> tuple[dict[str, np.ndarray], _Text, int]:
    """Parse a delimited ratings file into numpy columns with pyarrow.

    Returns the columns, the text (for error reporting) and the number of
    header lines. ``kinds`` gives "int"/"float" per column (None: skip).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = _check_file(path)
    sep_b = sep.encode()
    if multichar:
        if _SEP in data:
            raise ValueError(f"{path} contains the byte 0x1f, which the '::' reader uses internally")
        data = data.replace(sep_b, _SEP)
        sep_b = _SEP
    text = _Text(path, data, sep.encode() if multichar else None, encoding)
    header_lines = 1 if header else 0
    types = {n: (pa.int64() if k == "int" else pa.float64()) for n, k in zip(names, kinds) if k is not None}
    read = pacsv.ReadOptions(
        column_names=list(names), skip_rows=header_lines, encoding=encoding, block_size=1 << 24
    )
    parse = pacsv.ParseOptions(delimiter=sep_b.decode("latin-1"), quote_char=False, double_quote=False)
    convert = pacsv.ConvertOptions(
        column_types=types, include_columns=[n for n, k in zip(names, kinds) if k is not None],
        strings_can_be_null=False, quoted_strings_can_be_null=False,
    )
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                               convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        err = text.diagnose(sep_b, kinds, header_lines)
        if err is not None:
            raise err from None
        raise ValueError(f"{path}: could not be parsed: {exc}") from None
    if table.num_rows == 0:
        raise ValueError(f"{path} is empty: no interactions to read")
    cols = {}
    for name in table.column_names:
        c = table.column(name)
        cols[name] = c.to_numpy(zero_copy_only=False) if c.null_count == 0 else (
            c.cast(pa.float64()).to_numpy(zero_copy_only=False)
        )
    return cols, text, header_lines


def _build(cols: dict[str, np.ndarray], text: _Text, header_lines: int, uf: Features | None = None,
           itf: Features | None = None, implicit: bool | None = None) -> Interactions:
    try:
        return Interactions.from_arrays(
            cols["user"], cols["item"], cols.get("rating"), cols.get("timestamp"), uf, itf, implicit,
            source=str(text.path),
        )
    except RowError as exc:
        line = text.line_of_row(exc.row, header_lines)
        raise text.error(line, str(exc).replace(f" at row {exc.row}", "")) from None
    except (ValueError, TypeError) as exc:  # not tied to one row: still name the file
        raise type(exc)(f"{text.path}: {exc}") from None


def _read_meta(path: Path, sep: str, names: Sequence[str], encoding: str, header: bool = False,
               quoting: bool = False, multichar: bool = False) -> Any:
    """A small metadata file (users, movies) as all-string numpy columns, parsed by pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    data = _check_file(path)
    sep_b = sep.encode()
    if multichar:
        data = data.replace(sep_b, _SEP)
        sep_b = _SEP
    read = pacsv.ReadOptions(column_names=list(names), skip_rows=1 if header else 0, encoding=encoding)
    parse = pacsv.ParseOptions(delimiter=sep_b.decode("latin-1"), quote_char='"' if quoting else False)
    convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                               convert_options=convert)
    except pa.ArrowInvalid as exc:
        text = _Text(path, data, sep.encode() if multichar else None, encoding)
        err = None if quoting else text.diagnose(sep_b, [None] * len(names), 1 if header else 0)
        if err is not None:
            raise err from None
        raise ValueError(f"{path}: could not be parsed: {exc}") from None
    return {n: table.column(n).to_numpy(zero_copy_only=False).astype(object) for n in names}


_YEAR = re.compile(r"\((\d{4})\)\s*$")
_MONTHS = {m: k for k, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], start=1)}


def _year_from_title(titles: np.ndarray) -> np.ndarray:
    """The "(1995)" at the end of a MovieLens title as a float32 year (NaN when absent)."""
    out = np.full(len(titles), np.nan, dtype=np.float32)
    for k, t in enumerate(titles.tolist()):
        m = _YEAR.search(t) if isinstance(t, str) else None
        if m:
            out[k] = float(m.group(1))
    return out


def _parse_dmy(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ML-100K release dates ("01-Jan-1995") -> (days since 1970-01-01, year), float32, NaN when unknown."""
    days = np.full(len(values), np.nan, dtype=np.float32)
    years = np.full(len(values), np.nan, dtype=np.float32)
    for k, v in enumerate(values.tolist()):
        parts = v.split("-") if isinstance(v, str) else []
        if len(parts) == 3 and parts[1] in _MONTHS and parts[0].isdigit() and parts[2].isdigit():
            try:
                d = np.datetime64(f"{int(parts[2]):04d}-{_MONTHS[parts[1]]:02d}-{int(parts[0]):02d}", "D")
            except ValueError:
                continue
            days[k] = float(d.astype(np.int64))
            years[k] = float(parts[2])
    return days, years


def _age_group(age: np.ndarray) -> np.ndarray:
    return AGE_GROUPS[np.clip(np.searchsorted(AGE_GROUPS, age, side="right") - 1, 0, len(AGE_GROUPS) - 1)]


def _user_features(cols: dict[str, np.ndarray], age_is_group: bool) -> Features:
    cols = dict(cols)
    age = np.array([float(a) if a not in (None, "") else np.nan for a in cols["age"].tolist()])
    group = age if age_is_group else _age_group(np.nan_to_num(age)).astype(np.float64)
    cols["age_group"] = np.array([str(int(g)) if g == g else None for g in group], dtype=object)
    cols["zip_prefix"] = np.array([z[:2] if isinstance(z, str) and z else None for z in cols["zip"].tolist()],
                                  dtype=object)
    f = Features.from_columns(
        cols, id_column="user", categorical=["gender", "age_group", "occupation", "zip_prefix"],
        numeric=["age"], raw=["zip"],
    )
    return Features(**_ids_to_int(f))


def _ids_to_int(f: Features) -> dict[str, Any]:
    ids = np.asarray(f.ids)
    try:
        ids = ids.astype(np.int64)
    except ValueError:
        pass
    return dict(n=f.n, categorical=f.categorical, multi=f.multi, numeric=f.numeric, vocab=f.vocab, raw=f.raw, ids=ids)


# ------------------------------------------------------------------ MovieLens
def load_ml100k(path: str | Path, features: bool = True) -> Interactions:
    """MovieLens 100K from its folder (``u.data``; ``u.user`` and ``u.item`` when ``features``).

    User features: gender, age (numeric and ML-1M style age group), occupation,
    zip prefix (2 digits; raw zip kept). Item features: genres (multi-valued,
    from the 19 genre flags), release_date (days since 1970-01-01, NaN when
    unknown), year, title (raw).
    """
    path = Path(path)
    cols, text, header = _read_ratings(path / "u.data", "\t", ["user", "item", "rating", "timestamp"],
                                       ["int", "int", "float", "int"], header=False)
    uf = itf = None
    if features:
        users = _read_meta(path / "u.user", "|", ["user", "age", "gender", "occupation", "zip"], "latin-1")
        uf = _user_features(users, age_is_group=False)
        genre_names = ML100K_GENRES
        gpath = path / "u.genre"
        if gpath.is_file():
            g = [ln.split("|")[0] for ln in gpath.read_text(encoding="latin-1").splitlines() if ln.strip()]
            if len(g) == 19:
                genre_names = g
        names = ["item", "title", "release", "video_release", "url"] + [f"g{k}" for k in range(19)]
        items = _read_meta(path / "u.item", "|", names, "latin-1")
        days, years = _parse_dmy(items["release"])
        flags = np.stack([items[f"g{k}"].astype(np.int64) for k in range(19)], axis=1)
        itf = Features.from_flags("genres", flags, genre_names)
        itf = Features(
            len(days), multi=itf.multi, vocab=itf.vocab,
            numeric={"release_date": days, "year": years},
            raw={"title": items["title"]},
            ids=items["item"].astype(np.int64),
        )
    return _build(cols, text, header, uf, itf)


def load_ml1m(path: str | Path, features: bool = True) -> Interactions:
    """MovieLens 1M (or 10M) from its folder: ``ratings.dat``, ``users.dat``, ``movies.dat``.

    ``::``-separated, latin-1. User features (1M only): gender, age group,
    occupation (named), zip prefix. Item features: genres (multi), year
    (from the title), title (raw).
    """
    path = Path(path)
    cols, text, header = _read_ratings(path / "ratings.dat", "::", ["user", "item", "rating", "timestamp"],
                                       ["int", "int", "float", "int"], header=False, encoding="latin-1",
                                       multichar=True)
    uf = itf = None
    if features:
        if (path / "users.dat").is_file():
            users = _read_meta(path / "users.dat", "::", ["user", "gender", "age", "occupation", "zip"],
                               "latin-1", multichar=True)
            occ = users["occupation"].astype(np.int64)
            users["occupation"] = np.array(
                [ML1M_OCCUPATIONS[o] if 0 <= o < len(ML1M_OCCUPATIONS) else str(o) for o in occ.tolist()],
                dtype=object)
            uf = _user_features(users, age_is_group=True)
        if (path / "movies.dat").is_file():
            movies = _read_meta(path / "movies.dat", "::", ["item", "title", "genres"], "latin-1", multichar=True)
            itf = _movie_features(movies)
    return _build(cols, text, header, uf, itf)


def _movie_features(movies: dict[str, np.ndarray]) -> Features:
    movies = dict(movies)
    movies["genres"] = np.array([None if g in (None, "", "(no genres listed)") else g
                                 for g in movies["genres"].tolist()], dtype=object)
    f = Features.from_columns(movies, id_column="item", multi={"genres": "|"}, raw=["title"])
    f.numeric["year"] = _year_from_title(movies["title"])
    return Features(**_ids_to_int(f))


def load_movielens_csv(path: str | Path, features: bool = True) -> Interactions:
    """MovieLens latest-small / 20M / 25M from its folder: ``ratings.csv`` (+ ``movies.csv``).

    Item features: genres (multi, ``|`` separated; "(no genres listed)" = none),
    year (from the title), title (raw). These releases have no user features.
    """
    path = Path(path)
    cols, text, header = _read_ratings(path / "ratings.csv", ",", ["user", "item", "rating", "timestamp"],
                                       ["int", "int", "float", "int"], header=True)
    itf = None
    if features and (path / "movies.csv").is_file():
        movies = _read_meta(path / "movies.csv", ",", ["item", "title", "genres"], "utf-8", header=True,
                            quoting=True)
        itf = _movie_features(movies)
    return _build(cols, text, header, None, itf)


def load_movielens(path: str | Path, features: bool = True) -> Interactions:
    """Any MovieLens release from a folder, recognised by its files
    (``u.data`` -> 100K, ``ratings.dat`` -> 1M/10M, ``ratings.csv`` -> latest/20M/25M)."""
    path = Path(path)
    if (path / "u.data").is_file():
        return load_ml100k(path, features)
    if (path / "ratings.dat").is_file():
        return load_ml1m(path, features)
    if (path / "ratings.csv").is_file():
        return load_movielens_csv(path, features)
    raise FileNotFoundError(
        f"{path} holds no MovieLens ratings file (expected u.data, ratings.dat or ratings.csv)"
    )


# -------------------------------------------------------------------- generic
def load_table(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    sep: str | None = None,
    format: str | None = None,
    header: bool = True,
    user_features: Features | None = None,
    item_features: Features | None = None,
    implicit: bool | None = None,
) -> Interactions:
    """A generic CSV / TSV / Parquet interaction log.

    ``columns`` maps the roles ``user``, ``item``, ``rating``, ``timestamp`` to
    column names of the file (default: the role names; ``rating`` and
    ``timestamp`` are optional). ``format`` is "csv", "tsv" or "parquet"
    (default: from the extension). Without ``header``, the file's columns are
    named by the mapping's values in role order user, item[, rating[, timestamp]].
    """
    import pyarrow as pa

    path = Path(path)
    roles = {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp"}
    if columns:
        unknown = set(columns) - set(roles)
        if unknown:
            raise ValueError(f"unknown column roles {sorted(unknown)}; use user, item, rating, timestamp")
        roles.update(columns)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt in ("pq", "parquet"):
        import pyarrow.parquet as pq

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        try:
            meta = pq.ParquetFile(path).metadata  # the footer only
            check_fits(path, PARQUET_EXPANSION * sum(meta.row_group(k).total_byte_size
                                                     for k in range(meta.num_row_groups)), "Parquet file")
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{path} is not a readable Parquet file: {exc}") from None
        if table.num_rows == 0:
            raise ValueError(f"{path} is empty: no interactions to read")
        names = table.column_names
        for role in ("user", "item"):
            if roles[role] not in names:
                raise ValueError(f"{path}: column {roles[role]!r} ({role}) not found; columns are {names}")
        table = table.rename_columns([
            next((r for r, c in roles.items() if c == n), n) for n in names
        ])
        try:
            return Interactions.from_arrow(table, user_features=user_features, item_features=item_features,
                                           implicit=implicit)
        except RowError as exc:
            raise ValueError(f"{path}, row {exc.row}: {exc}") from None
        except (ValueError, TypeError) as exc:  # name the file (e.g. a bool id column, mixed id types)
            raise type(exc)(f"{path}: {exc}") from None
    if fmt not in ("csv", "tsv", "txt", "tab", "dat"):
        raise ValueError(f"unknown format {fmt!r} for {path}; pass format='csv', 'tsv' or 'parquet'")
    if sep is None:
        sep = "\t" if fmt in ("tsv", "tab") else ","
    data = _check_file(path)
    first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    if header:
        file_names = first.split(sep)
    else:
        file_names = [roles[r] for r in ("user", "item", "rating", "timestamp")][: len(first.split(sep))]
    for role in ("user", "item"):
        if roles[role] not in file_names:
            raise ValueError(f"{path}: column {roles[role]!r} ({role}) not found; columns are {file_names}")
    for role in ("user", "item", "rating", "timestamp"):
        if file_names.count(roles[role]) > 1:
            raise ValueError(f"{path}: column {roles[role]!r} ({role}) appears {file_names.count(roles[role])} "
                             f"times in the header; columns are {file_names}")
    role_of = {c: r for r, c in roles.items()}
    names = [role_of.get(c, f"_skip{k}") for k, c in enumerate(file_names)]
    kinds = [None if n.startswith("_skip") else ("float" if n == "rating" else "int") for n in names]
    # Non-integer raw ids (strings) are common in generic logs: sniff them as strings.
    cols, text, header_lines = _read_generic(path, data, sep, names, kinds, header)
    return _build(cols, text, header_lines, user_features, item_features, implicit)


def _read_generic(path: Path, data: bytes, sep: str, names: list[str], kinds: list[str | None], header: bool):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text = _Text(path, data)
    header_lines = 1 if header else 0
    keep = [n for n in names if not n.startswith("_skip")]
    types = {n: (pa.float64() if n in ("rating",) else pa.int64()) for n in keep}
    types["user"] = pa.string()
    types["item"] = pa.string()
    if "timestamp" in types:
        types["timestamp"] = pa.string()  # epoch seconds or ISO 8601 date-times, decided below
    read = pacsv.ReadOptions(column_names=names, skip_rows=header_lines, block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=sep)
    convert = pacsv.ConvertOptions(column_types=types, include_columns=keep)
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                               convert_options=convert)
    except pa.ArrowInvalid as exc:
        k = [None if n in ("user", "item", "timestamp") or n.startswith("_skip") else "float" for n in names]
        err = text.diagnose(sep.encode(), k, header_lines)
        if err is not None:
            raise err from None
        raise ValueError(f"{path}: could not be parsed: {exc}") from None
    if table.num_rows == 0:
        raise ValueError(f"{path} is empty: no interactions to read")
    cols: dict[str, np.ndarray] = {}
    for name in keep:
        c = table.column(name)
        if name in ("user", "item"):
            arr = np.asarray(c.to_pylist(), dtype=object) if c.null_count else c.to_numpy(zero_copy_only=False)
            if not c.null_count:
                # Integer-looking ids become integers (sorted numerically).
                try:
                    arr = c.cast(pa.int64()).to_numpy()
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    arr = arr.astype(str)
                    empty = arr == ""
                    if empty.any():
                        arr = arr.astype(object)
            cols[name] = arr
        elif name == "timestamp":
            cols[name] = _timestamps(c, text, header_lines)
        else:
            cols[name] = c.to_numpy(zero_copy_only=False) if c.null_count == 0 else c.cast(pa.float64()).to_numpy(
                zero_copy_only=False)
    return cols, text, header_lines


def _timestamps(c: Any, text: _Text, header_lines: int) -> np.ndarray:
    """A string column of epoch seconds or ISO 8601 date-times -> int64 seconds (NaN for a missing one)."""
    import pyarrow as pa

    for target in (pa.int64(), pa.float64(), pa.timestamp("s")):
        try:
            v = c.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if target == pa.timestamp("s"):
            v = v.cast(pa.int64())
        if v.null_count:
            return v.cast(pa.float64()).to_numpy(zero_copy_only=False)
        seconds = v.to_numpy(zero_copy_only=False)
        if target == pa.float64():
            # "inf" or 1e30 parse as floats but are no epoch time: casting them
            # to int64 would store garbage silently.
            bad = ~np.isfinite(seconds) | (np.abs(seconds) >= 2.0**63)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                line = text.line_of_row(row, header_lines)
                raise text.error(line, f"timestamp {float(seconds[row])!r} is not a valid epoch time in seconds")
        return seconds.astype(np.int64)
    values = c.to_pylist()
    for row, value in enumerate(values):
        try:
            pa.array([value]).cast(pa.timestamp("s"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            try:
                float(value)
            except (TypeError, ValueError):
                line = text.line_of_row(row, header_lines)
                raise text.error(line, f"timestamp {value!r} is neither a number nor an ISO 8601 date-time") from None
    raise ValueError(f"{text.path}: the timestamp column mixes epoch seconds and date-times")
