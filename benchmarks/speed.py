"""How fast the toolkit runs on a GPU, in one command: training, network evaluation, PC sampling and the
likelihood ODE of full-size DDPM++ cont. (VP), NCSN++ cont. (VE) and DDPM (VP) at batch 128 (issue 9).

    .venv/bin/python benchmarks/speed.py            # on a GPU: the full run, < 8 minutes, compile included
    .venv/bin/python benchmarks/speed.py --quick    # tiny networks on whatever device (the test suite's run)

Per network it measures: training images/s (loss, backward, clip, Adam, EMA: the real `train_step`) in fp32,
TF32, bf16 and compiled bf16, with peak memory and MFU; ms per network evaluation (eval mode, no grad),
eager fp32 and compiled bf16; PC ms per level and the loop's overhead beyond its network evaluations; for
DDPM++, the likelihood's ms per ODE function evaluation and its bits/dim, eager fp32, compiled TF32 and
compiled bf16 (a network with init_scale 1, so that its score is not zero); the cold compile time (a fresh
inductor cache) and a warm one (compiled again after torch._dynamo.reset()). Eager fp32 rows keep TF32 off,
so they are true fp32; ratios to the original's figures (ORIGINAL) are printed beside them. Forward GFLOP
per image are counted on the meta device (FlopCounterMode), for MFU = training FLOP/s (3× the forward) over
the device's dense bf16 peak. Prints a table; writes JSON (date, device, torch version).

Compiling is what costs time; once the run has spent --budget-s seconds, the remaining compiled
measurements are skipped and recorded as skipped (never silently), so one call fits the device's limit.
"""
import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# A fresh inductor cache unless one is given: the first compile of the run is then a cold one.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="score_sde_inductor_")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run_lib  # noqa: E402
from configs import load_config  # noqa: E402
from score_sde import train as training  # noqa: E402
from score_sde.acceleration import autocast, compile_in_place  # noqa: E402
from score_sde.data import get_data_scaler, uniform_dequantize  # noqa: E402
from score_sde.likelihood import bits_per_dim, log_likelihood  # noqa: E402
from score_sde.models import create_model, get_score_fn  # noqa: E402
from score_sde.models.score_fn import noise_labels  # noqa: E402
from score_sde.sampling import pc_sample  # noqa: E402

MODELS = {"DDPM++ cont. (VP)": "vp_ddpmpp_continuous", "NCSN++ cont. (VE)": "ve_ncsnpp_continuous",
          "DDPM (VP)": "vp_ddpm"}
# The original code on one H100, batch 128, fp32 (the table): what the ratios are taken against.
ORIGINAL = {
    "DDPM++ cont. (VP)": dict(train_images_s=783, peak_gib=11.6, eval_ms=45, pc_ms=42, likelihood_ms=160),
    "NCSN++ cont. (VE)": dict(train_images_s=750, peak_gib=11.7, eval_ms=55, pc_ms=115),
    "DDPM (VP)": dict(train_images_s=1470, peak_gib=7.0, eval_ms=28),
}
# Dense bf16 peak FLOP/s by device name (vendor data sheets), for MFU.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


# ---- setting up ----


def experiment(name, quick, channels_last=False):
    """The named config at batch 128, or shrunk to tiny networks on 8×8 images at batch 2 with --quick."""
    config = load_config(name)
    config.training.batch_size = 128
    config.model.channels_last = channels_last
    if quick:
        config.training.batch_size = 2
        config.data.image_size = 8
        m = config.model
        m.ch_mult, m.num_res_blocks, m.attn_resolutions = (1, 2), 1, (4,)
        m.nf = 32 if m.name == "ddpm" else 8  # DDPM's GroupNorm has 32 groups
    return config


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, iters, warmup=2):
    """Seconds per call of fn (mean over iters after warmup calls), and the first call's seconds."""
    start = time.perf_counter()
    fn()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters, first


@contextlib.contextmanager
def peak_memory(device, result):
    """Puts the peak GPU memory in GiB allocated inside the block into result['peak_gib'] (None on a CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def forward_gflop(config):
    """Forward GFLOP per image, counted on the meta device (nothing is allocated or computed)."""
    with torch.device("meta"):
        model = create_model(config).eval()
        size, channels = config.data.image_size, config.data.num_channels
        x, labels = torch.zeros(1, channels, size, size), torch.full((1,), 0.5)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x, labels)
    return counter.get_total_flops() / 1e9


def random_batch(config, device, generator):
    """Images in the model's input range, as the data pipeline gives them."""
    shape = run_lib.sample_shape(config, config.training.batch_size)
    x = torch.rand(shape, device=device, generator=generator)
    return 2 * x - 1 if config.data.centered else x


