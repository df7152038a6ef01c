"""The optional CUDA path: finding the compiled module, choosing the device and
handing torch CUDA tensors to the kernels.

The CUDA kernels live in a separate extension module, ``metarec_fast._cuda``,
built only with ``METAREC_CUDA=AUTO|ON`` and a CUDA compiler. They take raw
device pointers and the caller's stream, so no libtorch is linked: the
wrappers here turn tensors into ``(pointer, stream, device index)``.

Device rules, shared by every op with a ``device`` argument:

* ``device=None`` follows the inputs: CUDA tensors (all on one device) run on
  that device, anything else on the CPU. CPU and CUDA inputs mixed raise
  ``ValueError``: data never moves between devices silently.
* ``device="cpu"`` with a CUDA tensor raises ``ValueError``.
* ``device="cuda"`` / ``"cuda:N"`` runs on that GPU; numpy arrays and CPU
  tensors are copied there (an explicit request); CUDA tensors on another
  device raise ``ValueError``. Without the CUDA module: ``RuntimeError``
  ("metarec-fast was built without CUDA").

Inputs are read and checked by the same helpers on every device
(:mod:`metarec_fast._validation`: numpy arrays and torch tensors alike, with
``device=`` returning a tensor there); value checks that need the data run
in the kernels or in one check kernel per op, with the CPU's messages.

torch is imported only when a CUDA path is taken (it is how tensors are
allocated on the GPU); ``import metarec_fast`` and the CPU paths never need it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from ._validation import is_torch_tensor

BUILT_WITHOUT_CUDA = (
    "metarec-fast was built without CUDA: reinstall from source with a CUDA toolkit and "
    "METAREC_CUDA=ON (e.g. METAREC_CUDA=ON pip install --no-binary metarec-fast metarec-fast), "
    "or run on the CPU (device='cpu')"
)


def cuda_module() -> Any:
    """The compiled CUDA module; ``RuntimeError`` when this build has none."""
    try:
        from . import _cuda
    except ImportError as exc:
        raise RuntimeError(BUILT_WITHOUT_CUDA) from exc
    return _cuda


@functools.lru_cache(maxsize=None)
def built_with_cuda() -> bool:
    """True when the CUDA kernels were compiled into this installation."""
    try:
        from . import _cuda  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def device_count() -> int:
    """CUDA devices the kernels can use (0 without the module, driver or GPU)."""
    if not built_with_cuda():
        return 0
    return int(cuda_module().device_count())


def cuda_available() -> bool:
    """``HAS_CUDA``: compiled in and at least one device present at run time."""
    return device_count() > 0


def is_cuda_tensor(x: Any) -> bool:
    """True for a torch tensor on a CUDA device (torch is not imported)."""
    return is_torch_tensor(x) and getattr(x, "is_cuda", False)


def resolve_device(device: Any, **inputs: Any) -> Any:
    """Where an op runs: ``None`` for the CPU, else a ``torch.device('cuda', i)``.

    ``inputs`` maps argument names to values (``None`` values are ignored) so
    errors can name the argument on the wrong device.
    """
    on_cuda = {name: x.device for name, x in inputs.items() if x is not None and is_cuda_tensor(x)}
    if device is None:
        if not on_cuda:
            return None
        others = [name for name, x in inputs.items() if x is not None and name not in on_cuda]
        if others:
            first_cuda = next(iter(on_cuda))
            raise ValueError(
                f"{others[0]} is on the CPU but {first_cuda} is on {on_cuda[first_cuda]}; "
                "move them to one device (or pass device='cuda' to copy CPU inputs there)"
            )
        target = next(iter(on_cuda.values()))
    else:
        text = str(device)
        if text == "cpu":
            if on_cuda:
                name = next(iter(on_cuda))
                raise ValueError(
                    f"device='cpu' but {name} is on {on_cuda[name]}; "
                    "pass CPU data or device='cuda'"
                )
            return None
        if re.fullmatch(r"cuda(:[0-9]+)?", text) is None:
            raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        cuda_module()  # the "built without CUDA" error comes first
        import torch

        try:
            target = torch.device(text)
        except (RuntimeError, ValueError) as exc:  # e.g. "cuda:x"
            raise ValueError(
                f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}"
            ) from exc
    import torch

    cuda_module()
    if not torch.cuda.is_available() or device_count() == 0:
        raise RuntimeError(f"device {target} requested but no CUDA device is available")
    if target.index is None:  # "cuda": the current device (asked only once one exists)
        target = torch.device("cuda", torch.cuda.current_device())
    if target.index is not None and target.index >= device_count():
        raise ValueError(f"device {target} does not exist ({device_count()} CUDA devices)")
    for name, where in on_cuda.items():
        if where != target:
            raise ValueError(f"{name} is on {where}, not on {target}")
    return target


def stream_handle(device: Any) -> int:
    """The caller's current CUDA stream on ``device``, as an integer handle."""
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def launch_context(device: Any) -> tuple[int, int]:
    """``(stream handle, device index)``: where a launcher runs on ``device``."""
    return stream_handle(device), device.index


def ptr(t: Any) -> int:
    """Device address of a contiguous tensor (0 for ``None``)."""
    return 0 if t is None else int(t.data_ptr())


def info() -> dict[str, Any]:
    """CUDA facts for ``show_config()``."""
    if not built_with_cuda():
        return {"cuda": "not built"}
    mod = cuda_module()
    n = device_count()
    return {
        "cuda": f"built (runtime {mod.runtime_version()}, archs {mod.cuda_architectures}), "
        f"{n} device(s)" + (f": {mod.device_name(0)}" if n else ""),
    }
