"""torch's figures for the GPU bench (benches/gpu/), measured on the same card in the same run.

Prints one flat JSON object (scripts/gpu-check.sh saves it and points MEDSYN_TORCH_REF at it):
  gemm_bf16_tflops            torch.matmul 8192^3 in bf16 (cuBLAS): the card's compute limit
  copy_gbps                   a 1 GiB tensor copy, read + write bytes per second
  sdpa_fwd_ms/d{D}/s{S}       F.scaled_dot_product_attention forward, bf16, (B, 16, S, D),
                              B = 8 at S = 1024 and 2 at S = 4096, no mask, not causal
  sdpa_bwd_ms/d{D}/s{S}       its backward alone ((forward + backward) - forward)
  sdpa_backend/d{D}/s{S}      1 flash, 2 memory-efficient, 3 math (the first that runs)
  infonce_ms/B{B}             plain PyTorch symmetric InfoNCE forward + backward, bf16 [B, 512]
                              embeddings, temperature 0.07: logits = a @ b.T / t (f32),
                              (cross_entropy(logits) + cross_entropy(logits.T)) / 2
  infonce_peak_bytes/B{B}     its peak memory beyond the inputs
  gemm_ms/B{B}                one B x B x 512 bf16 GEMM (a @ b.T)
  conv3x3_ms/{case}           cuDNN conv2d 3x3 forward, bf16, channels-last off (NCHW)

Timings: CUDA events after warm-up, median of the runs.
"""

import json
import sys

import torch
import torch.nn.functional as F


def median_ms(fn, warmup=3, iters=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def gemm_peak(out):
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, warmup=5, iters=20)
    out["gemm_bf16_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12


def copy_bandwidth(out):
    n = 1 << 28
    a = torch.empty(n, device="cuda", dtype=torch.float32).normal_()
    b = torch.empty_like(a)
    ms = median_ms(lambda: b.copy_(a), warmup=3, iters=10)
    out["copy_gbps"] = 2 * n * 4 / (ms * 1e-3) / 1e9


def sdpa_backend(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for code, backend in ((1, SDPBackend.FLASH_ATTENTION), (2, SDPBackend.EFFICIENT_ATTENTION), (3, SDPBackend.MATH)):
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v)
            return code
        except RuntimeError:
            continue
    return 0


def attention(out):
    for d in (40, 64, 80, 128, 160):
        for s in (1024, 4096):
            b = 8 if s == 1024 else 2
            q, k, v = (
                torch.randn(b, 16, s, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
            )
            do = torch.randn(b, 16, s, d, device="cuda", dtype=torch.bfloat16)
            fwd = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))

            def fwd_bwd():
                o = F.scaled_dot_product_attention(q, k, v)
                torch.autograd.grad(o, (q, k, v), do)

            both = median_ms(fwd_bwd)
            out[f"sdpa_fwd_ms/d{d}/s{s}"] = fwd
            out[f"sdpa_bwd_ms/d{d}/s{s}"] = max(both - fwd, 1e-6)
            out[f"sdpa_backend/d{d}/s{s}"] = sdpa_backend(q.detach(), k.detach(), v.detach())
            del q, k, v, do


def infonce(out):
    d, t = 512, 0.07
    for bsz in (4096, 16384, 65536):
        a = torch.randn(bsz, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(bsz, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        labels = torch.arange(bsz, device="cuda")

        def step():
            logits = (a @ b.T).float() / t
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            torch.autograd.grad(loss, (a, b))

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        out[f"infonce_peak_bytes/B{bsz}"] = torch.cuda.max_memory_allocated() - base
        out[f"infonce_ms/B{bsz}"] = median_ms(step, warmup=1, iters=5)
        ad, bd = a.detach(), b.detach()
        out[f"gemm_ms/B{bsz}"] = median_ms(lambda: ad @ bd.T, warmup=2, iters=10)
        del a, b, ad, bd, labels
        torch.cuda.empty_cache()


# (name, batch, in channels, out channels, height = width): U-Net and ResNet-50 shapes.
CONV_CASES = [
    ("unet_c320_64", 2, 320, 320, 64),
    ("unet_c640_32", 2, 640, 640, 32),
    ("unet_c1280_16", 2, 1280, 1280, 16),
    ("resnet_c64_56", 32, 64, 64, 56),
    ("resnet_c256_14", 32, 256, 256, 14),
]


def conv(out):
    torch.backends.cudnn.benchmark = True
    for name, n, cin, cout, hw in CONV_CASES:
        x = torch.randn(n, cin, hw, hw, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(cout, cin, 3, 3, device="cuda", dtype=torch.bfloat16)
        out[f"conv3x3_ms/{name}"] = median_ms(lambda: F.conv2d(x, w, padding=1))


def main():
    if not torch.cuda.is_available():
        print("torch sees no GPU", file=sys.stderr)
        sys.exit(1)
    out = {"torch_version": torch.__version__, "device": torch.cuda.get_device_name()}
    for part in (gemm_peak, copy_bandwidth, attention, infonce, conv):
        try:
            part(out)
        except Exception as e:  # one part failing (e.g. out of memory) keeps the others
            print(f"{part.__name__}: {e}", file=sys.stderr)
        torch.cuda.empty_cache()
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
