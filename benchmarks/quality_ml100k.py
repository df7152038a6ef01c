"""The quality tables (issue 14): what ``metarec-fast train`` gives with its defaults,
on MovieLens 100K, for several support sizes and seeds, every meta-learner next to
every baseline, with per-seed paired comparisons against the best baseline.

Each (scenario, K) runs exactly the command line's pipeline and defaults
(``experiments.run`` with ``RATING_DEFAULT`` / ``RANKING_DEFAULT``, a rating and a
ranking model per meta-learner, ``--tune`` trials each chosen on validation
users only, the baselines' own validation grids), i.e. the same as::

    metarec-fast train --dataset movielens-100k --scenario user-cold --support K --seeds 0 1 2 3 4

(without the support sweep and the plots). Ties are broken by a seeded random
order; item-cold scenarios rank new items among new items.

    python benchmarks/quality_ml100k.py [--data-home DIR] [--supports 3 5 10] [--seeds 0 1 2 3 4]
        [--scenario user-cold] [--tune 3] [--out benchmarks/quality_ml100k.json]
        [--markdown benchmarks/quality_ml100k.md]

The JSON holds every report (per seed, tuning trials, paired differences); the
Markdown file holds the tables that benchmarks/RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from metarec_fast import datasets, experiments

ALGORITHMS = experiments.BASELINES + experiments.META_ALGORITHMS
COLUMNS = experiments.HEADLINE_METRICS
HERE = Path(__file__).resolve().parent


def fmt(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.4f} ± {std:.4f}"


def markdown(rep: experiments.ExperimentReport, seconds: float) -> str:
    """One section: mean ± std per model, then the paired comparison and a verdict per metric."""
    head = (f"### {rep.scenario}, support K = {rep.support}, seeds {' '.join(map(str, rep.seeds))} "
            f"({seconds / 60:.1f} min, candidates: {rep.config.get('candidates')}, tune = {rep.config['tune']})")
    lines = [head, "", "| model | " + " | ".join(COLUMNS) + " | train s |", "|---" * (len(COLUMNS) + 2) + "|"]
    for r in rep.results:
        cells = [fmt(r["metrics"].get(c, math.nan), r["std"].get(c, math.nan)) for c in COLUMNS]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {r['train_seconds']:.1f} |")
    lines += ["", "Paired per-seed difference to the best baseline (positive = better), seeds won, "
              "paired t-test p:", "", "```", rep.comparison(), "```", ""]
    lines += verdict(rep)
    return "\n".join(lines) + "\n"


def verdict(rep: experiments.ExperimentReport) -> list[str]:
    """Per headline metric: the best meta-learner against the best baseline, and whether it wins every seed."""
    out = []
    for metric in COLUMNS:
        rows = [r for r in rep.results if r["algorithm"] and metric in r.get("vs_best_baseline", {})]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["vs_best_baseline"][metric]["mean_diff"])
        v = best["vs_best_baseline"][metric]
        every = v["wins"] == v["seeds"]
        out.append(f"- {metric}: best meta-learner {best['model']} vs {v['baseline']}: "
                   f"{v['mean_diff']:+.4f} on average, wins {v['wins']}/{v['seeds']} seeds"
                   f" -> {'target met' if every and v['mean_diff'] > 0 else 'target missed'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-home", default=str(HERE.parents[1] / "shared" / "data"))
    ap.add_argument("--supports", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--scenario", default="user-cold", choices=("user-cold", "item-cold", "both-cold"))
    ap.add_argument("--tune", type=int, default=3, help="trials per meta-learner (the command line's default)")
    ap.add_argument("--out", default=str(HERE / "quality_ml100k.json"))
    ap.add_argument("--markdown", default=str(HERE / "quality_ml100k.md"))
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = datasets.movielens("100k", data_home=args.data_home)
    reports, sections = [], []
    for k in args.supports:
        start = time.perf_counter()
        rep = experiments.run(data, scenario=args.scenario, support=k, query="rest", by="time", seeds=args.seeds,
                              algorithms=ALGORITHMS, tune=args.tune, ks=(1, 3, 5, 10, 20),
                              dataset_name="movielens-100k", show_progress=args.progress,
                              split_kwargs={"val_fraction": 0.1, "test_fraction": 0.2})
        seconds = time.perf_counter() - start
        sections.append(markdown(rep, seconds))
        print(sections[-1], flush=True)
        reports.append({**rep.to_dict(), "seconds": seconds})
        # Written after every K: a long run keeps what it has.
        Path(args.out).write_text(json.dumps({"command": vars(args), "reports": reports}, indent=1, default=float))
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text("\n".join(sections))
    print(f"wrote {args.out} and {args.markdown}")


if __name__ == "__main__":
    main()
