"""``benchmarks/ranking.py`` end to end at a tiny size (slow: it trains ten supernets)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_ranking_benchmark_runs_and_records_its_section(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("ranking", ROOT / "benchmarks" / "ranking.py")
    ranking = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ranking)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    options = ["--archs", "4", "--epochs", "1", "--budgets", "60", "--search-trials", "4", "--supernet-seeds", "1"]
    ranking.main([*options, "--warmup-fractions", "0.1", "--warmup-epochs", "1", "--results", str(results)])
    text = results.read_text()
    assert "## Other\n\nkept" in text and ranking.SECTION in text
    for row in ("ceiling", "one-shot, bestup", "one-shot, worstup", "#params", "FLOPs", "sigeo", "term: -loss"):
        assert f"| {row}" in text, row
    assert "hypervolume" in capsys.readouterr().out
