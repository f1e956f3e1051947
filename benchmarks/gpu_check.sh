#!/usr/bin/env bash
# One GPU session's checks for gather_scatter, in order of importance, each under its own time
# limit so one failure cannot take the others' results: the CUDA tests (fp32/fp16, Triton kernel
# and PyTorch paths), network level (yolov5mu backbone+neck at 640), end to end on PETS with the
# oracle proposer, and layer level. Writes logs and JSON to $OUT (default outputs/gpu).
#
#   ARGOS_ASSETS=../shared bash benchmarks/gpu_check.sh [tests] [network] [pets] [layers]
#
# No section named: all four. NET_SIZES (default "640") and NET_ARGS (extra gpu_sparse.py
# options, e.g. "--dtypes fp16 --batches 1") shape the network section.
#
# Packages the GPU image lacks (ultralytics, pycocotools) can be put in .whl/ as wheels; they are
# installed to /tmp/site first.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
A=${ARGOS_ASSETS:-../shared}
PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/env.txt"

SECTIONS=${*:-tests network pets layers}
has() { [[ " $SECTIONS " == *" $1 "* ]]; }

if has tests; then
  echo "== tests"
  timeout 120 $PY -m pytest tests/executors/test_triton_conv.py -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.log"
fi

if has network; then
  echo "== network"
  for S in ${NET_SIZES:-640}; do
    timeout 150 $PY benchmarks/gpu_sparse.py --part network --img-size "$S" ${NET_ARGS:-} \
      --json "$OUT/network_$S.json" 2>&1 | tee -a "$OUT/network.log"
  done
fi

if has pets; then
  echo "== PETS end to end"
  V="--video $A/data/video/pets2009_s2l1_480x360.avi --teacher $A/data/video/pets2009_s2l1_teacher_dets_768x576.json --teacher-scale 0.625"
  O="--proposer oracle --proposer-opt dilation=adaptive"
  M="--cfg yolov5mu.yaml --conf 0.25 --classes 0"
  b() { name=$1; shift; echo "-- $name"; timeout 90 $PY -m argos.cli bench "$@" --threads 4 --no-progress \
    --detector-opt device=cuda --json "/tmp/$name.json" 2>&1 | tail -25; }
  {
    b pets_mu_oracle_gather_scatter $V $M $O --executor gather_scatter --stride 10
    b pets_mu_oracle_packed_crops $V $M $O --executor packed_crops --stride 10
    b pets_n_oracle_gather_scatter $V --weights "$A/weights/yolov5n.pt" --classes person $O --executor gather_scatter --stride 5
  } 2>&1 | tee "$OUT/pets.log"
fi

if has layers; then
  echo "== layers"
  timeout 120 $PY benchmarks/gpu_sparse.py --part layers --densities 0.05 0.1 0.25 0.5 1.0 --repeats 10 \
    --json "$OUT/layers.json" 2>&1 | tee "$OUT/layers.log"
fi
echo "== done"
