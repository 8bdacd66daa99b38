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


CHOICE = {"a": "tune", "b": "check", "d": "fresh", "e": "fresh2"}


def choice_row(config, family, problem, error):
    return dict(problem=problem, half=CHOICE[problem], sde="VPSDE", target_nfe=10, family=family,
                config=config, error=error, nfe=10)


def test_the_choice_ranks_on_every_choice_half_against_its_own_best_peer():
    """p1 is the peers' best on a and b's halves, p2 on d's. o1 wins a and b by far but is 1.5x p2 on d;
    o2 is 1.1x on every problem: o2 first (no problem worse than 1.25x). The verdict half e is never read."""
    peers = {"p1": {"a": 1.0, "b": 1.0, "d": 9.0, "e": 1.0}, "p2": {"a": 2.0, "b": 2.0, "d": 1.0, "e": 1.0}}
    ours = {"o1": {"a": 0.1, "b": 0.1, "d": 1.5, "e": 0.1}, "o2": {"a": 1.1, "b": 1.1, "d": 1.1, "e": 99.0}}
    rows = [choice_row(c, "peer", p, e) for c, errors in peers.items() for p, e in errors.items()]
    rows += [choice_row(c, "ours", p, e) for c, errors in ours.items() for p, e in errors.items()]
    references, ranked = sampler_suite.choice_ranking(sampler_suite.Errors(rows), "VPSDE", 10)
    assert references == {"tune": "p1", "check": "p1", "fresh": "p2"}
    assert [label for _, label in ranked] == ["o2", "o1"]
    assert ranked[0][0][:2] == (0, 3) and ranked[1][0][:2] == (1, 1)


def test_the_default_is_read_from_the_candidate_recommended_settings_names(monkeypatch):
    """After the defaults change, the verdict reads the named candidate's rows, and says so once."""
    monkeypatch.setattr(sampler_suite, "SDES", ((sampler_suite.VPSDE, 1e-3),))
    monkeypatch.setattr(sampler_suite, "default_label", lambda sde, nfe: "o1")
    rows = [choice_row("default", "ours", "e", 5.0), choice_row("o1", "ours", "e", 2.0)]
    errors = sampler_suite.Errors(rows)
    lines = sampler_suite.read_default_from_candidates(errors, (10,))
    assert errors.index[("default", "fresh2", "VPSDE", 10)] == {"e": 2.0}
    assert len(lines) == 1 and "o1" in lines[0]
    assert sampler_suite.read_default_from_candidates(errors, (10,)) == []  # now they agree


def test_results_and_their_compressed_rows_round_trip(tmp_path):
    rows = [row("default", "ours", "a", 0.25), row("kdiff:euler/logsnr", "peer", "b", 0.5)]
    metadata = dict(halves=HALVES, nfe_levels=[10])
    path = tmp_path / "suite.json"
    sampler_suite.write_json(path, dict(metadata=metadata, table=sampler_suite.packed(rows, HALVES)))
    assert "table" not in path.read_text() and sampler_suite.table_path(path).exists()
    back, back_metadata = sampler_suite.read_rows(path)
    assert back_metadata == metadata
    assert sorted((r["config"], r["error"]) for r in back) == [("default", 0.25), ("kdiff:euler/logsnr", 0.5)]
