#!/usr/bin/env bash
# Re-measure the QC calibration of the bundled demo model, bids_harmony/data/demo_model.pt,
# without retraining it: simulate the dataset it was trained on (the same command and seed as
# scripts/make_demo_model.sh), then measure the held-out (validation) subjects the model file
# records and store the result in the file in place. The flow's weights are not touched.
#
# Usage: bash scripts/calibrate_demo_model.sh [WORK_DIR]   (run from the repository root, after
# `pip install -e .`; a few minutes on 2 CPU cores)
set -euo pipefail
work=${1:-demo-model-work}
mkdir -p "$work"
bids_harmony-simulate "$work/bids" --scanners target --subjects-per-scanner 16 \
    --anatomies icbm152 fsaverage --seed 2026 --nprocs 2 --overwrite
bids_harmony-train "$work/bids" bids_harmony/data/demo_model.pt --target StationName=TRIO-A \
    --calibrate-only
