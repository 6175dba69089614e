#!/usr/bin/env bash
# Every GPU benchmark side by side on one GPU, each under its own time limit, so that one lease of a
# GPU machine gives all the numbers at once (and one crash costs one benchmark, not all).
#
#   bash benchmarks/gpu_suite.sh smoke|full|rerun|p2sweep|p2sweep-smoke|p2next|unknowns|unknowns-smoke DATA_ROOT OUT [SECONDS]
#
# DATA_ROOT holds neu-det/ and omniglot/ (laid out like ../shared/data); anchors are taken from
# DATA_ROOT/../anchors. Logs and JSON go to OUT/logs and OUT/json, packed into OUT/results.tar.gz.
# "smoke" runs each benchmark for a few steps (does everything start?); "full" runs the protocol
# sizes that fit SECONDS (default 500) on one H100. Processes share the GPU, so their timings are
# contended: compare only timings taken inside one benchmark (ours vs its anchor in the same process).
# "p2sweep" trains P2 variants of our detector side by side with the RetinaNet anchor (what closes
# the gap?) and pretrains the `small` detector network for P7-u; "p2sweep-smoke" is the same on
# the CPU with a few images (does every command line run?); both keep session 3's recipe (batch 32,
# lr 2e-3, positives within 1.5 strides, quarter turns with brightness/contrast, FCOS's levels, one
# localization tower) so that they come close to its numbers (session 4's fallback for boxes
# without positives has no switch). "p2next" is the
# follow-up: today's defaults on all 1440 images (as RetinaNet fits), three seeds, with RetinaNet
# given room to finish in the same run, session 4's brightness/contrast augmentation and session 6's
# defaults (plain focal loss, batch 16) as variants, and the BYOL row of P7-u on the `small` network.
# "unknowns" is issue 23's table at its full recipe (`small`, 24 epochs, all TRAIN images): P3 at K = 1/5/10
# over 5 seeds with the TFA-style baseline, P3-u (the base from SimCLR on the TRAIN images, labels
# unused), the retire-as-unnamed run on NEU-DET (3 seeds) and P9-new (5 support draws on one base);
# "unknowns-smoke" runs the same command lines on the CPU at toy sizes (does each start and finish?).
set -u
MODE=$1; DATA=$(cd "$2" && pwd); OUT=$3; SECONDS_BUDGET=${4:-500}
mkdir -p "$OUT/logs" "$OUT/json"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
export QUICKSTUDY_DATA="$DATA" QUICKSTUDY_CACHE=/tmp/qs-cache
# the benchmarks find the anchors and data beside the checkout, as on the development machines
mkdir -p ../shared && ln -sfn "$DATA" ../shared/data && ln -sfn "$DATA/../anchors" ../shared/anchors
PY=${PYTHON:-python3}
W=/tmp/qs-bench; rm -rf "$W"; mkdir -p "$W"  # a warm machine may hold an earlier run's folders
{ nvidia-smi; $PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__)"; } \
  > "$OUT/logs/machine.txt" 2>&1

job() {  # job NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  ( start=$(date +%s); timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    echo "exit $? after $(( $(date +%s) - start )) s" >> "$OUT/logs/$name.log" ) &
}

p6_jobs() {  # P6 as six processes: ProtoNet one model per shot (tested at 5 and 20 ways), MAML one per configuration
  local minutes=$1
  for shot in 1 5; do
    job p6-protonet-${shot}s $B $PY benchmarks/p6_omniglot.py --device cuda --amp --algos protonet \
        --configs 5w${shot}s,20w${shot}s --max-minutes "$minutes" --out $W/p6p$shot --json-out "$OUT/json/p6-protonet-${shot}s.json"
  done
  for config in 5w1s 5w5s 20w1s 20w5s; do
    job p6-maml-$config $B $PY benchmarks/p6_omniglot.py --device cuda --amp --algos maml --configs $config \
        --max-minutes "$minutes" --out $W/p6m$config --json-out "$OUT/json/p6-maml-$config.json"
  done
}

p2_variants() {  # p2_variants "COMMON OPTIONS" "INFERENCE VARIANTS" < lines of "NAME OPTIONS...": one P2 process each
  local common=$1 infer=$2
  while read -r name options; do
    # shellcheck disable=SC2086  # the options are words
    job p2-$name $B $PY benchmarks/p2_neu_detect.py $common --no-retinanet $options --inference-variants "$infer" \
        --work $W/p2-$name --json-out "$OUT/json/p2-$name.json"
  done
}

