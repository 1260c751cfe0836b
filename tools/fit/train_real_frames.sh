#!/usr/bin/env bash
# Reproduces the shipped real-frame detector (models/weights/) from the base nets of commit 94c14d7, on the CPU,
# exactly as it was made: the commands, seeds and order below are the ones that ran (see models/MODEL_CARD.md,
# "Real-frame detector", for times and numbers). Needs ../shared/data (GTSDB, GTSRB, pictograms, scenes) and a
# release build. Writes into $OUT (default /tmp/saccade-real-frames); copy the results into models/weights/.
#   bash tools/fit/train_real_frames.sh            # about 2 h 30 min on the 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/../.."
S=target/release/saccade
OUT=${OUT:-/tmp/saccade-real-frames}
mkdir -p "$OUT"/base "$OUT"/glance1 "$OUT"/glance2 "$OUT"/glance3 "$OUT"/glance4 "$OUT"/patch1 "$OUT"/patch2 "$OUT"/mining "$OUT"/final
git show 94c14d7:models/weights/glancenet.safetensors > "$OUT"/base/glancenet.safetensors
git show 94c14d7:models/weights/patchnet.safetensors > "$OUT"/base/patchnet.safetensors
GL="--gtsdb --input-size 448x264 --scenes 0 --eval-scenes 0 --photos 150 --batch 8"
# Glance net on the GTSDB training frames: three runs at 448x264, each from the last, then one at 576x340.
$S train glance $GL --epochs 24 --lr 2e-3 --init "$OUT"/base/glancenet.safetensors --out "$OUT"/glance1
$S train glance $GL --epochs 12 --lr 1e-3 --seed 20261130 --init "$OUT"/glance1/glancenet.safetensors --out "$OUT"/glance2
$S train glance $GL --epochs 12 --lr 1e-3 --seed 20261201 --init "$OUT"/glance2/glancenet.safetensors --out "$OUT"/glance3
$S train glance ${GL/448x264/576x340} --epochs 12 --gtsdb-views 2 --lr 1e-3 --seed 20261202 \
    --init "$OUT"/glance3/glancenet.safetensors --out "$OUT"/glance4
PN="--channels 32,64,128 --hidden 256 --batch 128 --scenes 0 --epoch-eval-images 2000 --dropout 0.2 --composed-drawings
    --class-floor 450 --box-head --gtsrb-per-epoch 6000 --backgrounds-per-epoch 1000 --pictograms-per-epoch 1000"
# Patch net with box head on real crops.
$S train classifier $PN --lr 1e-3 --epochs 10 --gtsdb-signs-per-epoch 5000 --gtsdb-backgrounds-per-epoch 5000 \
    --init "$OUT"/base/patchnet.safetensors --out "$OUT"/patch1
# The detector that mines hard negatives: glance run 2, patch run 1, and the settings fitted for them
# (models/weights/logs/strategies.mining-detector.toml).
cp "$OUT"/glance2/glancenet.* "$OUT"/patch1/patchnet.* "$OUT"/mining/
cp models/weights/logs/strategies.mining-detector.toml "$OUT"/mining/strategies.toml
$S train classifier $PN --lr 5e-4 --epochs 8 --gtsdb-signs-per-epoch 6000 --gtsdb-backgrounds-per-epoch 3000 \
    --mine-with "$OUT"/mining --hard-negatives-per-epoch 4000 --seed 20261201 \
    --init "$OUT"/patch1/patchnet.safetensors --out "$OUT"/patch2
# Fit every strategy's settings on the validation frames: first for glance run 3 (as was done), then refitted
# from those settings for glance run 4.
cp "$OUT"/glance3/glancenet.* "$OUT"/patch2/patchnet.* "$OUT"/final/
python3 tools/fit/fit_strategies.py --weights-dir "$OUT"/final --out "$OUT"/final/strategies.toml \
    --log "$OUT"/final/fit_strategies.jsonl --strategies topk,coarse2fine,gfnet,zoom
cp "$OUT"/glance4/glancenet.* "$OUT"/final/
python3 tools/fit/fit_strategies.py --weights-dir "$OUT"/final --out "$OUT"/final/strategies.toml \
    --log "$OUT"/final/fit_strategies.jsonl --strategies topk,gfnet,coarse2fine,zoom,glance-only \
    --from-existing --rounds 1
echo "done: $OUT/final"
