"""Files from others: loading one never runs code from it and never allocates more than it holds.

Every loader of a file the library reads or writes: serving bundles, checkpoints,
model files, TOML configs, CSV/Parquet logs. The malicious files carry a pickle
that would create a marker file when unpickled, behind a valid header and
digest where the format has one; loading must raise ValueError and leave no
marker. Hostile sizes (a header or an ``.npy`` member declaring 10^12 rows)
must be refused from the headers, before any allocation (tracemalloc sees
numpy's allocations). Logs too large for memory fail with MemoryError up front.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import examples
from metarec_fast.serving import Recommender

LEGACY_MAGIC = b"metarec-fast checkpoint sha256="
KEY = b"0123456789abcdef0123456789abcdef"
# What loading a hostile file may allocate at most (the small valid files below are a few KiB).
ALLOC_LIMIT = 16 << 20


class Boom:
    """Unpickling this creates ``marker``: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def small_recommender(seed: int = 0) -> Recommender:
    rng = np.random.default_rng(seed)
    return Recommender(rng.normal(size=(12, 3)), rng.normal(size=12), rng.normal(size=3), 0.5, steps=1)


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(path: Path, content: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return path


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npy_declaring(shape: tuple, descr: str, data: bytes) -> bytes:
    """An .npy member whose header declares ``shape``/``descr`` whatever ``data`` holds."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def npy_data(blob: bytes) -> bytes:
    """The data of an .npy member (after its header)."""
    fp = io.BytesIO(blob)
    np.lib.format.read_array_header_1_0(fp) if np.lib.format.read_magic(fp) == (1, 0) else None
    return blob[fp.tell():]


def header_of(content: dict[str, bytes]) -> dict:
    return json.loads(np.load(io.BytesIO(content["header.npy"])).tobytes())


def with_header(content: dict[str, bytes], header: dict) -> dict[str, bytes]:
    return {**content, "header.npy": npy(np.frombuffer(json.dumps(header).encode(), np.uint8))}


def load_bounded(load):
    """Call ``load()``; return (exception or None, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    try:
        load()
        error = None
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# ---------------------------------------------------------------- pickles: checkpoints and model files
@pytest.fixture()
def trainer():
    torch = pytest.importorskip("torch")
    from metarec_fast.meta import MetaTrainer
    from metarec_fast.models import MetaMF

    return MetaTrainer(MetaMF(20, dim=3, random_state=0, dtype=torch.float64), "maml", random_state=0)


def legacy_checkpoint(path: Path, state) -> Path:
    """A checkpoint exactly as metarec-fast 0.1.0 wrote it: a SHA-256 line, then a torch pickle."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    path.write_bytes(LEGACY_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    return path


def test_legacy_checkpoint_carrying_a_pickle_is_refused_unrun(tmp_path, trainer):
    marker = tmp_path / "pwned"
    path = legacy_checkpoint(tmp_path / "evil.ckpt", {"version": 1, "learner": Boom(marker)})
    with pytest.raises(ValueError, match=r"evil.ckpt is a metarec-fast 0.1.0 checkpoint \(a pickle\).*"
                                         r"convert_checkpoint\(.*trust=True\)"):
        trainer.load_checkpoint(path)
    assert not marker.exists()


def test_torch_pickles_are_refused_unrun_as_checkpoints_and_model_files(tmp_path, trainer):
    import torch

    from metarec_fast.meta import load_model_file

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"format": "metarec-fast-model", "version": 1, "state_dict": Boom(marker)}, path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"state_dict": Boom(marker)}))
    for p in (path, raw):
        with pytest.raises(ValueError, match="pickle.*convert_checkpoint"):
            load_model_file(p)
        with pytest.raises(ValueError, match="pickle.*convert_checkpoint"):
            trainer.load_checkpoint(p)
    assert not marker.exists()


def test_array_holding_a_pickle_behind_a_valid_header_is_refused_unrun(tmp_path, trainer):
    """The current format, with one member swapped for an object array whose header entry and
    digest are made to fit: the loader reads numeric arrays only."""
    from metarec_fast.meta import load_model_file, save_model_file

    marker = tmp_path / "pwned"
    evil = npy(np.array([Boom(marker)], dtype=object))
    for kind, path in (("checkpoint", trainer.save_checkpoint(tmp_path / "c.npz")),
                       ("model", save_model_file(tmp_path / "m.npz", {"state_dict": trainer.learner.state_dict()}))):
        content = members(path)
        header = header_of(content)
        header["shapes"]["a0"], header["dtypes"]["a0"] = [1], "|O"
        header["sha256"]["a0"] = hashlib.sha256(evil).hexdigest()
        write_zip(path, {**with_header(content, header), "a0.npy": evil})
        with pytest.raises(ValueError, match=r"array 'a0' has dtype '\|O' in the header"):
            trainer.load_checkpoint(path) if kind == "checkpoint" else load_model_file(path)
        header["dtypes"].pop("a0")  # without the header's dtype: the .npy header's is refused
        write_zip(path, {**with_header(content, header), "a0.npy": evil})
        with pytest.raises(ValueError, match="dtype object; only numeric arrays"):
            trainer.load_checkpoint(path) if kind == "checkpoint" else load_model_file(path)
    assert not marker.exists()


def test_state_tree_nodes_are_data_only(tmp_path, trainer):
    path = trainer.save_checkpoint(tmp_path / "c.npz")
    content = members(path)
    header = header_of(content)
    header["state"]["epoch"] = {"__reduce__": ["os.system", "touch pwned"]}
    write_zip(path, with_header(content, header))
    with pytest.raises(ValueError, match=r"unknown node '__reduce__'"):
        trainer.load_checkpoint(path)
    for depth in (900, 100_000):  # parsed by json but too deep to decode, or too deep to parse
        header["state"]["epoch"] = "deep"
        text = json.dumps(header).replace('"deep"', "[" * depth + "]" * depth).encode()
        write_zip(path, {**content, "header.npy": npy(np.frombuffer(text, np.uint8))})
        with pytest.raises(ValueError, match="nested too deeply|maximum recursion depth"):
            trainer.load_checkpoint(path)


def test_convert_needs_trust_and_then_resumes_exactly(tmp_path, trainer):
    import torch

    from metarec_fast.data import cold_start_split
    from metarec_fast.datasets import synthetic
    from metarec_fast.meta import convert_checkpoint, load_model_file

    marker = tmp_path / "pwned"
    evil = legacy_checkpoint(tmp_path / "evil.ckpt", {"version": 1, "learner": Boom(marker)})
    with pytest.raises(ValueError, match="trust=True"):
        convert_checkpoint(evil, tmp_path / "out.npz")
    assert not marker.exists() and not (tmp_path / "out.npz").exists()

    data = synthetic(n_users=60, n_items=20, random_state=0)
    train, _, _ = cold_start_split(data, scenario="user", support=3, query="rest", random_state=0)
    trainer.fit(train, epochs=1, show_progress=False)
    state = trainer.state_dict()
    legacy_checkpoint(tmp_path / "old.ckpt", {**state, "version": 1})
    convert_checkpoint(tmp_path / "old.ckpt", tmp_path / "new.npz", trust=True)
    from metarec_fast.meta import MetaTrainer
    from metarec_fast.models import MetaMF

    def fresh():
        return MetaTrainer(MetaMF(20, dim=3, random_state=1, dtype=torch.float64), "maml", random_state=7)

    resumed = fresh().load_checkpoint(tmp_path / "new.npz")
    trainer.fit(train, epochs=2, show_progress=False)
    resumed.fit(train, epochs=2, show_progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in trainer.history]
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name

    torch.save({"format": "metarec-fast-model", "version": 1, "state_dict": state["learner"], "train": {"seed": 0}},
               tmp_path / "old.pt")
    convert_checkpoint(tmp_path / "old.pt", tmp_path / "model.npz", trust=True)
    back = load_model_file(tmp_path / "model.npz")
    assert back["train"] == {"seed": 0}
    for name, value in state["learner"].items():
        assert torch.equal(back["state_dict"][name], value), name


def test_checkpoint_round_trip_keeps_every_type(tmp_path, trainer):
    """Tuples, int dict keys, NaN/inf, numpy arrays and bfloat16 survive (the optimiser's
    state is keyed by int, its betas are a tuple; history holds NaN)."""
    import torch

    from metarec_fast._checkpoint import MODEL_FORMAT, load_state, save_state

    state = {"t": (1, 2.5, "x"), 3: {"nan": float("nan"), "inf": float("inf")}, "none": None,
             "arr": np.arange(6, dtype=np.uint16).reshape(2, 3), "bf": torch.ones(2, dtype=torch.bfloat16) / 3,
             "scalar": torch.tensor(5.0), "nested": [{"__x": 1}]}
    back = load_state(save_state(tmp_path / "s.npz", state, MODEL_FORMAT), MODEL_FORMAT)
    assert back["t"] == (1, 2.5, "x") and back["none"] is None and back["nested"] == [{"__x": 1}]
    assert np.isnan(back[3]["nan"]) and back[3]["inf"] == float("inf")
    np.testing.assert_array_equal(back["arr"], state["arr"])
    assert back["arr"].dtype == np.uint16
    assert back["bf"].dtype == torch.bfloat16 and torch.equal(back["bf"], state["bf"])
    assert back["scalar"].shape == () and float(back["scalar"]) == 5.0
    with pytest.raises(TypeError, match=r"state\[.f.\]: a builtin_function_or_method cannot be stored"):
        save_state(tmp_path / "f.npz", {"f": len}, MODEL_FORMAT)


# ---------------------------------------------------------------- pickles: bundles, configs, Parquet
def test_bundle_with_object_arrays_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = small_recommender().save(tmp_path / "b.npz")
    content = members(path)
    evil = npy(np.array([Boom(marker)], dtype=object))
    header = header_of(content)
    header["sha256"]["p0"], header["shapes"]["p0"] = hashlib.sha256(evil).hexdigest(), [1]
    header.pop("dtypes", None)  # as a 0.1.0 bundle: no dtype table
    write_zip(tmp_path / "arr.npz", {**with_header(content, header), "p0.npy": evil})
    write_zip(tmp_path / "hdr.npz", {**content, "header.npy": npy(np.array([Boom(marker)], dtype=object))})
    for name in ("arr.npz", "hdr.npz"):
        with pytest.raises(ValueError, match=f"{name}.*(only numeric arrays|allow_pickle=False)"):
            Recommender.load(tmp_path / name)
    assert not marker.exists()


def test_toml_configs_are_parsed_as_data(tmp_path, capsys):
    """--config goes through tomllib/tomli: no tags, no code; a value that reads like code is a
    bad value."""
    from metarec_fast import cli

    marker = tmp_path / "pwned"
    bad = {"yaml.toml": f"epochs: !!python/object/apply:os.system ['touch {marker}']\n",
           "code.toml": f"epochs = \"__import__('os').system('touch {marker}')\"\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        assert cli.main(["train", "--config", str(tmp_path / name), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert name in err and ("not valid TOML" in err or "epochs" in err), err
    assert not marker.exists()


def test_parquet_with_a_pickled_extension_type_runs_nothing(tmp_path):
    """pyarrow < 14.0.1 unpickled "arrow.py_extension_type" metadata when reading Parquet
    (CVE-2023-47248); the requirement is pyarrow >= 14.0.1."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from metarec_fast.data import load_table

    marker = tmp_path / "pwned"
    meta = {b"ARROW:extension:name": b"arrow.py_extension_type",
            b"ARROW:extension:metadata": pickle.dumps(Boom(marker))}
    schema = pa.schema([pa.field("user", pa.int64(), metadata=meta), pa.field("item", pa.int64())])
    pq.write_table(pa.table({"user": [1, 2], "item": [3, 4]}, schema=schema), tmp_path / "evil.parquet")
    try:
        data = load_table(tmp_path / "evil.parquet")
        assert len(data) == 2
    except ValueError as exc:
        assert "evil.parquet" in str(exc)
    assert not marker.exists()


# ---------------------------------------------------------------- hostile sizes
HUGE = 10**12


def test_bundle_declaring_absurd_shapes_is_refused_before_allocation(tmp_path):
    path = small_recommender().save(tmp_path / "b.npz")
    content = members(path)
    header = header_of(content)
    data = npy_data(content["item_vectors.npy"])  # the real 12 x 3 float64 data
    # The .npy header and the JSON header agree on 10^12 rows: only the member's size tells.
    header["shapes"]["item_vectors"] = [HUGE, 3]
    write_zip(tmp_path / "huge.npz", {**with_header(content, header),
                                      "item_vectors.npy": npy_declaring((HUGE, 3), "<f8", data)})
    error, peak = load_bounded(lambda: Recommender.load(tmp_path / "huge.npz"))
    assert isinstance(error, ValueError), repr(error)
    assert "declares shape (1000000000000, 3) (24000000000000 bytes)" in str(error)
    assert peak < ALLOC_LIMIT
    # The JSON header alone claims 10^12 rows: refused, it disagrees with the .npy header.
    header["shapes"]["item_vectors"] = [HUGE, 3]
    write_zip(tmp_path / "json.npz", with_header(content, header))
    error, peak = load_bounded(lambda: Recommender.load(tmp_path / "json.npz"))
    assert isinstance(error, ValueError) and "its header says (1000000000000, 3)" in str(error), repr(error)
    assert peak < ALLOC_LIMIT


def test_bundle_asking_for_absurd_inner_steps_is_refused(tmp_path):
    """adapt() keeps every step ([users, steps + 1, d + 1]): the step count is a size too."""
    content = members(small_recommender().save(tmp_path / "b.npz"))
    header = header_of(content)
    header["steps"] = HUGE
    write_zip(tmp_path / "steps.npz", with_header(content, header))
    with pytest.raises(ValueError, match=r"steps.npz asks for 1000000000000 inner steps, more than the 10000"):
        Recommender.load(tmp_path / "steps.npz")


def test_zip_member_sizes_beyond_the_file_are_refused(tmp_path):
    path = small_recommender().save(tmp_path / "b.npz")
    blob = bytearray(path.read_bytes())
    pos = blob.find(b"PK\x01\x02")  # the first central directory entry: sizes at offsets 20 and 24
    blob[pos + 20:pos + 28] = (2**31).to_bytes(4, "little") * 2
    (tmp_path / "big.npz").write_bytes(bytes(blob))
    error, peak = load_bounded(lambda: Recommender.load(tmp_path / "big.npz"))
    assert isinstance(error, ValueError) and "declares 2147483648 bytes" in str(error), repr(error)
    assert peak < ALLOC_LIMIT


def test_compressed_members_are_refused(tmp_path):
    path = small_recommender().save(tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "z.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members(path).items():
            zf.writestr(name, data)
    with pytest.raises(ValueError, match="is compressed"):
        Recommender.load(tmp_path / "z.npz")


def test_checkpoint_declaring_absurd_shapes_is_refused_before_allocation(tmp_path, trainer):
    path = trainer.save_checkpoint(tmp_path / "c.npz")
    content = members(path)
    header = header_of(content)
    name = max(header["shapes"], key=lambda k: np.prod(header["shapes"][k]))
    header["shapes"][name] = [HUGE] + header["shapes"][name][1:]
    write_zip(path, with_header(content, header))
    error, peak = load_bounded(lambda: trainer.load_checkpoint(path))
    assert isinstance(error, ValueError) and "its header says (1000000000000," in str(error), repr(error)
    assert peak < ALLOC_LIMIT


DTYPES = ["<f4", "<f8", "<i8", "|u1", "|b1", "<c16", ">f8", "|O", "|V16", "<U3", "<M8[s]"]


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(member=st.sampled_from(["header", "item_vectors", "item_offsets", "p0", "alpha"]),
       shape=st.lists(st.one_of(st.integers(0, 40), st.integers(0, 10**15), st.just(HUGE)), max_size=3),
       descr=st.sampled_from(DTYPES), in_json=st.booleans(), data_len=st.integers(-8, 8))
def test_fuzz_declared_shapes_never_allocate_beyond_the_file(tmp_path, member, shape, descr, in_json, data_len):
    """Any shape and dtype in an .npy header (also copied to the JSON header, or not), with
    data a little shorter or longer than the original: a clear ValueError or the original
    bundle, and never more than ALLOC_LIMIT bytes allocated."""
    path = tmp_path / "b.npz"
    if not path.exists():
        small_recommender().save(path)
    content = members(path)
    header = header_of(content)
    data = npy_data(content[f"{member}.npy"])
    data = data[:len(data) + data_len] if data_len < 0 else data + b"\0" * data_len
    if in_json and member != "header":
        header["shapes"][member] = list(shape)
        content = with_header(content, header)
    content[f"{member}.npy"] = npy_declaring(tuple(shape), descr, data)
    write_zip(tmp_path / "f.npz", content)
    error, peak = load_bounded(lambda: Recommender.load(tmp_path / "f.npz"))
    assert peak < ALLOC_LIMIT, f"{peak} bytes allocated"
    if error is not None:
        assert isinstance(error, ValueError) and "f.npz" in str(error), repr(error)


# ---------------------------------------------------------------- signed bundles
def test_signed_bundles(tmp_path, caplog):
    rec = small_recommender()
    signed = rec.save(tmp_path / "s.npz", key=KEY)
    unsigned = rec.save(tmp_path / "u.npz")
    back = Recommender.load(signed, key=KEY)
    np.testing.assert_array_equal(back.item_vectors, rec.item_vectors)
    assert Recommender.load(signed, key=KEY.decode()).n_items == 12  # str keys are UTF-8 encoded
    with pytest.raises(ValueError, match="signature that does not match the key"):
        Recommender.load(signed, key=b"another key")
    with pytest.raises(ValueError, match="u.npz is not signed"):
        Recommender.load(unsigned, key=KEY)
    with caplog.at_level(logging.INFO, logger="metarec_fast"):
        assert Recommender.load(signed).n_items == 12  # no key: loads, the signature unchecked
    assert "signature is not checked" in caplog.text
    with pytest.raises(ValueError, match="key is empty"):
        rec.save(tmp_path / "e.npz", key=b"")
    with pytest.raises(TypeError, match="key must be bytes or str, got int"):
        Recommender.load(signed, key=42)


def test_a_key_detects_deliberate_changes_that_checksums_cannot(tmp_path):
    """Whoever edits an array can fix its checksum too; only the HMAC needs the key."""
    path = small_recommender().save(tmp_path / "s.npz", key=KEY)
    content = members(path)
    header = header_of(content)
    p0 = np.full(3, 9.0)
    header["sha256"]["p0"] = hashlib.sha256(p0.tobytes()).hexdigest()
    write_zip(tmp_path / "t.npz", {**with_header(content, header), "p0.npy": npy(p0)})
    assert Recommender.load(tmp_path / "t.npz").p0.tolist() == [9.0, 9.0, 9.0]  # checksums pass
    with pytest.raises(ValueError, match="does not match the key"):
        Recommender.load(tmp_path / "t.npz", key=KEY)
    # Dropping the signature member does not help either.
    write_zip(tmp_path / "n.npz", {k: v for k, v in members(tmp_path / "t.npz").items() if k != "signature.npy"})
    with pytest.raises(ValueError, match="is not signed"):
        Recommender.load(tmp_path / "n.npz", key=KEY)


# ---------------------------------------------------------------- logs larger than memory
@pytest.fixture()
def low_memory(monkeypatch):
    from metarec_fast.data import _memory

    monkeypatch.setattr(_memory, "available_memory", lambda: 1 << 20)  # 1 MiB free
    monkeypatch.delenv(_memory.ENV, raising=False)
    return _memory


def test_logs_larger_than_memory_fail_up_front(tmp_path, low_memory, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from metarec_fast.data import load_table

    rows = "".join(f"{u},{u % 97},{1 + u % 5},{1_000_000 + u}\n" for u in range(8000))
    (tmp_path / "log.csv").write_text("user,item,rating,timestamp\n" + rows)  # ~150 KiB: x8.5 > 1 MiB
    n = 30_000
    pq.write_table(pa.table({"user": np.arange(n), "item": np.arange(n) % 97}), tmp_path / "log.parquet")
    for name in ("log.csv", "log.parquet"):
        with pytest.raises(MemoryError, match=rf"{name}: loading this .* needs about .* of memory and "
                                              r"1 MiB is available.*METAREC_MEMORY_CHECK=0"):
            load_table(tmp_path / name)
    monkeypatch.setenv(low_memory.ENV, "0")
    assert len(load_table(tmp_path / "log.csv")) == 8000
    assert len(load_table(tmp_path / "log.parquet")) == n


def test_available_memory_is_plausible():
    from metarec_fast.data._memory import available_memory

    have = available_memory()
    if not Path("/proc/meminfo").exists():
        pytest.skip("needs /proc/meminfo")
    total = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) * 1024
    assert have is not None and 0 < have <= total
