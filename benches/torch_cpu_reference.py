"""PyTorch CPU timings of the cases in benches/cpu_gemm_conv.rs.

    python3 benches/torch_cpu_reference.py --threads 2          # all cases, one JSON object
    python3 benches/torch_cpu_reference.py --threads 2 --serve  # one JSON line per case name on stdin

Cases (f32): GEMM 1024^3 forward (a @ b) and backward (dA = dC Bᵀ, dB = Aᵀ dC);
conv2d 3x3, 64->64 channels, 64x64, batch 8, stride 1, pad 1, forward and backward
(grad input + grad weight, no bias), each half of that backward alone, and the forward
at batch 1. Each timing: warm-up, then the median of several runs. `--serve` lets the
Rust bench alternate medsyn and torch case by case, so both see the same machine load.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def median_seconds(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_cases():
    torch.manual_seed(0)
    n = 1024
    a = torch.randn(n, n, requires_grad=True)
    b = torch.randn(n, n, requires_grad=True)
    dc = torch.randn(n, n)
    c = torch.mm(a, b)
    x = torch.randn(8, 64, 64, 64, requires_grad=True)
    k = torch.randn(64, 64, 3, 3, requires_grad=True)
    y = F.conv2d(x, k, padding=1)
    dy = torch.randn_like(y)
    x1 = x[:1].detach().contiguous()

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    def grad(out, wrt, g):
        return lambda: torch.autograd.grad(out, wrt, g, retain_graph=True)

    return {
        "gemm_fwd": no_grad(lambda: torch.mm(a, b)),
        "gemm_bwd": grad(c, (a, b), dc),
        "conv_fwd": no_grad(lambda: F.conv2d(x, k, padding=1)),
        "conv_bwd": grad(y, (x, k), dy),
        "conv_bwd_dx": grad(y, (x,), dy),
        "conv_bwd_dw": grad(y, (k,), dy),
        "conv_fwd_b1": no_grad(lambda: F.conv2d(x1, k, padding=1)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--serve", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = make_cases()
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()}
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
