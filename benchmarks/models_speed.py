"""Forward+backward speed and peak memory of the full-size networks, fp32 and bf16 autocast.

The issue asks for a forward+backward of full-size DDPM++ and NCSN++ (CIFAR-10, batch 128) in bf16 on a GPU;
this is that measurement, one command:

    .venv/bin/python benchmarks/models_speed.py                  # on a GPU: batch 128, all models
    .venv/bin/python benchmarks/models_speed.py --batch 2 --iters 2   # CPU smoke run (not a GPU figure)

The full-size configs are read from the reference manifest (../shared/fixtures/reference_models), so the
networks are exactly the published ones. TF32 stays off for the fp32 rows, so they are true fp32. Writes
JSON to benchmarks/results/models_speed_<device>.json with the date and the device name.
"""
import argparse
import datetime
import json
import time
from pathlib import Path

import ml_collections
import torch

from score_sde.models import create_model

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_models"
MANIFEST = FIXTURES / "full_manifest.json"
MODELS = {
    "DDPM++ cont. (VP)": "vp/cifar10_ddpmpp_continuous",
    "NCSN++ cont. (VE)": "ve/cifar10_ncsnpp_continuous",
    "DDPM (VP)": "vp/ddpm/cifar10",
}


def build(entry, device):
    cfg = ml_collections.ConfigDict({k: v for k, v in entry["config"].items() if k != "device"})
    return create_model(cfg).to(device).train(), cfg


def labels_for(cfg, batch, device):
    """Labels as get_score_fn passes them: σ for the Fourier (VE) model, 999·t for the others."""
    t = torch.rand(batch, device=device)
    if cfg.model.get("embedding_type") == "fourier":
        return cfg.model.sigma_min * (cfg.model.sigma_max / cfg.model.sigma_min) ** t
    return 999 * t


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_step(model, x, labels, precision, iters, warmup=3):
    """Seconds per forward+backward (mean over iters after warmup) and peak memory in GiB."""
    device = x.device

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, labels).float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    manifest = json.loads(MANIFEST.read_text())["models"]
    rows = []
    for label, key in MODELS.items():
        model, cfg = build(manifest[key], device)
        size = cfg.data.image_size
        x = torch.randn(args.batch, cfg.data.num_channels, size, size, device=device)
        labels = labels_for(cfg, args.batch, device)
        for precision in ("fp32", "bf16"):
            seconds, peak = time_step(model, x, labels, precision, args.iters)
            rows.append(dict(model=label, precision=precision, batch=args.batch, ms_per_step=1e3 * seconds,
                             images_per_s=args.batch / seconds, peak_gib=peak))
            print(f"{label:20s} {precision:5s} batch {args.batch:4d}: {1e3 * seconds:8.1f} ms/step, "
                  f"{args.batch / seconds:8.1f} img/s, peak {peak:.2f} GiB", flush=True)
    out = args.out or Path(__file__).parent / "results" / f"models_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(date=datetime.date.today().isoformat(), device=device_name, torch=torch.__version__)
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out} ({device_name})")


if __name__ == "__main__":
    main()