# ---- the measurements ----


def train_speed(config, device, precision, compile_mode, iters):
    """Images/s of the real training step, peak memory, and (compiled) the first step's seconds."""
    config.training.compile = compile_mode
    state = run_lib.build_state(config)
    run_lib.accelerate(config, state.model)
    sde = run_lib.build_sde(config)
    loss_fn = training.make_loss(sde, **run_lib.loss_kwargs(config, train=True))
    batch = random_batch(config, device, torch.Generator(device).manual_seed(0))
    o = config.optim
    result = {}
    with peak_memory(device, result):
        seconds, first = timed(lambda: training.train_step(state, batch, loss_fn, o.lr, o.warmup, o.grad_clip,
                                                           precision), device, iters)
    result.update(images_s=len(batch) / seconds, first_step_s=first)
    return result


def network(config, device, compile_mode=None):
    torch.manual_seed(0)
    memory_format = torch.channels_last if config.model.channels_last else torch.preserve_format
    model = create_model(config).to(device, memory_format=memory_format).eval()
    compile_in_place(model, compile_mode)
    return model


def eval_speed(model, config, sde, device, precision, iters):
    """ms per network evaluation (eval mode, no grad) and the first call's seconds."""
    gen = torch.Generator(device).manual_seed(1)
    x = random_batch(config, device, gen)
    labels = noise_labels(sde, torch.rand(len(x), device=device, generator=gen), config.training.continuous)

    def evaluate():
        with torch.no_grad(), autocast(device, precision):
            model(x, labels)

    seconds, first = timed(evaluate, device, iters)
    return dict(eval_ms=1e3 * seconds, first_call_s=first)


def pc_speed(model, config, device, precision, levels, eval_ms):
    """ms per PC level with the config's predictor and corrector over `levels` levels (a short run of the
    same per-level work), and how much of it is not network evaluation."""
    config.model.num_scales = levels
    sde = run_lib.build_sde(config)
    score_fn = get_score_fn(sde, model, continuous=config.training.continuous)
    s = config.sampling
    shape = run_lib.sample_shape(config, config.training.batch_size)

    nfe = []

    def sample():
        with torch.no_grad(), autocast(device, precision):
            nfe.append(pc_sample(sde, score_fn, shape, s.predictor, s.corrector, s.snr, s.n_steps_each,
                                 denoise=s.noise_removal, generator=torch.Generator(device).manual_seed(2),
                                 device=device)[1])

    seconds, _ = timed(sample, device, iters=1, warmup=1)
    evaluations = nfe[-1] / levels
    per_level = 1e3 * seconds / levels
    return dict(pc_ms=per_level, pc_overhead=per_level / (evaluations * eval_ms) - 1)


def likelihood_speed(model, config, sde, device, precision, rtol, warm_up):
    """ms per likelihood ODE function evaluation and the bits/dim, the same data and probes every time;
    with warm_up, an untimed first solve at a loose tolerance (a few evaluations, which compile a compiled
    network's graphs)."""
    score_fn = get_score_fn(sde, model, continuous=config.training.continuous)
    gen = torch.Generator(device).manual_seed(3)
    pixels = torch.randint(0, 256, run_lib.sample_shape(config, config.training.batch_size), device=device,
                           generator=gen)
    x = get_data_scaler(config.data.centered)(uniform_dequantize(pixels.float() / 255, generator=gen))

    def measure(tolerance):
        with autocast(device, precision):
            return log_likelihood(sde, score_fn, x, rtol=tolerance, atol=tolerance,
                                  generator=torch.Generator(device).manual_seed(4))

    if warm_up:
        measure(0.1)
        synchronize(device)
    start = time.perf_counter()
    logp, _, nfe = measure(rtol)
    synchronize(device)
    bpd = bits_per_dim(logp, x.shape, config.data.centered).mean().item()
    return dict(likelihood_ms=1e3 * (time.perf_counter() - start) / nfe, likelihood_nfe=nfe, bpd=bpd)


# ---- the run ----


class Budget:
    """Seconds spent since the start; `allows(what)` is False (and says so) once over the limit."""

    def __init__(self, seconds):
        self.seconds, self.start, self.skipped = seconds, time.perf_counter(), []

    def allows(self, what):
        if time.perf_counter() - self.start < self.seconds:
            return True
        self.skipped.append(what)
        print(f"  skipped (time budget of {self.seconds:.0f} s spent): {what}", flush=True)
        return False


