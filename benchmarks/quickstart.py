"""The README's main job: wall time of `prunelab run examples/quickstart.toml` from a cold
cache (MNIST-1D generated, nothing stored), and whether it shows the lottery-ticket effect.

Target (issue #12): <= 3 minutes on 2 cores, ending with ticket vs random re-init separated by
a paired 95 % interval that excludes zero at the sparsest levels. Each repeat is a fresh
process with a fresh data cache and store, run exactly as the README runs it; the serial
executor and `--executor local --workers 2` alternate. The effect is read back from the last
store (results are bitwise deterministic, so every repeat gives the same numbers).

The README's quickstart paragraph and table are this script's output, not copied by hand: the
block between ``<!-- quickstart:begin -->`` and ``<!-- quickstart:end -->`` is written here
(``--readme``, the default) and kept in the result file, and tests/test_readme.py checks that the
two agree.

    python benchmarks/quickstart.py [--repeats 3] [--no-readme]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "quickstart.toml"
TARGET_SECONDS = 180.0
EXECUTORS = {"serial": [], "local-2": ["--executor", "local", "--workers", "2"]}


def run_once(extra: list[str], workdir: Path) -> float:
    env = {**os.environ, "PRUNELAB_DATA": str(workdir / "data")}
    prunelab = Path(sys.executable).with_name("prunelab")
    start = time.perf_counter()
    proc = subprocess.run([str(prunelab), "run", str(SPEC), "--store", str(workdir / "store"), *extra],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def effect(store: Path) -> list[dict]:
    from prunelab.spec import load_spec
    from prunelab.study import build_study, comparison_pairs, paired_effects, summarize

    spec = load_spec(SPEC)
    rows = summarize(build_study(spec, store))
    return [{"a": e.a, "b": e.b, "round": e.round, "remaining": round(e.remaining, 2), "seeds": e.n,
             "difference": e.mean, "ci": [e.ci_low, e.ci_high], "excludes_zero": e.excludes_zero}
            for e in paired_effects(rows, comparison_pairs(spec))]


README = ROOT / "README.md"
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"


def _pm(row) -> str:
    return f"{row.mean:.3f}" + ("" if row.n < 2 else f" ± {(row.ci_high - row.ci_low) / 2:.3f}")


def readme_block(store: Path, times: dict) -> str:
    """The README's quickstart paragraph, table and hypotheses, from a finished quickstart store."""
    from prunelab.spec import load_spec
    from prunelab.study import build_study, comparison_pairs, hypothesis_results, paired_effects, summarize

    spec = load_spec(SPEC)
    rows = summarize(build_study(spec, store))
    by = {(r.branch, r.round): r for r in rows}
    effects = {e.round: e for e in paired_effects(rows, comparison_pairs(spec)) if (e.a, e.b) == ("ticket", "reinit")}
    local = times["local-2"]
    lines = [f"Its summary, on this machine ({local['median_s']:.1f} s median, range {local['min_s']:.1f}–"
             f"{local['max_s']:.1f} s over {len(local['runs_s'])} cold-cache runs with 2 workers; "
             "`python benchmarks/quickstart.py`, which writes this paragraph and table):", "",
             "| weights remaining | ticket (rewind) | random re-init | random pruning | ticket − re-init, paired |",
             "|---|---|---|---|---|",
             f"| 100 % (dense) | {_pm(by['dense', 0])} | | | |"]
    rounds = sorted(r.round for r in rows if r.branch == "ticket")
    for rnd in rounds:
        e = effects[rnd]
        paired = f"{e.mean:+.3f} [{e.ci_low:+.3f}, {e.ci_high:+.3f}]".replace("-", "−")
        if e.excludes_zero:
            paired = f"**{paired}**"
        lines.append(f"| {by['ticket', rnd].remaining:.1f} % | {_pm(by['ticket', rnd])} | {_pm(by['reinit', rnd])} | "
                     f"{_pm(by['random', rnd])} | {paired} |")
    separated = [rnd for rnd in rounds if all(effects[r].excludes_zero and effects[r].mean > 0
                                              for r in rounds if r >= rnd)]
    lines.append("")
    seeds = len(spec.study.seeds)
    if separated:
        lines.append(f"At {by['ticket', separated[0]].remaining:.1f} % of the weights and below the ticket beats "
                     f"random re-initialisation with a paired 95 % interval that excludes zero on {seeds} seeds "
                     "— the lottery-ticket effect.")
    results = hypothesis_results(spec, rows)
    if results:
        span = results[0]
        described = []
        for h in results:
            interval = f" [{h.ci_low:+.3f}, {h.ci_high:+.3f}]" if h.n >= 2 else ""
            described.append(f"{h.claim} ({h.mean:+.3f}{interval}, adjusted p {h.p_adjusted:.2g}, {h.verdict})"
                             .replace("-", "−"))
        lines.append(f"The spec declares {len(results)} hypotheses before the run, tested after it as one Holm "
                     f"family over rounds {span.rounds[0]}–{span.rounds[-1]} ({span.remaining[0]:.1f}–"
                     f"{span.remaining[-1]:.1f} % of the weights remaining): " + "; ".join(described) + ".")
    return "\n".join(lines)


def write_readme(block: str) -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + block + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--readme", action=argparse.BooleanOptionalAction, default=True,
                        help="write the README's quickstart block (default: yes)")
    args = parser.parse_args()
    times = {name: [] for name in EXECUTORS}
    last = None
    for _ in range(args.repeats):
        for name, extra in EXECUTORS.items():
            work = Path(tempfile.mkdtemp(prefix="quickstart-"))
            times[name].append(run_once(extra, work))
            last = work
            print(f"{name}: {times[name][-1]:.1f} s")
    effects = effect(last / "store")
    reinit = [e for e in effects if e["b"] == "reinit"]
    sparsest = sorted(reinit, key=lambda e: e["remaining"])[:3]
    summary = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "runs_s": t}
               for name, t in times.items()}
    met_time = summary["local-2"]["median_s"] <= TARGET_SECONDS
    met_effect = all(e["excludes_zero"] and e["difference"] > 0 for e in sparsest)
    for name, s in summary.items():
        print(f"{name}: median {s['median_s']:.1f} s (range {s['min_s']:.1f}–{s['max_s']:.1f}), "
              f"{s['median_s'] / TARGET_SECONDS:.2f}x the 180 s budget")
    for e in sparsest:
        print(f"ticket − reinit at {e['remaining']:.1f} %: {e['difference']:+.4f} "
              f"[{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}] over {e['seeds']} seeds")
    block = readme_block(last / "store", summary)
    print(block)
    if args.readme:
        write_readme(block)
    write_result("quickstart", {
        "spec": "examples/quickstart.toml", "cores": os.cpu_count(), "repeats": args.repeats,
        "target": {"seconds": TARGET_SECONDS, "executor": "local-2 (the README command)",
                   "effect": "ticket − reinit paired 95 % CI excludes 0 at the 3 sparsest rounds"},
        "times": summary, "paired_effects": effects, "readme_block": block,
        "met": {"time": met_time, "effect": met_effect}})


if __name__ == "__main__":
    main()
