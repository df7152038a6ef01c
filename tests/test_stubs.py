"""python/metarec_fast/_core.pyi matches the compiled module: same names, same parameters."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from metarec_fast import _core

STUB = Path(__file__).resolve().parents[1] / "python" / "metarec_fast" / "_core.pyi"


def stub_signatures() -> dict[str, set[tuple[str, ...]]]:
    tree = ast.parse(STUB.read_text())
    out: dict[str, set[tuple[str, ...]]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.setdefault(node.name, set()).add(tuple(a.arg for a in node.args.args))
    return out


def runtime_signatures() -> dict[str, set[tuple[str, ...]]]:
    out: dict[str, set[tuple[str, ...]]] = {}
    for name in dir(_core):
        fn = getattr(_core, name)
        if not callable(fn) or name.startswith("__") or isinstance(fn, type):
            continue
        for line in (fn.__doc__ or "").splitlines():
            m = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) ->", line.strip())
            if m:
                params = tuple(p.split(":")[0].strip() for p in _split_params(m.group(1)) if p)
                out.setdefault(name, set()).add(params)
    return out


def _split_params(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def test_every_compiled_function_is_in_the_stub_with_the_same_parameters():
    stub, runtime = stub_signatures(), runtime_signatures()
    assert runtime, "no pybind11 signatures found"
    assert set(runtime) == set(stub), (
        f"in the module only: {sorted(set(runtime) - set(stub))}; "
        f"in the stub only: {sorted(set(stub) - set(runtime))} -- regenerate _core.pyi"
    )
    for name in runtime:
        assert runtime[name] == stub[name], f"{name}: module {runtime[name]} vs stub {stub[name]}"


def test_stub_lists_the_module_attributes():
    text = STUB.read_text()
    for attr in ("has_openmp", "has_cuda", "build_info", "__version__"):
        assert attr in text
