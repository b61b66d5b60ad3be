#!/usr/bin/env bash
# The rasterizer's GPU check, for a machine with an NVIDIA GPU, nvcc and a CUDA build of torch:
#   1. builds avatar3d._C in place with the CUDA kernels (AVATAR3D_CUDA=1, for this GPU's architecture only),
#   2. a smoke render, and the CUDA toolkit's compute-sanitizer (memcheck, racecheck, synccheck, initcheck)
#      on a small scene when it is installed,
#   3. the CUDA tests of tests/test_raster_native.py (they compare against the oracle and the C++ kernels),
#   4. `avatar3d bench raster --device cuda --json` (with gsplat in the table when it imports),
# then prints a summary. Needs only torch, numpy, pytest and setuptools (no PyAV, mediapipe or viser; tyro only
# for the CLI form of the benchmark, otherwise the same function is called directly). No network access.
#
# Usage: tools/gpu_check.sh [OUT_DIR]        (default OUT_DIR: outputs/gpu_check)
# Environment: PYTHON (default python3), SKIP_BUILD=1, SKIP_SANITIZER=1, SKIP_BENCH=1,
#              BENCH_ARGS (extra arguments for the benchmark, e.g. "--repeats 20"), MAX_JOBS (build parallelism).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
OUT="${1:-outputs/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

declare -A STATUS=()
step() { echo; echo "=== $*"; }
die() { echo "gpu_check: $*" >&2; exit 2; }

