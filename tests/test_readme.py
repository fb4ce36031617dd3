"""The README's numbers are generated, never copied by hand (benchmarks/quickstart.py writes them)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_block_is_the_last_benchmark_run():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
    assert readme.count(begin) == 1 and readme.count(end) == 1
    block = readme[readme.index(begin) + len(begin):readme.index(end)].strip()
    result = json.loads((ROOT / "benchmarks" / "results" / "quickstart.json").read_text())
    assert block == result["readme_block"].strip(), "rerun: python benchmarks/quickstart.py"
    times = result["times"]["local-2"]
    assert f"{times['median_s']:.1f} s median" in block
