#!/usr/bin/env bash
# Queue bids_harmony on SLURM: the participant level as an array (one participant per task, one
# GPU each), then the group level once the array is over, whatever became of its tasks
# (--dependency=afterany). Settings are environment variables, passed on to both jobs:
#   BIDS_DIR=/data/bids OUTPUT_DIR=/data/out SIF=/images/bids_harmony.sif MODEL=/models/prisma.pt \
#     scripts/slurm/submit.sh
# (the variables of participant_array.sbatch and group.sbatch apply too). Prints the two job ids.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIDS_DIR=${BIDS_DIR:-$PWD/bids}
OUTPUT_DIR=${OUTPUT_DIR:-$BIDS_DIR/derivatives/bids_harmony}
PARTICIPANTS=${PARTICIPANTS:-$BIDS_DIR/participants.tsv}
SIF=${SIF:-$PWD/bids_harmony.sif}
# at most this many array tasks at once
MAX_PARALLEL=${MAX_PARALLEL:-10}
# SLURM writes the jobs' logs here (it does not create the folder itself)
LOG_DIR=${LOG_DIR:-$OUTPUT_DIR/logs/slurm}
# more sbatch options for both jobs, split on spaces (e.g. "--account=lab --partition=gpu")
SBATCH_ARGS=${SBATCH_ARGS:-}

if [[ ! -f "$PARTICIPANTS" ]]; then
    echo "$PARTICIPANTS: no participants list (participants.tsv, or one label a line)" >&2
    exit 64
fi
if [[ "$PARTICIPANTS" == *.tsv ]]; then
    count=$(awk -F '\t' 'NR > 1 && NF { i++ } END { print i + 0 }' "$PARTICIPANTS")
else
    count=$(awk 'NF { i++ } END { print i + 0 }' "$PARTICIPANTS")
fi
if (( count == 0 )); then
    echo "$PARTICIPANTS: no participants" >&2
    exit 64
fi
mkdir -p "$LOG_DIR"
read -r -a sbatch_args <<< "$SBATCH_ARGS"
export BIDS_DIR OUTPUT_DIR PARTICIPANTS SIF

# --parsable prints "jobid" or "jobid;cluster"
array_id=$(sbatch --parsable ${sbatch_args[@]+"${sbatch_args[@]}"} --array="1-${count}%${MAX_PARALLEL}" \
    --output="$LOG_DIR/participant-%A_%a.out" "$HERE/participant_array.sbatch")
array_id=${array_id%%;*}
group_id=$(sbatch --parsable ${sbatch_args[@]+"${sbatch_args[@]}"} --dependency="afterany:${array_id}" \
    --output="$LOG_DIR/group-%j.out" "$HERE/group.sbatch")
group_id=${group_id%%;*}
echo "participant array: job $array_id ($count tasks); group level: job $group_id (after the array)"
