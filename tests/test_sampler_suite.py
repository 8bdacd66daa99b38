"""benchmarks/sampler_suite.py's bookkeeping, which needs no peer: its rows survive the compact table it
saves, and the verdict compares the default with the peers' best single configuration of a half."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sampler_suite  # noqa: E402

HALVES = {"a": "tune", "b": "check", "c": "check"}


def row(config, family, problem, error, nfe=10):
    return dict(problem=problem, half=HALVES[problem], sde="VPSDE", target_nfe=10, family=family,
                config=config, error=error, nfe=nfe)


def test_rows_survive_the_packed_table_to_five_digits():
    rows = [row("default", "ours", "a", 0.123456789), row("default", "ours", "c", 2.0, nfe=9),
            row("kdiff:euler/logsnr", "peer", "b", 1e-7 / 3)]
    back = sampler_suite.unpacked(sampler_suite.packed(rows, HALVES), HALVES)
    key = lambda r: (r["config"], r["problem"])  # noqa: E731
    assert sorted(map(key, back)) == sorted(map(key, rows))
    for original in rows:
        restored = next(r for r in back if key(r) == key(original))
        assert abs(restored["error"] - original["error"]) <= 5e-5 * original["error"]
        assert {k: v for k, v in restored.items() if k != "error"} == \
            {k: v for k, v in original.items() if k != "error"}


def test_the_verdict_is_against_the_peers_best_single_configuration():
    """p1 is best on b, p2 on c, and p1 has the lower geometric mean over the check half (b, c): the
    default (0.3 on b, 1.0 on c) wins b and loses c against p1; on c the per-problem best is p2."""
    rows = [row("default", "ours", p, e) for p, e in (("a", 1.0), ("b", 0.3), ("c", 1.0))]
    rows += [row("p1", "peer", p, e) for p, e in (("a", 1.0), ("b", 0.4), ("c", 0.8))]
    rows += [row("p2", "peer", p, e) for p, e in (("a", 1.0), ("b", 2.0), ("c", 0.5))]
    cells, summary = sampler_suite.verdict(sampler_suite.Errors(rows), "check", (10,))
    by_problem = {c["problem"]: c for c in cells}
    assert {c["best_peer"] for c in cells} == {"p1"}
    assert by_problem["b"]["ratio"] == 0.3 / 0.4 and by_problem["c"]["ratio"] == 1.0 / 0.8
    assert by_problem["c"]["oracle_peer"] == "p2" and by_problem["c"]["oracle_ratio"] == 1.0 / 0.5
    assert summary["ratio"]["wins"] == 1 and summary["cells"] == 2 and not summary["passed"]
