#!/usr/bin/env bash
# The GPU check, ready to run in one go on a lent machine with one NVIDIA GPU (issue 16, item 5).
# Nothing is built there: `pack` builds here, `run` runs there.
#
#   scripts/gpu/check.sh pack [--cpu]          here: build and bundle into target/gpu-bundle/
#   scripts/gpu/check.sh run [--cpu] [BUNDLE]  there: parity tests, then timings (under 8 min)
#   scripts/gpu/check.sh --cpu                 pack --cpu, then run --cpu: the dry run, here
#
# `pack` builds (with `--features cuda`, or without it under --cpu) the integration-test binary
# `it` and the `musicgen`, `transcribe` and `separate` benches, strips them and writes them with the build's
# manifest dir into target/gpu-bundle/ as one .tar.xz (asserted <= 60 MB: what the device tool
# carries). The cuda build needs nvcc: run scripts/cuda/check.sh once first (it installs NVIDIA's
# compiler into .venv-cuda); `pack` takes the same environment from there.
#
# `run` unpacks the bundle and, on the device the build picks (`engines::default_device()`: CUDA
# GPU 0 in a cuda build, else the CPU; the tests and benches below load their models there):
#   1. parity with the committed reference fixtures (tolerances in the tests, recorded in
#      tests/it/{musicgen,separate,transcribe}.rs): `it musicgen:: separate:: transcribe::`;
#   2. MusicGen-small, full size with random weights: decoder steps/s (BENCH_FRAMES, default 100);
#   3. basic-pitch on BENCH_SECONDS (default 180) of audio: x realtime;
#   4. HTDemucs, the official configuration (42.0 M parameters) with random weights, on 30 s of
#      audio (`apply_model`) and on a 10-minute upload through the `/v1/separate` engine (decode,
#      separate, write four stems): x realtime (under --cpu only the 30 s run: the 10 minutes
#      take about 7 minutes on two cores);
# sampling `nvidia-smi` every 0.2 s for each stage's peak GPU memory (skipped under --cpu). Each
# stage has a time limit so the whole run stays under 8 minutes. A summary goes to
# $OUT/gpu-check.txt when OUT is set (the device tool brings $OUT back), else to stdout only.
#
# Env: STAGE_TIMEOUT (s per stage, default 80; SEP_TIMEOUT for stage 4, default 210: at most
#      450 s of stages in all, under 8 minutes with the unpacking; under --cpu 150 and 300),
#      BENCH_FRAMES, BENCH_SECONDS, OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

mode=""
cpu=0
bundle="$ROOT/target/gpu-bundle"
for a in "$@"; do
    case "$a" in
        pack | run) mode=$a ;;
        --cpu) cpu=1 ;;
        -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
        *) bundle=$a ;;
    esac
done
[ -n "$mode" ] || { [ "$cpu" = 1 ] && mode=dry; }
[ -n "$mode" ] || { echo "usage: $0 pack|run [--cpu] [BUNDLE] | --cpu" >&2; exit 2; }

