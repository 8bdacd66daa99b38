"""benchmarks/speed.py --quick runs end to end on the CPU and records every figure it promises."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speed  # noqa: E402

import run_lib  # noqa: E402
from score_sde import train as training  # noqa: E402

FIGURES = {"train_fp32": "images_s", "train_tf32": "images_s", "train_bf16": "images_s",
           "train_bf16_compiled": "first_step_s",
           "eval_fp32": "eval_ms", "eval_bf16_compiled": "eval_ms", "pc_fp32": "pc_overhead",
           "pc_bf16_compiled": "pc_ms"}


def test_quick_run_records_every_figure(tmp_path, traced_not_generated):
    out = tmp_path / "speed.json"
    rows = speed.main(["--quick", "--models", "vp_ddpmpp_continuous", "--levels", "21", "--rtol", "1e-2",
                       "--budget-s", "360", "--out", str(out)])  # every compile: none may be skipped
    saved = json.loads(out.read_text())
    assert saved["meta"]["device"] == "cpu" and saved["meta"]["skipped"] == []
    assert [r["model"] for r in saved["rows"]] == [r["model"] for r in rows] == ["DDPM++ cont. (VP)"]
    first = rows[0]
    for part, key in FIGURES.items():
        assert first[part][key] is not None and first[part][key] == first[part][key], (part, key)  # not NaN
    assert first["train_bf16"]["images_s"] > 0 and first["forward_gflop"] > 0
    assert first["warm_compile"]["first_call_s"] > 0
    # The same data and probes: the compiled float32 path (TF32 is a GPU's) gives the eager bits/dim; bf16's
    # differ (a random network, 192 dimensions), by what the GPU run reports against the 0.01 target.
    fp32, bf16 = first["likelihood_fp32"]["bpd"], first["likelihood_bf16_compiled"]["bpd"]
    assert abs(first["likelihood_tf32_compiled"]["bpd"] - fp32) < 1e-4
    assert 0 < abs(bf16 - fp32) < 1
    assert any("training img/s bf16 compiled" in line for line in saved["table"])


def test_the_time_budget_skips_compiles_and_says_so(tmp_path):
    """The other two networks, eager only: a spent budget skips every compiled figure and lists it."""
    rows = speed.main(["--quick", "--models", "ve_ncsnpp_continuous", "vp_ddpm", "--levels", "21",
                       "--budget-s", "0", "--out", str(tmp_path / "speed.json")])
    saved = json.loads((tmp_path / "speed.json").read_text())
    models = ("NCSN++ cont. (VE)", "DDPM (VP)")
    expected = [f"{model} compiled {what}" for model in models for what in ("training", "evaluation")]
    assert saved["meta"]["skipped"] == expected
    for row in rows:
        assert "train_bf16_compiled" not in row and "eval_bf16_compiled" not in row
        assert row["train_fp32"]["images_s"] > 0 and row["pc_fp32"]["pc_ms"] > 0


def test_the_likelihood_rows_read_trained_weights(tmp_path):
    """--checkpoint: the likelihood network gets the checkpoint's EMA weights (here: all zero, so its score
    vanishes and the bits/dim are those of the prior flow alone, unlike the random network's)."""
    config = speed.experiment("vp_ddpmpp_continuous", quick=True)
    state = run_lib.build_state(config)
    for shadow in state.ema.shadow.values():
        shadow.zero_()
    training.save_checkpoint(tmp_path / "zero.pth", state)
    args = ["--quick", "--models", "vp_ddpmpp_continuous", "--levels", "21", "--rtol", "1e-2",
            "--budget-s", "0"]
    zero = speed.main([*args, "--checkpoint", str(tmp_path / "zero.pth"), "--out", str(tmp_path / "a.json")])
    random = speed.main([*args, "--out", str(tmp_path / "b.json")])
    zero_nfe, random_nfe = (r[0]["likelihood_fp32"]["likelihood_nfe"] for r in (zero, random))
    assert zero_nfe < random_nfe  # a vanishing score is the easy, linear flow
