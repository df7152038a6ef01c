"""Ready-made datasets: MovieLens (cached download with checksum) and the synthetic generator.

``movielens(variant)`` looks for the release in a cache folder (``data_home``,
else ``$METAREC_DATA``, else the user cache directory from platformdirs),
downloads the official GroupLens archive with pooch and checks its hash when
it is missing, and says exactly which file to put where when the download is
off or fails. A local folder is always accepted instead of a variant name.

MovieLens' license forbids redistribution: metarec-fast never ships the data.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

from .data import Interactions, load_movielens, make_synthetic

__all__ = ["DatasetNotFoundError", "MOVIELENS", "data_home", "movielens", "synthetic"]

_BASE = "https://files.grouplens.org/datasets/movielens/"
logger = logging.getLogger("metarec_fast")


class _Release(NamedTuple):
    folder: str  # the folder the archive unpacks to
    archive: str
    known_hash: str | None  # None: the archive changes over time or its hash is not pinned
    marker: str  # the ratings file that proves the folder is complete


# md5 sums published by GroupLens (``<archive>.md5`` next to each archive).
MOVIELENS: dict[str, _Release] = {
    "100k": _Release("ml-100k", "ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723", "u.data"),
    "1m": _Release("ml-1m", "ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906", "ratings.dat"),
    "10m": _Release("ml-10M100K", "ml-10m.zip", None, "ratings.dat"),
    # ml-latest-small is re-released from time to time: no fixed hash.
    "latest-small": _Release("ml-latest-small", "ml-latest-small.zip", None, "ratings.csv"),
    "20m": _Release("ml-20m", "ml-20m.zip", "md5:cd245b17a1ae2cc31bb14903e1204af3", "ratings.csv"),
    "25m": _Release("ml-25m", "ml-25m.zip", "md5:6b51fb2759a8657d3bfcbfc42b592ada", "ratings.csv"),
}
_ALIASES = {f"ml-{k}": k for k in MOVIELENS} | {"ml-latest-small": "latest-small", "ml-10m100k": "10m"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not (or may not) be downloaded; the message says what to do."""


def data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``data_home``, else ``$METAREC_DATA``, else the user cache dir."""
    if data_home is not None:
        return Path(data_home).expanduser()
    env = os.environ.get("METAREC_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("metarec-fast")) / "data"


def _release(variant: str) -> tuple[str, _Release]:
    key = variant.lower()
    key = _ALIASES.get(key, key)
    if key not in MOVIELENS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; use one of {sorted(MOVIELENS)} or a folder path")
    return key, MOVIELENS[key]


def _instructions(key: str, rel: _Release, home: Path, why: str) -> str:
    url = _BASE + rel.archive
    checksum = f" ({rel.known_hash.replace(':', ' ')})" if rel.known_hash else ""
    return (
        f"MovieLens {key} is not in {home} and {why}.\n"
        f"Download {url}{checksum} and either\n"
        f"  - put the archive at {home / rel.archive} (it is checked and unpacked on the next call), or\n"
        f"  - unzip it into {home}, so that {home / rel.folder / rel.marker} exists, or\n"
        f"  - pass the unpacked folder itself: movielens('/path/to/{rel.folder}').\n"
        f"Use data_home=... or the METAREC_DATA environment variable to choose another cache folder."
    )


def _extract(archive: Path, home: Path, rel: _Release) -> None:
    home_resolved = home.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (home / member).resolve()
            if home_resolved not in target.parents and target != home_resolved:
                raise ValueError(f"{archive} holds a file outside its folder: {member!r}")
        zf.extractall(home)
    if not (home / rel.folder / rel.marker).is_file():
        raise ValueError(f"{archive} did not unpack to {home / rel.folder / rel.marker}; is it the right archive?")


def _check_hash(archive: Path, rel: _Release) -> None:
    if rel.known_hash is None:
        return
    import pooch

    alg, expected = rel.known_hash.split(":")
    got = pooch.file_hash(str(archive), alg=alg)
    if got != expected:
        raise ValueError(
            f"{archive} has {alg} {got}, expected {expected}: the file is damaged or not the official "
            "archive; delete it and try again"
        )


def movielens(
    variant: str | os.PathLike = "100k",
    data_home: str | os.PathLike | None = None,
    download: bool = True,
    features: bool = True,
) -> Interactions:
    """MovieLens as :class:`~metarec_fast.data.Interactions`.

    ``variant``: "100k", "1m", "10m", "latest-small", "20m", "25m" (or
    "ml-100k", ...), or the path of an unpacked MovieLens folder. Looks in
    :func:`data_home`; when missing and ``download``, fetches the official
    archive with pooch (checking its md5 where GroupLens pins one: every
    release but 10m and latest-small), unpacks it and loads it. Raises
    :class:`DatasetNotFoundError` naming the file to put where when the data
    is missing and cannot be downloaded.
    """
    as_path = Path(variant)
    if isinstance(variant, os.PathLike) or os.sep in str(variant) or (as_path.is_dir() and str(variant) not in MOVIELENS):
        if not as_path.is_dir():
            raise DatasetNotFoundError(f"{as_path} is not a folder")
        return load_movielens(as_path, features)
    key, rel = _release(str(variant))
    home = _data_home(data_home)
    folder = home / rel.folder
    if (folder / rel.marker).is_file():
        return load_movielens(folder, features)
    archive = home / rel.archive
    if not archive.is_file():
        if not download:
            raise DatasetNotFoundError(_instructions(key, rel, home, "download=False"))
        try:
            import pooch

            home.mkdir(parents=True, exist_ok=True)
            logger.info("downloading %s to %s", _BASE + rel.archive, home)
            pooch.retrieve(_BASE + rel.archive, known_hash=rel.known_hash, fname=rel.archive, path=str(home),
                           progressbar=_progressbar())
        except Exception as exc:  # network down, proxy, checksum mismatch, read-only folder...
            raise DatasetNotFoundError(
                _instructions(key, rel, home, f"downloading it failed ({type(exc).__name__}: {exc})")
            ) from exc
    _check_hash(archive, rel)
    logger.info("unpacking %s into %s", archive, home)
    _extract(archive, home, rel)
    return load_movielens(folder, features)


_data_home = data_home


def _progressbar() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True


def synthetic(
    n_users: int = 5000,
    n_items: int = 2000,
    n_interactions: int | None = None,
    *,
    implicit: bool = False,
    random_state: Any = 0,
    **kwargs: Any,
) -> Interactions:
    """The embedded synthetic dataset (see :func:`metarec_fast.data.make_synthetic`): taste clusters,
    correlated side features, power-law popularity, varied activity, timestamps; deterministic per seed."""
    return make_synthetic(n_users, n_items, n_interactions, implicit=implicit, random_state=random_state, **kwargs)
