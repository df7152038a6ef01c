"""File formats shared by every metarec-fast file: crash-safe writes, and the
``.npz`` container (a JSON header plus numeric arrays) that bundles, checkpoints
and model files are stored in.

Reading a container never executes anything from the file and never allocates
more than the file holds: members are parsed with :mod:`zipfile` and numpy's
``.npy`` header reader (a literal parser), only numeric dtypes are accepted
(no object arrays, so no pickles), and every array's declared shape is checked
against the size of its zip member and against the JSON header *before* the
array is allocated. numpy only: serving imports this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
Key = Union[bytes, str]

logger = logging.getLogger("metarec_fast")

HEADER = "header"
SIGNATURE = "signature"
MAX_HEADER_BYTES = 64 << 20  # a JSON header beyond this is not one of ours
_SIGNATURE_BYTES = 64  # hex HMAC-SHA256
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: nothing that can hold an object


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file, then atomically replace ``path``.

    A crash or kill during ``write`` leaves the previous file untouched; the
    temporary file is removed on error.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


class FileFormatError(ValueError):
    """A file that is not, or no longer, what it claims to be (the message names it)."""


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's C-order bytes (no copy when it is already contiguous)."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return hashlib.sha256(flat).hexdigest()


def _key_bytes(key: Key) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes or str, got {type(key).__name__}")
    key = bytes(key)
    if not key:
        raise ValueError("key is empty: an HMAC key needs at least one byte (32 random bytes recommended)")
    return key


def _sign(key: bytes, header: bytes) -> bytes:
    return hmac.new(key, header, hashlib.sha256).hexdigest().encode()


def write_container(path: PathLike, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    key: Key | None = None) -> Path:
    """Write ``arrays`` and a JSON ``header`` as an ``.npz``, atomically.

    The header gets every array's ``shapes``, ``dtypes`` and ``sha256``. With
    ``key``, a member ``signature`` holds the HMAC-SHA256 of the header's bytes;
    since the header holds every array's digest, the signature covers the arrays.
    """
    mac_key = None if key is None else _key_bytes(key)
    for name, array in arrays.items():
        if name in (HEADER, SIGNATURE):
            raise ValueError(f"array name {name!r} is reserved")
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"array {name!r} has dtype {array.dtype}; only numeric arrays can be stored")
    full = {**header,
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
            "dtypes": {k: v.dtype.str for k, v in arrays.items()},
            "sha256": {k: array_digest(v) for k, v in arrays.items()}}
    text = json.dumps(full).encode()
    members = {HEADER: np.frombuffer(text, dtype=np.uint8), **arrays}
    if mac_key is not None:
        members[SIGNATURE] = np.frombuffer(_sign(mac_key, text), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **members))


def read_container(path: PathLike, fmt: str, what: str, key: Key | None = None) -> tuple[dict[str, Any],
                                                                                        dict[str, np.ndarray]]:
    """Read a file written by :func:`write_container` whose header says ``"format": fmt``.

    Returns ``(header, arrays)``. Raises FileNotFoundError for a missing file and
    :class:`FileFormatError` (a ValueError) naming ``path`` for anything else:
    truncated, corrupted, foreign, hostile (absurd shapes, object arrays,
    compressed or unexpected members), or, with ``key``, unsigned or signed with
    another key. ``what`` names the kind of file in messages.
    """
    path = Path(path)
    mac_key = None if key is None else _key_bytes(key)
    size = path.stat().st_size  # FileNotFoundError as is
    try:
        with zipfile.ZipFile(path) as zf:
            return _read(zf, path, size, fmt, what, mac_key)
    except FileFormatError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeDecodeError, RecursionError,
            NotImplementedError, RuntimeError) as exc:
        # (zipfile raises NotImplementedError / RuntimeError for damaged flag bits:
        # "compressed patched data", "encrypted")
        if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc):
            message = f"{path} is corrupted: a member fails its checksum ({exc})"
        else:
            message = f"{path} is not a readable {what} (corrupted or truncated or foreign): {exc}"
        raise FileFormatError(message) from exc


def _read(zf: zipfile.ZipFile, path: Path, size: int, fmt: str, what: str,
          key: bytes | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    def reject(message: str) -> FileFormatError:
        return FileFormatError(f"{path} {message}")

    infos: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else None
        if name is None or name in infos:
            raise reject(f"is not a {what}: unexpected member {info.filename!r}")
        # Stored members only, each within the file: an array can never need
        # more memory than the file's size (no zip bombs).
        if info.compress_type != zipfile.ZIP_STORED:
            raise reject(f"is not a {what}: member {info.filename!r} is compressed (method "
                         f"{info.compress_type}); {what}s store arrays uncompressed")
        if info.file_size != info.compress_size or info.compress_size > size:
            raise reject(f"is corrupted or hostile: member {info.filename!r} declares {info.file_size} bytes, "
                         f"the file has {size}")
        infos[name] = info
    if HEADER not in infos:
        raise reject(f"is not a {what} (no header)")
    text = _read_array(zf, _layout(zf, infos[HEADER], HEADER, path, limit=MAX_HEADER_BYTES, shape=None,
                                   dtype=np.dtype(np.uint8))).tobytes()
    if key is not None:
        if SIGNATURE not in infos:
            raise reject(f"is not signed: loading with a key accepts only a {what} signed with that key")
        signature = _read_array(zf, _layout(zf, infos[SIGNATURE], SIGNATURE, path, limit=_SIGNATURE_BYTES,
                                            shape=None, dtype=np.dtype(np.uint8))).tobytes()
        if not hmac.compare_digest(signature, _sign(key, text)):
            raise reject("has a signature that does not match the key: signed with another key, "
                         "or modified after signing")
    elif SIGNATURE in infos:
        logger.info("%s is signed; no key was given, so the signature is not checked", path)
    header = json.loads(text.decode())
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise reject(f"is not a {what} (format {header.get('format') if isinstance(header, dict) else None!r}, "
                     f"expected {fmt!r})")
    shapes, dtypes, digests = header.get("shapes"), header.get("dtypes", {}), header.get("sha256")
    if not (isinstance(shapes, dict) and isinstance(dtypes, dict) and isinstance(digests, dict)
            and set(digests) == set(shapes) and set(dtypes) <= set(shapes)):
        raise reject(f"is not a {what}: its header has no consistent array table")
    names = set(infos) - {HEADER, SIGNATURE}
    if names != set(shapes):
        raise reject(f"is corrupted or foreign: it holds arrays {sorted(names)}, its header lists {sorted(shapes)}")
    # Every array's layout is checked before the first one is allocated.
    layouts = {}
    for name, shape in shapes.items():
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            raise reject(f"is corrupted or hostile: array {name!r} has shape {shape!r} in the header")
        dtype = _header_dtype(dtypes.get(name), name, reject)
        layouts[name] = _layout(zf, infos[name], name, path, limit=None, shape=tuple(shape), dtype=dtype)
    arrays = {}
    for name, layout in layouts.items():
        array = _read_array(zf, layout)
        if array_digest(array) != digests[name]:
            raise reject(f"is corrupted: array {name!r} fails its checksum")
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        arrays[name] = array
    return header, arrays


def _header_dtype(text: Any, name: str, reject: Callable[[str], FileFormatError]) -> np.dtype | None:
    """The dtype the JSON header declares for an array (None: not declared, as in 0.1.0 bundles)."""
    if text is None:
        return None
    try:
        dtype = np.dtype(text) if isinstance(text, str) and len(text) <= 8 else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in _NUMERIC_KINDS:
        raise reject(f"is corrupted or hostile: array {name!r} has dtype {text!r} in the header")
    return dtype


def _layout(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, path: Path, limit: int | None,
            shape: tuple[int, ...] | None, dtype: np.dtype | None) -> tuple[zipfile.ZipInfo, int]:
    """Check a member's ``.npy`` header against its size, ``shape``/``dtype`` and ``limit``
    without reading its data; returns ``(info, data bytes)``."""
    fmt = np.lib.format
    with zf.open(info) as fp:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            got_shape, _, got_dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            got_shape, _, got_dtype = fmt.read_array_header_2_0(fp)
        else:
            raise FileFormatError(f"{path}: array {name!r} has .npy format version {version}, not 1.0 or 2.0")
        offset = fp.tell()
    if got_dtype.kind not in _NUMERIC_KINDS or got_dtype.fields is not None or got_dtype.subdtype is not None:
        raise FileFormatError(f"{path}: array {name!r} has dtype {got_dtype}; only numeric arrays are read "
                              "(never objects or pickles)")
    if any(n < 0 for n in got_shape):
        raise FileFormatError(f"{path}: array {name!r} declares the negative shape {got_shape}")
    nbytes = math.prod(got_shape) * got_dtype.itemsize  # Python ints: no overflow
    if offset + nbytes != info.file_size:
        raise FileFormatError(
            f"{path} is corrupted or hostile: array {name!r} declares shape {got_shape} ({nbytes} bytes) but its "
            f"zip member holds {info.file_size - offset} bytes; nothing was allocated")
    if shape is not None and got_shape != shape:
        raise FileFormatError(f"{path} is corrupted or hostile: array {name!r} has shape {got_shape}, "
                              f"its header says {shape}")
    if dtype is not None and got_dtype != dtype:
        raise FileFormatError(f"{path} is corrupted or hostile: array {name!r} has dtype {got_dtype}, "
                              f"its header says {dtype}")
    if limit is not None and nbytes > limit:
        raise FileFormatError(f"{path}: {name} has {nbytes} bytes, more than the {limit} allowed")
    return info, nbytes


def _read_array(zf: zipfile.ZipFile, layout: tuple[zipfile.ZipInfo, int]) -> np.ndarray:
    """An array whose layout :func:`_layout` has checked (so its allocation is bounded)."""
    with zf.open(layout[0]) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False)
