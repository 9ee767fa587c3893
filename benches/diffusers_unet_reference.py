"""diffusers CPU timings of one UNet2DConditionModel step, for benches/unet_step.rs.

    python3 benches/diffusers_unet_reference.py --threads 2 --cases CASES_JSON          # one JSON object
    python3 benches/diffusers_unet_reference.py --threads 2 --cases CASES_JSON --serve  # one JSON line per case name on stdin

CASES_JSON maps a case name to {"config": <U-Net config.json>, "sample": [B, C, H, W],
"context": [B, L, D], "timestep": t}; the Rust bench passes its own cases, so both
sides build the same models (`MEDSYN_BENCH_PRINT_CASES=1 cargo bench --bench unet_step`
prints them). Weights are diffusers' default random initialisation: the values do not
matter for speed, the shapes do. Each model runs in f32 under torch.no_grad (as the
diffusers pipeline does). Its forward's FLOPs are counted once with
torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention) and reported
with the parameter count in the first line. Each timing: warm-up, then the median of
several runs. `--serve` lets the Rust bench alternate medsyn and diffusers case by case,
so both see the same machine load.
"""
import argparse
import json
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import diffusers
from diffusers import UNet2DConditionModel


def median_seconds(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_case(spec, seed):
    torch.manual_seed(seed)
    model = UNet2DConditionModel(**spec["config"]).eval()
    sample = torch.randn(*spec["sample"])
    context = torch.randn(*spec["context"])
    timestep = torch.tensor(float(spec["timestep"]))

    def step():
        with torch.no_grad():
            return model(sample, timestep, encoder_hidden_states=context).sample

    with FlopCounterMode(display=False) as counter:
        out = step()
    info = {
        "flops": counter.get_total_flops(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "output_shape": list(out.shape),
        "attention_processor": type(model.attn_processors[next(iter(model.attn_processors))]).__name__
        if model.attn_processors
        else None,
    }
    return step, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--cases", required=True, help="JSON: case name -> {config, sample, context, timestep}")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = json.loads(args.cases)
    cases, case_info = {}, {}
    for i, (key, spec) in enumerate(specs.items()):
        cases[key], case_info[key] = make_case(spec, i)
    info = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cases": case_info,
    }
    if not args.serve:
        seconds = {key: median_seconds(fn, args.warmup, args.runs) for key, fn in cases.items()}
        print(json.dumps({**info, "seconds": seconds}))
        return
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        key = line.strip()
        if not key:
            continue
        if key not in cases:
            print(json.dumps({"error": f"unknown case {key}"}), flush=True)
            continue
        print(json.dumps({"case": key, "seconds": median_seconds(cases[key], args.warmup, args.runs)}), flush=True)


if __name__ == "__main__":
    main()
