"""Checkpoints and model files without pickle: tensors as ``.npz`` arrays, the rest as JSON.

A state (nested dicts, lists, tuples, numbers, strings, None, torch tensors and
numpy arrays: what :meth:`MetaTrainer.state_dict` and the model files of
``metarec-fast train`` hold) is split into numeric arrays and a JSON tree that
refers to them, and written with :func:`~metarec_fast._io.write_container`:
atomically, with a SHA-256 per array. Loading parses JSON and ``.npy`` headers
only, so a file can never run code, and hostile sizes are refused before any
allocation (see :mod:`metarec_fast._io`).

metarec-fast 0.1.0 wrote checkpoints (a ``metarec-fast checkpoint sha256=`` line
and a torch pickle) and model files (``torch.save``) as pickles. Loading them is
refused with a message naming :func:`convert_checkpoint`, which converts a file
whose origin the caller vouches for (``trust=True``).
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._io import FileFormatError, PathLike, read_container, write_container

CHECKPOINT_FORMAT = "metarec-fast-checkpoint"
MODEL_FORMAT = "metarec-fast-model"
FORMAT_VERSION = 2  # version 1 was 0.1.0's pickle
LEGACY_CHECKPOINT_MAGIC = b"metarec-fast checkpoint sha256="
_WHAT = {CHECKPOINT_FORMAT: "metarec-fast checkpoint", MODEL_FORMAT: "metarec-fast model file"}
# JSON nodes that stand for what JSON has no type for (any other "__" key is refused on load).
_TENSOR, _NDARRAY, _TUPLE, _DICT = "__tensor__", "__ndarray__", "__tuple__", "__dict__"


def save_state(path: PathLike, state: Any, fmt: str) -> Path:
    """Write ``state`` as a file of format ``fmt`` (:data:`CHECKPOINT_FORMAT` or :data:`MODEL_FORMAT`)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, arrays, "state")
    return write_container(path, {"format": fmt, "version": FORMAT_VERSION, "state": tree}, arrays)


def load_state(path: PathLike, fmt: str) -> Any:
    """Read a state written by :func:`save_state`; tensors come back as CPU torch tensors."""
    what = _WHAT[fmt]
    _refuse_pickles(Path(path), what)
    header, arrays = read_container(path, fmt, what)
    if header.get("version") != FORMAT_VERSION:
        raise FileFormatError(f"{path} has {what} format version {header.get('version')!r}, "
                              f"this metarec-fast reads version {FORMAT_VERSION}")
    used: set[str] = set()
    try:
        state = _decode(header.get("state"), arrays, used, Path(path))
    except RecursionError:
        raise FileFormatError(f"{path} is corrupted or hostile: its state is nested too deeply") from None
    if used != set(arrays):
        raise FileFormatError(f"{path} is corrupted: arrays {sorted(set(arrays) - used)} are not in its state")
    return state


def save_model_file(path: PathLike, payload: dict[str, Any]) -> Path:
    """Write a model file (a dict with ``state_dict`` and plain metadata), without pickle."""
    return save_state(path, payload, MODEL_FORMAT)


def load_model_file(path: PathLike) -> dict[str, Any]:
    """Read a model file written by ``metarec-fast train`` (``models/*.state.npz``).

    Returns its dict: ``state_dict`` (CPU tensors, for ``learner.load_state_dict``),
    ``model``, ``model_args``, ``algorithm``, ``engine`` and ``train``. Never runs
    code from the file; 0.1.0's ``.pt`` files raise ValueError (see
    :func:`convert_checkpoint`).
    """
    payload = load_state(path, MODEL_FORMAT)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise FileFormatError(f"{path} is not a metarec-fast model file (no state_dict)")
    return payload


def convert_checkpoint(path: PathLike, out: PathLike, *, trust: bool = False) -> Path:
    """Convert a checkpoint or model file written by metarec-fast 0.1.0 (a pickle) to the
    current pickle-free format, written to ``out``.

    Reading a pickle can run arbitrary code, so this needs ``trust=True``: pass
    it only for a file whose origin you trust. The file is read with torch's
    restricted unpickler (``weights_only=True``) first, and fully unpickled only
    if that fails. Returns ``out``; load it with
    :meth:`MetaTrainer.load_checkpoint` or :func:`load_model_file`.
    """
    if trust is not True:
        raise ValueError(f"converting {path} unpickles it, which can run any code the file holds; "
                         "pass trust=True only for a file whose origin you trust")
    import pickle

    import torch

    raw = Path(path).read_bytes()
    if raw.startswith(LEGACY_CHECKPOINT_MAGIC):
        header, sep, payload = raw.partition(b"\n")
        if not sep or hashlib.sha256(payload).hexdigest().encode() != header[len(LEGACY_CHECKPOINT_MAGIC):]:
            raise ValueError(f"{path} is corrupted or truncated: its checksum does not match")
    else:
        payload = raw
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # a type outside torch's allow-list; the caller vouched for the file
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    if isinstance(state, dict) and state.get("format") == MODEL_FORMAT and "state_dict" in state:
        return save_state(out, state, MODEL_FORMAT)
    if isinstance(state, dict) and {"learner", "optimizer", "rng", "algorithm"} <= set(state):
        from .meta.trainer import CHECKPOINT_VERSION

        return save_state(out, {**state, "version": CHECKPOINT_VERSION}, CHECKPOINT_FORMAT)
    raise ValueError(f"{path} is neither a metarec-fast 0.1.0 checkpoint nor a model file")


