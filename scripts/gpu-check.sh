#!/usr/bin/env bash
# One-shot GPU check (issue 4/7), run on the GPU machine from the binaries scripts/gpu-pack.sh
# built (.gpu/bundle.tar.xz): driver/device header, `medsyn doctor`, every GPU kernel test
# (kernel vs CPU twin, f32/bf16/f16), compute-sanitizer memcheck over the same tests, torch's
# reference figures, the GPU bench; prints the tables last. Logs go to $OUT (or
# /tmp/medsyn-gpu-check). Budget: about 8 minutes on an H100/H200.
#
#   bash scripts/gpu-pack.sh                       # here (needs Rust + the CUDA wheels)
#   bash scripts/gpu-check.sh                      # there (needs the driver, python3 + torch)
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/medsyn-gpu-check}
mkdir -p "$out"
bin=$(mktemp -d)
tar -C "$bin" -xJf .gpu/bundle.tar.xz || { echo "gpu-check: no .gpu/bundle.tar.xz (run scripts/gpu-pack.sh)"; exit 2; }
export MEDSYN_REQUIRE_GPU=1
# compute-sanitizer ships with the toolkit, not always on PATH.
export PATH="$PATH:/usr/local/cuda/bin:/usr/local/cuda/compute-sanitizer"
status=0
step() { # step NAME SECONDS CMD...: runs CMD under a time limit, notes a failure
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "== $name: rc $rc, $((SECONDS - t0)) s" | tee -a "$out/steps.txt"
    [[ $rc == 0 ]] || status=1
}

{
    echo "medsyn commit: $(tr '\n' ' ' <"$bin/commit")"
    date -u +"date: %Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    echo "host: $(uname -srm); $(ldd --version | head -1)"
} >"$out/header.txt" 2>&1

step doctor 60 "$bin/medsyn" doctor >>"$out/header.txt" 2>&1
cat "$out/header.txt"

rm -f "$out/kernels.tsv"
MEDSYN_GPU_REPORT="$out/kernels.tsv" step tests 180 "$bin/gpu-tests" --test-threads=4 >"$out/tests.log" 2>&1
grep -E "^test |test result|panicked|FAIL" "$out/tests.log" | tail -60

# memcheck slows kernels 10-100x: the B = 8192 InfoNCE case (its float64 reference alone takes
# ~a minute) and the whole-pipeline generation (its CPU twin runs the same U-Net) are left to
# the plain run above; every op-level runtime test runs under memcheck.
if command -v compute-sanitizer >/dev/null; then
    step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
        "$bin/gpu-tests" --test-threads=1 --skip large_batch --skip generation_on_the_gpu >"$out/memcheck.log" 2>&1
    grep -E "ERROR SUMMARY|========= (Invalid|Program hit|Error)|test result" "$out/memcheck.log" | head -20
else
    echo "== memcheck: compute-sanitizer not found" | tee -a "$out/steps.txt"
fi

step torch 150 python3 benches/gpu_torch_reference.py >"$out/torch.json" 2>"$out/bench.log"
tail -5 "$out/bench.log"

MEDSYN_TORCH_REF="$out/torch.json" MEDSYN_BENCH_JSON="$out/bench.json" \
    step bench 150 "$bin/gpu-bench" >>"$out/bench.log" 2>&1

echo
echo "## kernels (GPU vs CPU twin): name dtype, result, max abs error over its cases"
if [[ -f $out/kernels.tsv ]]; then
    python3 - "$out/kernels.tsv" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, result, err = line.rstrip("\n").split("\t")
    ok, e = rows.get(name, (True, 0.0))
    rows[name] = (ok and result == "pass", max(e, float(err)))
for name, (ok, e) in sorted(rows.items()):
    print(f"{name:<44} {'pass' if ok else 'FAIL':<5} {e:.2e}")
print(f"{sum(ok for ok, _ in rows.values())}/{len(rows)} kernel/dtype checks pass")
PY
fi
echo
echo "## bench (speedup = torch time / medsyn time; limit = fraction of the measured GEMM peak or copy bandwidth)"
cat "$out/bench.log"
echo
cat "$out/steps.txt"
exit $status
