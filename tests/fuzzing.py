"""How hard the property-based (hypothesis) tests search.

The normal run uses each test's bounded example count. Set METAREC_FUZZ_SCALE=N
(e.g. 20) for a long fuzzing session: every count is multiplied by N.
"""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("METAREC_FUZZ_SCALE", "1")))


def examples(n: int) -> int:
    """``n`` hypothesis examples in the normal run, ``n * METAREC_FUZZ_SCALE`` in a long one."""
    return n * SCALE
