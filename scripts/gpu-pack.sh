#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has no Rust toolchain: the medsyn
# binary, the GPU kernel tests and the GPU bench, release, `--features cuda`, stripped, in
# .gpu/bundle.tar.xz (the kernels' PTX/cubins make each binary ~30 MB; xz brings the three to
# ~12 MB, under the device tool's 64 MiB). .gpu/ is git-ignored through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The JSON lines name each artifact; pick the executables of the gpu test and bench targets.
cargo build --release --features cuda --bin medsyn
exes=$(cargo test --release --features cuda --test gpu --bench gpu --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        print(m["target"]["kind"][0], m["executable"])')
cp target/release/medsyn "$stage/medsyn"
while read -r kind path; do
    case $kind in
    test) cp "$path" "$stage/gpu-tests" ;;
    bench) cp "$path" "$stage/gpu-bench" ;;
    esac
done <<<"$exes"
for f in medsyn gpu-tests gpu-bench; do
    [[ -x $stage/$f ]] || { echo "gpu-pack: $f was not built" >&2; exit 1; }
    strip "$stage/$f"
done
git rev-parse --short=12 HEAD >"$stage/commit"
git status --porcelain --untracked-files=no | grep -q . && echo "+ uncommitted changes" >>"$stage/commit"
mkdir -p .gpu
tar -C "$stage" -cJf .gpu/bundle.tar.xz medsyn gpu-tests gpu-bench commit
ls -la .gpu/bundle.tar.xz