p2sweep_variants() {  # session 3's sweep, pinned to its recipe (see the top) so it comes close to it
  p2_variants "--device $1 --weightings uncertainty --batch-size 32 --lr 2e-3 --center-radius 1.5 \
    --augment dihedral --photometric --size-bounds 64,128 --level-by reach $2" \
      "proposals=100,proposal_nms=0.7;score_thresh=0.001;proposals=100,proposal_nms=0.7,score_thresh=0.001" <<'VARIANTS'
base
equal --weightings equal
batch16 --batch-size 16 --lr 1e-3
epochs48 --epochs 48
fitall --fit-all
resnet18 --arch resnet18
head4 --head-convs 4
size320 --image-size 320
combo --fit-all --batch-size 16 --lr 1e-3 --head-convs 4
VARIANTS
}

p7u_small() {  # p7u_small METHOD: self-supervised pretraining of the `small` detector network, scored on P7-u
  job p7u-small-$1 $B $PY benchmarks/p7u_pretrain.py --device cuda --amp --threads 2 --work $W/p7u-$1 \
      --backbones detector --arch small --sizes 200 --methods $1 --learners nearest-mean \
      --pretrain-steps 1500 --pretrain-batch 256 --episodes 1000 --tta --json-out "$OUT/json/p7u-small-$1.json"
}

unknowns_jobs() {  # unknowns_jobs DEVICE "P3/RETIRE SIZE OPTIONS" "PRETRAIN OPTIONS" "P9 OPTIONS" SEEDS
  local device=$1 size=$2 pretrain=$3 p9=$4 seeds=$5 s
  # shellcheck disable=SC2086  # the options are words
  job p3 $B $PY benchmarks/p3_neu_fewshot_detect.py --device $device $size --work $W/p3 --json-out "$OUT/json/p3.json"
  # shellcheck disable=SC2086
  job p3u $B bash -c "$PY -c 'import sys; sys.path.insert(0, \"benchmarks\"); from pathlib import Path; \
from p2_neu_detect import DATA, neu_store; neu_store(Path(\"$W/p3u/neu.db\"), DATA)' && \
    $PY -m quickstudy pretrain --store $W/p3u/neu.db --split train --backbone detector --method simclr \
      --device $device $pretrain --out $W/p3u/simclr && \
    $PY benchmarks/p3_neu_fewshot_detect.py --device $device $size --init $W/p3u/simclr --work $W/p3u \
      --json-out $OUT/json/p3u.json"
  for s in 0 1 2; do
    # shellcheck disable=SC2086
    job retire-s$s $B bash -c "cd benchmarks && $PY retire_meaning.py --meaning unnamed --device $device \
      $(echo "$size" | sed 's/--shots [^ ]*//; s/--seeds [^ ]*//') --seed $s --work $W/retire-s$s \
      --json-out $OUT/json/retire-unnamed-s$s.json"
  done
  # one base model, then each support draw (learn's numbers per seed)
  # shellcheck disable=SC2086
  job p9new $B bash -c "for s in $seeds; do $PY benchmarks/p9_new_types.py --device $device $p9 --seed \$s \
      --out $W/p9new && cp $W/p9new/p9new-seed\$s.json $OUT/json/; done"
}

B=$SECONDS_BUDGET
# decode Omniglot once, before several processes would each decode it and race to write the cache
case $MODE in p2*|unknowns*) ;; *)
  $PY -c "from pathlib import Path; from quickstudy.data.omniglot import load_omniglot; load_omniglot(Path('$DATA/omniglot'))" \
    > "$OUT/logs/omniglot-cache.log" 2>&1 ;;
esac
if [ "$MODE" = p2sweep ]; then
  p2sweep_variants cuda "--epochs 24"
  job p2-retinanet $B $PY benchmarks/p2_neu_detect.py --device cuda --epochs 24 --no-ours --work $W/p2-retinanet \
      --json-out "$OUT/json/p2-retinanet.json"
  p7u_small simclr
  p7u_small byol
elif [ "$MODE" = p2next ]; then  # today's defaults, three seeds, beside RetinaNet
  p2_variants "--device cuda --epochs 24" "proposals=100,proposal_nms=0.7" <<'VARIANTS'
defaults --weightings equal
all --weightings equal --fit-all
all-seed1 --weightings equal --fit-all --seed 1
all-seed2 --weightings equal --fit-all --seed 2
all-photometric --weightings equal --fit-all --photometric
all-session6 --weightings equal --fit-all --score-loss focal --batch-size 16
VARIANTS
  job p2-retinanet $B $PY benchmarks/p2_neu_detect.py --device cuda --epochs 24 --no-ours --workers 6 \
      --work $W/p2-retinanet --json-out "$OUT/json/p2-retinanet.json"
  p7u_small byol
elif [ "$MODE" = unknowns ]; then
  unknowns_jobs cuda "--epochs 24 --fit-all" "--arch small --size 200 --steps 1500 --batch-size 256 --amp" \
    "--arch small --epochs 24" "0 1 2 3 4"
