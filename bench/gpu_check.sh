#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU, python3, torch and triton
# (and nothing else of refute's: wheels of the other runtime dependencies may be
# given in WHEELS, a folder; the SmolLM2 GGUF in REFUTE_SMOLLM2_GGUF).
#
#   bench/gpu_check.sh kernels OUTDIR   # determinism benchmark without the real models + tests/test_gpu.py
#   bench/gpu_check.sh smollm2 OUTDIR   # SmolLM2: its determinism case, a claim proven on the GPU, generation tests
#   bench/gpu_check.sh minilm OUTDIR    # MiniLM (REFUTE_MINILM_DIR): its determinism case and a claim
#
# Each stage writes its log and JSON reports to OUTDIR; a model stage merges its
# case into KERNELS_REPORT's cases as OUTDIR/<gpu>.json. The claim bundles the
# model stages write are then checked on a CPU with `refute check --mode full`.
set -uo pipefail
stage=${1:?stage: kernels or smollm2}
out=${2:?output folder}
mkdir -p "$out"
repo=$(cd "$(dirname "$0")/.." && pwd)

# refute's packages map onto the repository's folders (pyproject's package-dir):
# build that layout with links instead of installing.
pkg=/tmp/refute-pkg
rm -rf "$pkg" && mkdir -p "$pkg/refute"
cp -r "$repo/refute/." "$pkg/refute/"
for d in kernels compute verifier contracts; do ln -s "$repo/$d" "$pkg/refute/$d"; done
site=/tmp/refute-site
if [ -n "${WHEELS:-}" ] && [ ! -d "$site" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl || exit 2
fi
export PYTHONPATH="$pkg:$site" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
cd "$repo"

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr 'A-Z' 'a-z')
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"

case "$stage" in
kernels)
    python3 -P -m refute bench determinism --skip minilm_embed_4,smollm2_prefill_16 --time-budget 0.2 \
        --out "$out/determinism-kernels.json" 2>&1 | tee "$out/determinism-kernels.log"
    timeout "${TEST_TIMEOUT:-300}" python3 -P -m pytest tests/test_gpu.py -v -m "not slow" -p no:cacheprovider \
        > "$out/test_gpu.log" 2>&1
    grep -E "PASSED|FAILED|ERROR|passed|failed" "$out/test_gpu.log" | tail -60
    ;;
smollm2 | minilm)
    # A real model: its determinism case, merged into the kernels stage's report
    # (KERNELS_REPORT, or an earlier merge) so each machine has one report.
    case_name=$([ "$stage" = smollm2 ] && echo smollm2_prefill_16 || echo minilm_embed_4)
    python3 -P -m refute bench determinism --suite "$stage" --only "$case_name" --time-budget 0.5 \
        --out "$out/determinism-$stage.json" 2>&1 | tee "$out/determinism-$stage.log"
    if [ -f "${KERNELS_REPORT:-}" ]; then
        python3 - "$KERNELS_REPORT" "$out/determinism-$stage.json" "$out/$gpu.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
a["results"] = [e for e in a["results"] if e["case"] not in {f["case"] for f in b["results"]}] + b["results"]
a["suites"] = sorted(set(a["suites"]) | set(b["suites"]))
a["mismatches"] = sum(not e["match"] for e in a["results"])
a["errors"] = sum("error" in e for e in a["results"])
json.dump(a, open(sys.argv[3], "w"), indent=1)
print(f"{sys.argv[3]}: {len(a['results'])} results, {a['mismatches']} mismatches")
EOF
    fi
    # A claim proven here, to be checked on a CPU with `refute check --mode full`.
    start=$SECONDS
    if [ "$stage" = smollm2 ]; then
        python3 -P -m refute prove smollm2 --backend triton \
            --prompt "Explain why bit-exact inference matters for verifiable compute." --max-new-tokens 24 \
            --temperature 0.8 --top-k 40 --top-p 0.95 --seed 11 --out "$out/bundle-$stage-$gpu.json" 2>&1 | tee "$out/prove.log"
    else
        python3 -P -m refute prove minilm --backend triton "verifier nodes replay sampled work" \
            "a bisection game narrows a dispute to one element" --out "$out/bundle-$stage-$gpu.json" 2>&1 | tee "$out/prove.log"
    fi
    echo "prove wall $((SECONDS - start)) s" | tee -a "$out/prove.log"
    if [ "$stage" = smollm2 ]; then
        timeout "${TEST_TIMEOUT:-300}" python3 -P -m pytest tests/test_gpu.py -q -m slow -p no:cacheprovider 2>&1 \
            | tail -20 | tee "$out/test_gpu_smollm2.log"
    fi
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
