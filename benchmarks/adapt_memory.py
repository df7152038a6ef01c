"""Peak memory of one second-order meta-gradient, per engine, for T = 5 and 50.

Each configuration runs in a fresh subprocess; the peak resident set (VmHWM)
is reset after the problem is built, so the figure is what the meta-gradient
itself needs. Usage: ``python benchmarks/adapt_memory.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
sys.path.insert(0, "benchmarks")
import bench_adapt as b
b.STEPS = int(sys.argv[2])
engine = sys.argv[1]
learner, batch = b.make_learner("torch" if engine == "loop" else engine), b.problem()
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM
base = rss("VmRSS")
t = time.perf_counter()
(b.per_user_loop if engine == "loop" else b.meta_gradient)(learner, batch)
print(json.dumps({"engine": engine, "T": b.STEPS, "peak_mib": rss("VmHWM") - base,
                  "seconds": time.perf_counter() - t}))
"""


def main() -> None:
    rows = []
    for steps in (5, 50):
        for engine in ("cpp", "torch", "loop"):
            out = subprocess.run([sys.executable, "-c", CHILD, engine, str(steps)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"T={steps:>3} {engine:>6}: peak +{rows[-1]['peak_mib']:8.1f} MiB, "
                  f"{rows[-1]['seconds']:.3f} s", flush=True)


if __name__ == "__main__":
    main()
