#!/usr/bin/env bash
# Reproduce the bundled demo model, bids_harmony/data/demo_model.pt.
#
# Trains the `small` preset on the target scanner (TIM Trio "TRIO-A") of a simulated dataset
# made from two anatomy sources only (ICBM152 and fsaverage): Colin27 stays out of training,
# so that benchmarks can test harmonization on an anatomy the model never saw. Training ends
# with the QC calibration on the validation subjects, stored in the model file.
#
# Usage: bash scripts/make_demo_model.sh [--calibrate-only] [WORK_DIR]
#   (run from the repository root, after `pip install -e .`; about 42 minutes on 2 CPU cores,
#   the calibration included). --calibrate-only re-measures the QC calibration of the bundled
#   model in place, on the same simulated dataset, without retraining: the flow's weights are
#   not touched (a few minutes).
set -euo pipefail
calibrate_only=0
if [[ "${1:-}" == --calibrate-only ]]; then
    calibrate_only=1
    shift
fi
work=${1:-demo-model-work}
mkdir -p "$work"
bids_harmony-simulate "$work/bids" --scanners target --subjects-per-scanner 16 \
    --anatomies icbm152 fsaverage --seed 2026 --nprocs 2 --overwrite
if (( calibrate_only )); then
    bids_harmony-train "$work/bids" bids_harmony/data/demo_model.pt --target StationName=TRIO-A \
        --calibrate-only
    exit 0
fi
bids_harmony-train "$work/bids" bids_harmony/data/demo_model.pt --target StationName=TRIO-A \
    --preset small --seed 0 --validation-every 500 --checkpoint-every 500 --nprocs 2 \
    -w "$work/work" --overwrite
# The samples grid and the learning curves go with the documentation, not the package.
mv bids_harmony/data/demo_model_samples.png docs/demo_model_samples.png
mv bids_harmony/data/demo_model_training.csv docs/demo_model_training.csv
