"""Refuse to load a log that cannot fit in memory, with a clear error instead of the OOM killer.

The loaders parse a whole file at once (pyarrow), so their peak memory is a
multiple of the file's size. Measured peaks of :func:`~metarec_fast.data.load_table`
(5M rows, numpy 2.4, pyarrow 26): CSV 7.8x the file's size (integer ids), 8.3x
(string ids); Parquet 9.5x (integer ids) and 15.7x (string ids) the row groups'
uncompressed size. The estimates below round those up. Set
``METAREC_MEMORY_CHECK=0`` to skip the check.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

CSV_EXPANSION = 8.5  # peak memory / text file size
PARQUET_EXPANSION = 16.0  # peak memory / uncompressed Parquet size
ENV = "METAREC_MEMORY_CHECK"


def _read_int(path: str, key: str | None = None) -> int | None:
    """An integer file (``key=None``) or the value of ``key`` in a "name value" file; None if absent."""
    try:
        with open(path) as f:
            if key is None:
                return int(f.read().strip())
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0].rstrip(":") == key:
                    return int(fields[1])
    except (OSError, ValueError):  # no such file, or "max" (no limit)
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or None when unknown.

    The smallest of: the system's MemAvailable (``/proc/meminfo``, else
    ``sysconf``), the room left in the container's cgroup (v2 or v1; page cache
    that can be dropped counts as free) and the room left under ``ulimit -v``.
    """
    candidates = []
    kib = _read_int("/proc/meminfo", "MemAvailable")
    if kib is not None:
        candidates.append(kib * 1024)
    else:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit_file, usage_file, stat_file, cache_key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
             "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 says "no limit" with ~2^63
            candidates.append(limit - usage + (_read_int(stat_file, cache_key) or 0))
    if resource is not None:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        vm_kib = _read_int("/proc/self/status", "VmSize")
        if soft != resource.RLIM_INFINITY and vm_kib is not None:
            candidates.append(soft - vm_kib * 1024)
    return max(0, min(candidates)) if candidates else None


def check_fits(path: Path, need: float, what: str) -> None:
    """MemoryError naming ``path`` when loading it needs about ``need`` bytes and fewer are available."""
    if os.environ.get(ENV, "1") == "0":
        return
    have = available_memory()
    if have is None or need <= have:
        return
    raise MemoryError(
        f"{path}: loading this {what} needs about {_size(need)} of memory and {_size(have)} is available; "
        f"load it on a machine with more memory or split it (set {ENV}=0 to try anyway)")


def _size(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