def _refuse_pickles(path: Path, what: str) -> None:
    """0.1.0 checkpoints, torch.save files and raw pickles: a clear error, never an unpickle."""
    with open(path, "rb") as f:
        start = f.read(len(LEGACY_CHECKPOINT_MAGIC))
    if start.startswith(LEGACY_CHECKPOINT_MAGIC):
        kind = "a metarec-fast 0.1.0 checkpoint (a pickle)"
    elif start[:1] == b"\x80":  # pickle protocol 2+ opcode: torch's legacy format, pickle.dump
        kind = "a pickle"
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError):
            return  # read_container reports it
        if not any(n.endswith(".pkl") for n in names):
            return
        kind = "a PyTorch pickle (torch.save, as 0.1.0 wrote model files)"
    raise FileFormatError(
        f"{path} is {kind}, not a {what} in the current format: loading a pickle can run arbitrary code, so "
        "metarec-fast no longer does. If you trust its origin, convert it once with "
        f"metarec_fast.meta.convert_checkpoint({str(path)!r}, 'converted.npz', trust=True)")


def _encode(obj: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """``obj`` as a JSON value; tensors and arrays go to ``arrays`` and are referred to by name."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {_NDARRAY: name}
    torch = sys.modules.get("torch")  # a tensor means torch is loaded; never imported for plain data
    if torch is not None and isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        name = f"a{len(arrays)}"
        node: dict[str, Any] = {_TENSOR: name}
        if tensor.dtype in _torch_views():  # numpy has no bfloat16: stored as its bits
            node["dtype"] = str(tensor.dtype).replace("torch.", "")
            tensor = tensor.view(_torch_views()[tensor.dtype])
        try:
            arrays[name] = tensor.numpy()
        except TypeError as exc:
            raise TypeError(f"{where}: tensors of dtype {tensor.dtype} cannot be stored") from exc
        return node
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, arrays, f"{where}[{k}]") for k, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, arrays, f"{where}[{k}]") for k, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in obj.items()}
        return {_DICT: [[_encode(k, arrays, f"{where} key"), _encode(v, arrays, f"{where}[{k!r}]")]
                        for k, v in obj.items()]}
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored (tensors, arrays, numbers, strings, "
                    "None, lists, tuples and dicts can)")


def _decode(node: Any, arrays: dict[str, np.ndarray], used: set[str], path: Path) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, arrays, used, path) for v in node]
    if not isinstance(node, dict):
        raise FileFormatError(f"{path} is corrupted: unexpected {type(node).__name__} in its state")
    special = [k for k in node if k.startswith("__")]
    if not special:
        return {k: _decode(v, arrays, used, path) for k, v in node.items()}
    kind = special[0]
    if kind in (_TENSOR, _NDARRAY) and isinstance(node.get(kind), str) and node[kind] in arrays:
        used.add(node[kind])
        array = arrays[node[kind]]
        if kind == _NDARRAY:
            return array
        import torch

        tensor = torch.from_numpy(array)
        dtype = node.get("dtype")
        if dtype is not None:
            views = {str(k).replace("torch.", ""): k for k in _torch_views()}
            if dtype not in views or tensor.dtype != _torch_views()[views[dtype]]:
                raise FileFormatError(f"{path} is corrupted: tensor {node[kind]!r} has dtype {dtype!r}")
            tensor = tensor.view(views[dtype])
        return tensor
    if kind == _TUPLE and len(node) == 1 and isinstance(node[kind], list):
        return tuple(_decode(v, arrays, used, path) for v in node[kind])
    if kind == _DICT and len(node) == 1 and isinstance(node[kind], list) and all(
            isinstance(kv, list) and len(kv) == 2 for kv in node[kind]):
        out = {}
        for k, v in node[kind]:
            key, value = _decode(k, arrays, used, path), _decode(v, arrays, used, path)
            try:
                out[key] = value
            except TypeError:  # an unhashable key
                raise FileFormatError(f"{path} is corrupted: a dict key of type {type(key).__name__}") from None
        return out
    raise FileFormatError(f"{path} is corrupted: unknown node {kind!r} in its state")


def _torch_views() -> dict[Any, Any]:
    """torch dtypes numpy lacks -> the same-sized integer dtype their bits are stored as."""
    import torch

    return {torch.bfloat16: torch.int16}