# What a cuda build links against, on a machine with no GPU and no driver: cudarc (candle's CUDA
# layer, `dynamic-linking`) links libcuda, libnvrtc, libcurand, libcublas and libcublasLt, and
# candle-kernels' MoE library libcudart. NVIDIA's CUDA 13 wheels give all but libcuda (as
# libX.so.N: an unversioned link is made beside each); libcuda is the driver's, never in a wheel, so a stub with the soname libcuda.so.1 is
# generated from the driver functions cudarc's bindings declare (as the toolkit's lib/stubs is
# made). At run time the GPU machine's own driver and CUDA 13 libraries are loaded (`run` puts the
# latter on LD_LIBRARY_PATH).
link_libraries() {
    local venv=$1 cuda_root=$2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
    local lib=$cuda_root/lib name
    for name in cublas cublasLt curand nvrtc cudart; do
        local so
        so=$(find "$lib" -maxdepth 1 -name "lib$name.so.*" ! -name "*builtins*" 2>/dev/null \
            | sort | head -n1) || true
        [ -n "$so" ] || { echo "pack: no lib$name.so.* in $lib" >&2; exit 1; }
        ln -sf "$(basename "$so")" "$lib/lib$name.so"
    done
    local cudarc
    cudarc=$(cargo metadata --format-version 1 --features cuda | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(p["manifest_path"].rsplit("/", 1)[0]); break') || true
    [ -f "$cudarc/src/driver/sys/mod.rs" ] || { echo "pack: cudarc's sources not found" >&2; exit 1; }
    mkdir -p "$lib/stubs"
    grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" \
        | awk '{print "void " $4 "(void) {}"}' | sort -u >"$lib/stubs/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$lib/stubs/libcuda.c"
    echo "link libraries: $(ls "$lib" | grep -c '\.so') in $lib, libcuda stub with" \
        "$(wc -l <"$lib/stubs/libcuda.c") driver functions"
}

pack() {
    # CPU: the test and dev profiles this checkout already built (only the crate recompiles);
    # GPU: release (the timings are what a user's build does).
    local profile features=() test_args bench_args
    if [ "$cpu" = 1 ]; then
        profile=dev
        test_args=()
        bench_args=(--profile dev)
    else
        profile=release
        test_args=(--release)
        bench_args=()
        features=(--features cuda)
        local venv="${CUDA_VENV:-$ROOT/.venv-cuda}"
        local site
        site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || {
            echo "no CUDA toolchain venv at $venv: run scripts/cuda/check.sh first" >&2
            exit 1
        }
        local cuda_root="$site/nvidia/cu13"
        link_libraries "$venv" "$cuda_root"
        export PATH="$cuda_root/bin:$PATH" CUDA_HOME="$cuda_root" CUDA_PATH="$cuda_root"
        export CUDA_ROOT="$cuda_root" NVCC="$cuda_root/bin/nvcc"
        export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" # H100/H200: Hopper
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
    fi
    echo "== pack: profile $profile ${features[*]:-(CPU build)}"
    local json exes
    json=$(mktemp)
    cargo test "${test_args[@]}" "${features[@]}" --no-run --test it --message-format=json >"$json"
    cargo bench "${bench_args[@]}" "${features[@]}" --no-run --bench musicgen --bench transcribe \
        --bench separate --message-format=json >>"$json"
    exes=$(python3 - "$json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] in ("it", "musicgen", "transcribe", "separate"):
        print(m["target"]["name"], m["executable"])
EOF
)
    rm -f "$json"
    rm -rf "$bundle" && mkdir -p "$bundle/stage/bin"
    while read -r name exe; do
        cp "$exe" "$bundle/stage/bin/$name"
        strip "$bundle/stage/bin/$name"
    done <<<"$exes"
    for n in it musicgen transcribe separate; do
        [ -x "$bundle/stage/bin/$n" ] || { echo "pack: no $n executable built" >&2; exit 1; }
    done
    # The tests find their fixtures under the manifest dir compiled into them.
    echo "$ROOT" >"$bundle/stage/manifest_dir"
    echo "$([ "$cpu" = 1 ] && echo cpu || echo cuda) $profile $(git rev-parse --short HEAD)" >"$bundle/stage/build"
    tar -C "$bundle/stage" -cJf "$bundle/bundle.tar.xz" .
    rm -rf "$bundle/stage"
    local bytes
    bytes=$(stat -c %s "$bundle/bundle.tar.xz")
    echo "bundle: $bundle/bundle.tar.xz, $((bytes / 1000000)) MB"
    [ "$bytes" -le 60000000 ] || { echo "bundle over 60 MB" >&2; exit 1; }
}

# Peak of `nvidia-smi`'s memory.used (MiB) while "$@" runs; prints "PEAK_MIB=N" (or "-" on CPU).
with_peak() {
    local log
    log=$(mktemp)
    local sampler=""
    if [ "$cpu" = 0 ] && command -v nvidia-smi >/dev/null; then
        (while true; do
            nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n1
            sleep 0.2
        done) >"$log" &
        sampler=$!
    fi
    local rc=0
    timeout "$STAGE_TIMEOUT" "$@" || rc=$?
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        echo "PEAK_MIB=$(sort -n "$log" | tail -n1)"
    else
        echo "PEAK_MIB=-"
    fi
    rm -f "$log"
    return "$rc"
}

run() {
    local start=$SECONDS work
    # Caps, not estimates: on the GPU the stages take seconds (the CPU dry run is slower).
    if [ "$cpu" = 1 ]; then
        : "${STAGE_TIMEOUT:=150}" "${SEP_TIMEOUT:=300}"
    else
        : "${STAGE_TIMEOUT:=80}" "${SEP_TIMEOUT:=210}"
    fi
    [ -f "$bundle/bundle.tar.xz" ] || { echo "no bundle at $bundle (run: $0 pack)" >&2; exit 1; }
    work=$(mktemp -d)
    tar -C "$work" -xJf "$bundle/bundle.tar.xz"
    local built manifest
    built=$(cat "$work/build")
    manifest=$(cat "$work/manifest_dir")
    if [ "$manifest" != "$ROOT" ] && [ ! -e "$manifest" ]; then
        mkdir -p "$(dirname "$manifest")" && ln -s "$ROOT" "$manifest"
    fi
    [ -d "$manifest/tests/fixtures/musicgen" ] || { echo "fixtures not found under $manifest" >&2; exit 1; }
    local out=${OUT:-$work}
    local report="$out/gpu-check.txt"
    if [ "$cpu" = 0 ]; then
        # The CUDA 13 libraries the build links (cuBLAS, cuRAND, NVRTC, the runtime) from wherever this machine
        # has them (on the lent machines: PyTorch's venv); libcuda is the driver's own.
        local dirs
        dirs=$(find /opt /usr /usr/local -xdev \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' \
            -o -name 'libcurand.so.10' -o -name 'libnvrtc.so.13' -o -name 'libcudart.so.13' \) \
            2>/dev/null \
            | xargs -r -n1 dirname | sort -u | paste -sd:) || true
        if [ -n "$dirs" ]; then
            export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
        if ldd "$work/bin/it" | grep -q "not found"; then
            echo "missing libraries (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}):" >&2
            ldd "$work/bin/it" | grep "not found" >&2
            exit 1
        fi
    fi
    {
        echo "# GPU check: bundle $built, $(date -u +%FT%TZ)"
        if [ "$cpu" = 0 ]; then
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        else
            echo "dry run on the CPU (--cpu): $(nproc) cores"
        fi
    } | tee "$report"
    local fails=0
    stage() {
        local name=$1
        shift
        local t0=$SECONDS log
        log=$(mktemp)
        echo "== $name" | tee -a "$report"
        if with_peak "$@" >"$log" 2>&1; then
            echo "ok in $((SECONDS - t0)) s" | tee -a "$report"
        else
            echo "FAILED (rc $?) after $((SECONDS - t0)) s" | tee -a "$report"
            fails=$((fails + 1))
        fi
        grep -E "test result|max abs err|agree|steps/s|realtime|PEAK_MIB|panicked|FAILED" "$log" \
            | sed 's/^/  /' | tee -a "$report" || true
        # Plain file names only: the device tool brings back nothing with odd characters.
        cp "$log" "$out/$(printf '%s' "$name" | tr -cs 'a-zA-Z0-9' '_').log" 2>/dev/null || true
        rm -f "$log"
    }
    stage "parity: musicgen, htdemucs, basic-pitch" "$work/bin/it" --test-threads 2 --nocapture \
        musicgen:: separate:: transcribe::
    export BENCH_FRAMES=${BENCH_FRAMES:-100} BENCH_SECONDS=${BENCH_SECONDS:-180}
    stage "musicgen-small steps/s (random full-size weights)" "$work/bin/musicgen"
    stage "basic-pitch x realtime" "$work/bin/transcribe"
    local sep_runs=30s,600s
    [ "$cpu" = 1 ] && sep_runs=30s
    STAGE_TIMEOUT=$SEP_TIMEOUT SEPBENCH_RANDOM=1 SEPBENCH_RUNS=$sep_runs \
        SEPBENCH_DIR="$work/sepbench" stage "htdemucs x realtime (random full-size weights; $sep_runs)" "$work/bin/separate"
    echo "total $((SECONDS - start)) s, $fails stage(s) failed" | tee -a "$report"
    rm -rf "$work"
    [ "$fails" = 0 ]
}

case "$mode" in
    pack) pack ;;
    run) run ;;
    dry) pack && run ;;
esac