def measure_network(label, name, args, device, budget, first):
    """Every figure for one network, as a dict."""

    def fresh():  # each measurement changes its copy of the config
        return experiment(name, args.quick, args.channels_last)

    config = fresh()
    row = dict(model=label, config=name, batch=config.training.batch_size,
               forward_gflop=forward_gflop(config))
    for key, precision, mode in (("fp32", "fp32", None), ("tf32", "tf32", None), ("bf16", "bf16", None),
                                 ("bf16_compiled", "bf16", args.compile_mode)):
        if mode is not None and not budget.allows(f"{label} compiled training"):
            continue
        row[f"train_{key}"] = train_speed(fresh(), device, precision, mode, args.iters)
        print(f"  {label}: training {key}: {row[f'train_{key}']}", flush=True)
    sde = run_lib.build_sde(config)
    eager = network(config, device)
    row["eval_fp32"] = eval_speed(eager, config, sde, device, "fp32", args.iters)
    row["pc_fp32"] = pc_speed(eager, fresh(), device, "fp32", args.levels,
                              row["eval_fp32"]["eval_ms"])
    fast = None
    if budget.allows(f"{label} compiled evaluation"):
        fast = network(config, device, args.compile_mode)
        row["eval_bf16_compiled"] = eval_speed(fast, config, sde, device, "bf16", args.iters)
        row["pc_bf16_compiled"] = pc_speed(fast, fresh(), device, "bf16", args.levels,
                                           row["eval_bf16_compiled"]["eval_ms"])
        if first and budget.allows("warm compile"):
            torch._dynamo.reset()  # forget the compiled code; inductor's on-disk cache stays warm
            row["warm_compile"] = eval_speed(network(config, device, args.compile_mode), config, sde, device,
                                             "bf16", 1)
    if first:  # the likelihood of DDPM++ (the original's 0.16 s per evaluation)
        def likelihood_network(compile_mode=None):
            model = network(config, device)
            if args.checkpoint:  # trained EMA weights, ours or the original's
                state, _ = run_lib.load_trained_state(config, None, args.checkpoint)
                state.ema.copy_to(state.model)
                model.load_state_dict(state.model.state_dict())
            compile_in_place(model, compile_mode)
            return model

        # Untrained, the network's last layer is zero (init_scale 0): its score would vanish and every path
        # would give the same bits/dim. With init_scale 1 the score is an O(1) random function.
        config.model.init_scale = 1.0
        row["likelihood_fp32"] = likelihood_speed(likelihood_network(), config, sde, device, "fp32",
                                                  args.rtol, False)
        for precision in ("tf32", "bf16"):
            if fast is None or not budget.allows(f"compiled likelihood ({precision})"):
                continue
            row[f"likelihood_{precision}_compiled"] = likelihood_speed(
                likelihood_network(args.compile_mode), config, sde, device, precision, args.rtol, True)
    print(f"  {label}: {row}", flush=True)
    return row


def peak_flops(device_name):
    return next((peak for key, peak in PEAK_BF16 if key in device_name), None)