# ---------------------------------------------------------------- 0. environment
step "environment"
"$PY" - <<'EOF' || die "torch with CUDA is required (a CUDA build of torch and a visible GPU)"
import sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torch CUDA", torch.version.cuda)
assert torch.version.cuda is not None, "this torch was built without CUDA"
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("device:", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
EOF
for mod in numpy pytest setuptools; do
    "$PY" -c "import $mod" 2>/dev/null || die "python module '$mod' is missing (install it with pip; no other extras are needed)"
done
NVCC="$(command -v nvcc || true)"
if [[ -z "$NVCC" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then NVCC="$CUDA_HOME/bin/nvcc"; fi
if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
[[ -n "$NVCC" ]] || die "nvcc not found: install the CUDA toolkit (same major version as torch's CUDA) or set CUDA_HOME"
export CUDA_HOME="${CUDA_HOME:-$(cd "$(dirname "$NVCC")/.." && pwd)}"
export PATH="$CUDA_HOME/bin:$PATH"
echo "nvcc: $("$NVCC" --version | tail -1) (CUDA_HOME=$CUDA_HOME)"

# ---------------------------------------------------------------- 1. build
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
    step "build (AVATAR3D_CUDA=1)"
    # Only this GPU's architecture: faster, and independent of which old architectures this nvcc still knows.
    ARCH="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$ARCH}"
    echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
    if AVATAR3D_CUDA=1 "$PY" setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
        STATUS[build]="ok"
    else
        tail -40 "$OUT/build.log"
        die "the CUDA build failed (full log: $OUT/build.log)"
    fi
fi
"$PY" -c "import avatar3d._C as C; assert C.has_cuda(), 'extension built without CUDA'; print('avatar3d._C has CUDA kernels')" \
    || die "avatar3d._C does not import with its CUDA kernels"

# ---------------------------------------------------------------- 2. smoke render + sanitizer
cat > "$OUT/smoke.py" <<'EOF'
# One small forward+backward on CUDA with several channel passes, compared against the C++ kernels.
import sys
import torch
from avatar3d.render import rasterize
from avatar3d.render.scenes import random_scene

scene = random_scene(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, 67, 45, seed=1, channels=6)
out = {}
for device in ("cpu", "cuda"):
    sc = scene.to(device=device).requires_grad_()
    image, alpha, meta = rasterize(**sc.rasterize_kwargs(), backend=device, antialiased=True)
    (image.square().sum() + alpha.sum()).backward()
    torch.cuda.synchronize()
    out[device] = (image.detach().cpu(), sc.means.grad.cpu(), sc.colors.grad.cpu())
diff = (out["cpu"][0] - out["cuda"][0]).abs().max().item()
g_err = max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(out["cuda"][1:], out["cpu"][1:]))
print(f"smoke: max |image cpu - cuda| = {diff:.3g}, worst relative gradient difference = {g_err:.3g}")
sys.exit(0 if diff <= 1e-3 and g_err <= 1e-3 else 1)
EOF
step "smoke render (CUDA_LAUNCH_BLOCKING=1)"
if CUDA_LAUNCH_BLOCKING=1 "$PY" "$OUT/smoke.py" 2>&1 | tee "$OUT/smoke.log"; then STATUS[smoke]="ok"; else STATUS[smoke]="FAILED"; fi

SAN="$(command -v compute-sanitizer || true)"
[[ -z "$SAN" && -x "$CUDA_HOME/bin/compute-sanitizer" ]] && SAN="$CUDA_HOME/bin/compute-sanitizer"
if [[ "${SKIP_SANITIZER:-0}" != "1" && -n "$SAN" ]]; then
    for tool in memcheck racecheck synccheck initcheck; do
        step "compute-sanitizer --tool $tool"
        # All kernels of the run are checked (torch's few small ones too); the scene is tiny so this stays quick.
        if "$SAN" --tool "$tool" --error-exitcode 3 "$PY" "$OUT/smoke.py" 300 > "$OUT/sanitizer_$tool.log" 2>&1; then
            STATUS["sanitizer_$tool"]="ok"
        else
            STATUS["sanitizer_$tool"]="FAILED (see $OUT/sanitizer_$tool.log)"
            grep -m 20 -E "=========" "$OUT/sanitizer_$tool.log" || tail -20 "$OUT/sanitizer_$tool.log"
        fi
    done
elif [[ -z "$SAN" ]]; then
    STATUS[sanitizer]="skipped (compute-sanitizer not found)"
fi

# ---------------------------------------------------------------- 3. CUDA tests
step "CUDA tests (tests/test_raster_native.py -k cuda)"
"$PY" -m pytest tests/test_raster_native.py -k cuda -q -rfEs -p no:cacheprovider 2>&1 | tee "$OUT/tests.log"
TEST_RC=${PIPESTATUS[0]}
TEST_LINE="$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$OUT/tests.log" | tail -1)"
if [[ $TEST_RC -eq 0 ]] && ! grep -qE '[0-9]+ skipped' <<<"$TEST_LINE"; then
    STATUS[tests]="ok: $TEST_LINE"
else
    STATUS[tests]="FAILED (rc $TEST_RC): $TEST_LINE"
fi

# ---------------------------------------------------------------- 4. benchmark
if [[ "${SKIP_BENCH:-0}" != "1" ]]; then
    step "avatar3d bench raster --device cuda"
    BENCH_JSON="$OUT/bench_raster_cuda.json"
    # shellcheck disable=SC2086
    if "$PY" -c "import tyro" 2>/dev/null; then
        "$PY" -c "import sys; from avatar3d.cli import entry; sys.argv[0] = 'avatar3d'; entry()" \
            bench raster --device cuda --json "$BENCH_JSON" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
    else
        echo "(tyro is not installed: calling avatar3d.benchmarks.raster.run_raster_bench directly; BENCH_ARGS ignored)"
        "$PY" -c "from avatar3d.benchmarks.raster import run_raster_bench; run_raster_bench(device='cuda', json_path='$BENCH_JSON')" \
            2>&1 | tee "$OUT/bench.log"
    fi
    if [[ ${PIPESTATUS[0]} -eq 0 && -f "$BENCH_JSON" ]]; then STATUS[bench]="ok: $BENCH_JSON"; else STATUS[bench]="FAILED"; fi
fi

# ---------------------------------------------------------------- summary
step "summary"
for key in $(printf '%s\n' "${!STATUS[@]}" | sort); do printf '%-22s %s\n' "$key" "${STATUS[$key]}"; done
if [[ -f "${BENCH_JSON:-/nonexistent}" ]]; then
    "$PY" - "$BENCH_JSON" <<'EOF'
import json
import sys

result = json.load(open(sys.argv[1]))
print("bench device:", result["device"])
for case in result["cases"]:
    if case["backend"] in ("cuda", "gsplat") and case["width"] == 512:
        print(f"  {case['backend']:<7} N={case['n']:<7} 512x512  fwd {case['fwd_ms']:.3f} ms  "
              f"fwd+bwd {case['fwdbwd_ms']:.3f} ms")
target = next((c for c in result["cases"] if (c["backend"], c["n"], c["width"]) == ("cuda", 100_000, 512)), None)
if target is not None:
    print(f"target fwd <= 1 ms at N=100k 512x512: {target['fwd_ms']:.3f} ms "
          f"({'met' if target['fwd_ms'] <= 1.0 else 'NOT met'})")
ratio = result.get("ratio_cuda_vs_gsplat_fwdbwd")
print("fwd+bwd ours/gsplat at N=100k 512x512:",
      "n/a (gsplat not installed)" if ratio is None else f"{ratio:.2f} (target <= 1.25)")
EOF
fi
FAILED=0
for key in "${!STATUS[@]}"; do [[ "${STATUS[$key]}" == FAILED* ]] && FAILED=1; done
echo "logs: $OUT"
exit $FAILED
