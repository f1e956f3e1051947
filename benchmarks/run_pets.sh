#!/usr/bin/env bash
# End-to-end PETS and COCO benchmarks of the executors and proposers (writes outputs/bench/*.json
# and prints every table). Usage: bash benchmarks/run_pets.sh [threads]. About 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
A=${ARGOS_ASSETS:-../shared}
V="--video $A/data/video/pets2009_s2l1_480x360.avi --teacher $A/data/video/pets2009_s2l1_teacher_dets_768x576.json --teacher-scale 0.625"
P="--classes person"
C="--images $A/data/coco128/images/train2017 --annotations $A/data/coco128/annotations/instances_train2017.json"
N="--weights $A/weights/yolov5n.pt $P"
# Random-init yolov5mu (no trained weights here): timing only, conf 0.25 so NMS of noise does not
# dominate; its classes are unnamed, so class 0 stands in for 'person'.
M="--cfg yolov5mu.yaml --conf 0.25 --classes 0"
O="--proposer oracle --proposer-opt dilation=adaptive"
mkdir -p outputs/bench
b() { name=$1; shift; echo "== $name"; .venv/bin/argos bench "$@" --threads "$T" --no-progress --json "outputs/bench/$name.json"; echo; }

for ex in masked packed_crops gather_scatter; do
  b "pets_n_oracle_$ex" $V $N $O --executor "$ex" --stride 3
done
b pets_n_qunet_packed_crops $V $N --proposer qunet --proposer-opt weights=qunet-street --executor packed_crops --start 645
b pets_n_qunet_gather_scatter $V $N --proposer qunet --proposer-opt weights=qunet-street --executor gather_scatter --start 645
b pets_n_distill_packed_crops $V $N --proposer distill --executor packed_crops
b pets_n_distill_gather_scatter $V $N --proposer distill --executor gather_scatter
for ex in packed_crops gather_scatter; do
  b "pets_mu_oracle_$ex" $V $M $O --executor "$ex" --stride 10
done
b coco_n_oracle_packed_crops $C --weights $A/weights/yolov5n.pt $O --executor packed_crops
b coco_n_oracle_gather_scatter $C --weights $A/weights/yolov5n.pt $O --executor gather_scatter --executor-opt halo=16
b coco_n_qunet_packed_crops $C --weights $A/weights/yolov5n.pt --proposer qunet --executor packed_crops