def summary_lines(rows, device_name, quick=False):
    """The table: each figure, and ours ÷ the original's where the original was measured."""
    peak = peak_flops(device_name)

    def get(row, part, key):
        return (row.get(part) or {}).get(key)

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    def ratio(ours, original, inverse=False):
        if ours is None or original is None or quick:  # tiny networks: no comparison
            return ""
        return f" ({original / ours if inverse else ours / original:.2f}×)"

    lines = [f"{'figure':44s}" + "".join(f"{r['model']:>26s}" for r in rows)]
    figures = [
        ("training images/s fp32", "train_fp32", "images_s", "train_images_s", False, ".0f"),
        ("training images/s tf32", "train_tf32", "images_s", "train_images_s", False, ".0f"),
        ("training images/s bf16", "train_bf16", "images_s", "train_images_s", False, ".0f"),
        ("training img/s bf16 compiled", "train_bf16_compiled", "images_s", "train_images_s", False, ".0f"),
        ("peak training GiB fp32", "train_fp32", "peak_gib", "peak_gib", False, ".2f"),
        ("peak training GiB bf16 compiled", "train_bf16_compiled", "peak_gib", "peak_gib", False, ".2f"),
        ("compile: first training step s", "train_bf16_compiled", "first_step_s", None, False, ".1f"),
        ("network evaluation ms fp32", "eval_fp32", "eval_ms", "eval_ms", True, ".2f"),
        ("network evaluation ms bf16 compiled", "eval_bf16_compiled", "eval_ms", "eval_ms", True, ".2f"),
        ("compile (cold): first evaluation s", "eval_bf16_compiled", "first_call_s", None, False, ".1f"),
        ("compile (warm cache): first evaluation s", "warm_compile", "first_call_s", None, False, ".1f"),
        ("PC ms per level fp32", "pc_fp32", "pc_ms", "pc_ms", True, ".2f"),
        ("PC overhead beyond evaluations fp32", "pc_fp32", "pc_overhead", None, False, ".1%"),
        ("PC ms per level bf16 compiled", "pc_bf16_compiled", "pc_ms", "pc_ms", True, ".2f"),
        ("PC overhead beyond evaluations bf16 comp.", "pc_bf16_compiled", "pc_overhead", None, False, ".1%"),
        ("likelihood ms per evaluation fp32", "likelihood_fp32", "likelihood_ms", "likelihood_ms", True,
         ".2f"),
        ("likelihood ms per evaluation tf32 comp.", "likelihood_tf32_compiled", "likelihood_ms",
         "likelihood_ms", True, ".2f"),
        ("likelihood ms per evaluation bf16 comp.", "likelihood_bf16_compiled", "likelihood_ms",
         "likelihood_ms", True, ".2f"),
        ("likelihood bits/dim fp32", "likelihood_fp32", "bpd", None, False, ".4f"),
        ("likelihood bits/dim tf32 compiled", "likelihood_tf32_compiled", "bpd", None, False, ".4f"),
        ("likelihood bits/dim bf16 compiled", "likelihood_bf16_compiled", "bpd", None, False, ".4f"),
    ]
    for title, part, key, original_key, inverse, spec in figures:
        cells = []
        for r in rows:
            value = get(r, part, key)
            original = ORIGINAL.get(r["model"], {}).get(original_key) if original_key else None
            cells.append(f"{fmt(value, spec) + ratio(value, original, inverse):>26s}")
        lines.append(f"{title:44s}" + "".join(cells))
    lines.append(f"{'forward GFLOP per image':44s}" + "".join(f"{r['forward_gflop']:>26.4g}" for r in rows))
    if peak:
        mfu = [get(r, "train_bf16_compiled", "images_s") for r in rows]
        lines.append(f"{'MFU, compiled bf16 training':44s}" + "".join(
            f"{fmt(None if v is None else 3 * r['forward_gflop'] * 1e9 * v / peak, '.1%'):>26s}"
            for v, r in zip(mfu, rows)))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks, batch 2 (a smoke run)")
    parser.add_argument("--models", nargs="+", default=list(MODELS.values()), choices=list(MODELS.values()))
    parser.add_argument("--iters", type=int, default=None, help="timed training steps / evaluations")
    parser.add_argument("--levels", type=int, default=None, help="PC levels timed")
    parser.add_argument("--rtol", type=float, default=1e-3,  # a random network's flow is stiff: kept short
                        help="likelihood ODE tolerances")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode of the compiled rows")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip compiles after this many seconds (default 360; 60 with --quick, whose "
                             "cold CPU compiles alone took over 5 minutes)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="trained DDPM++ cont. weights (ours or the original's) for the likelihood rows")
    parser.add_argument("--channels-last", action="store_true", help="networks in channels_last format")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.iters = args.iters or (2 if args.quick else 10)
    if args.budget_s is None:
        args.budget_s = 60.0 if args.quick else 360.0
    args.levels = args.levels or (25 if args.quick else 50)  # the DDPM chain needs beta_max = 20 < levels
    device = run_lib.device()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32 rows
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{device_name}, torch {torch.__version__}, inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}",
          flush=True)
    budget, rows = Budget(args.budget_s), []
    for label, name in MODELS.items():
        if name in args.models:
            rows.append(measure_network(label, name, args, device, budget, first=not rows))
    lines = summary_lines(rows, device_name, args.quick)
    print("\n".join(lines))
    meta = dict(date=datetime.date.today().isoformat(), device=device_name, torch=torch.__version__,
                quick=args.quick, channels_last=args.channels_last, iters=args.iters, levels=args.levels,
                compile_mode=args.compile_mode,
                seconds=time.perf_counter() - budget.start, skipped=budget.skipped)
    suffix = "quick" if args.quick else device.type
    out = args.out or Path(__file__).parent / "results" / f"speed_{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, rows=rows, table=lines), indent=2))
    print(f"wrote {out} in {meta['seconds']:.0f} s")
    return rows


if __name__ == "__main__":
    main()