elif [ "$MODE" = unknowns-smoke ]; then  # CPU, toy sizes: every command line starts and writes its JSON
  export OMP_NUM_THREADS=1
  unknowns_jobs cpu "--arch tiny --epochs 1 --limit 48 --test-limit 24 --shots 1 --seeds 0 --threads 1" \
    "--arch tiny --size 200 --steps 2 --batch-size 8" "--arch tiny --epochs 1 --image-size 160" "0 1"
elif [ "$MODE" = p2sweep-smoke ]; then  # CPU: two at a time would oversubscribe a small machine
  p2sweep_variants cpu "--epochs 1 --arch tiny --limit 24 --test-limit 8 --batch-size 8 --threads 1"
  wait
  job p2-retinanet $B $PY benchmarks/p2_neu_detect.py --device cpu --epochs 1 --limit 16 --test-limit 8 \
      --workers 0 --no-ours --work $W/p2-retinanet --json-out "$OUT/json/p2-retinanet.json"
elif [ "$MODE" = rerun ]; then  # the second, shorter lease: the few-shot and multi-task benchmarks only
  p6_jobs 2.2
  job p8 $B $PY benchmarks/p8_omniglot_mtl.py --device cuda --steps 2000 --eval-every 500 --width 32 --batch-size 8 \
      --lr 1e-3 --libmtl-path .gpu/libmtl --gradient-method-steps 300 --out-dir $W/p8 --json-out "$OUT/json/p8.json"
  job p7u $B $PY benchmarks/p7u_pretrain.py --device cuda --amp --threads 2 --work $W/p7u --backbones conv4 --width 64 \
      --sizes 64 --methods none,simclr --learners nearest-mean,protonet --pretrain-steps 500 \
      --pretrain-batch 256 --protonet-steps 200 --protonet-lr 2e-4 --episodes 1000 --tta --json-out "$OUT/json/p7u.json"
elif [ "$MODE" = smoke ]; then
  job p2 $B $PY benchmarks/p2_neu_detect.py --device cuda --epochs 1 --limit 96 --test-limit 48 --weightings equal \
      --retinanet-epochs 1 --work $W/p2 --json-out "$OUT/json/p2.json"
  job p6 $B $PY benchmarks/p6_omniglot.py --device cuda --amp --protonet-steps 20 --maml-steps 4 --episodes 20 \
      --json-out "$OUT/json/p6.json"
  job p8 $B $PY benchmarks/p8_omniglot_mtl.py --device cuda --tasks 5 --steps 10 --configs single/equal,shared/pcgrad \
      --libmtl-path .gpu/libmtl --gradient-method-steps 5 --out-dir $W/p8 --json-out "$OUT/json/p8.json"
  job p7u $B $PY benchmarks/p7u_pretrain.py --device cuda --amp --threads 2 --work $W/p7u --backbones conv4 --width 16 \
      --sizes 64 --methods none,simclr --learners nearest-mean --pretrain-steps 5 --episodes 20 \
      --json-out "$OUT/json/p7u.json"
else
  job p2 $B $PY benchmarks/p2_neu_detect.py --device cuda --epochs 24 --work $W/p2 --json-out "$OUT/json/p2.json"
  job p3 $B $PY benchmarks/p3_neu_fewshot_detect.py --device cuda --epochs 24 --work $W/p3 --json-out "$OUT/json/p3.json"
  job p4 $B $PY benchmarks/p4_missing_labels.py --device cuda --epochs 12 --work $W/p4 --json-out "$OUT/json/p4.json"
  job p5 $B $PY benchmarks/p5_class_split.py --device cuda --epochs 12 --work $W/p5 --json-out "$OUT/json/p5.json"
  p6_jobs 5.5
  job p8 $B $PY benchmarks/p8_omniglot_mtl.py --device cuda --steps 2000 --eval-every 500 --width 32 --batch-size 8 \
      --lr 1e-3 --libmtl-path .gpu/libmtl --gradient-method-steps 300 --out-dir $W/p8 --json-out "$OUT/json/p8.json"
  job p7u $B $PY benchmarks/p7u_pretrain.py --device cuda --amp --threads 2 --work $W/p7u --backbones conv4 --width 64 \
      --sizes 64,128 --methods none,simclr,byol --learners nearest-mean,protonet --pretrain-steps 800 \
      --pretrain-batch 256 --protonet-steps 200 --protonet-lr 2e-4 --episodes 1000 --tta --json-out "$OUT/json/p7u.json"
fi
wait
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv >> "$OUT/logs/machine.txt" 2>&1
tar czf "$OUT/results.tar.gz" -C "$OUT" logs json
