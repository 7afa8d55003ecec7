#!/usr/bin/env bash
# The ten example commands of the original xmipp_ml_tomo (v3.0) documentation ("Examples and notes"),
# run verbatim and in order on a synthetic data set written under the names they use.
#
# Usage: docs/examples/seed_examples.sh [WORKDIR [make_seed_data.py options]]
#   WORKDIR defaults to ./seed_examples. Options after it go to make_seed_data.py (--particles N,
#   --size N, --seed N). ML_TOMO names the program (default: ml_tomo on the PATH) and PYTHON the
#   interpreter that runs make_seed_data.py (default: python3); both need the package installed, e.g.
#   PYTHON=.venv/bin/python ML_TOMO=.venv/bin/ml_tomo docs/examples/seed_examples.sh /tmp/seed
#
# The command lines below are copied exactly from the documentation (so tests/faces/test_seed_examples.py can
# extract them); "ml_tomo" is a shell function that runs ${ML_TOMO} and prints the time each command took.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workdir=${1:-seed_examples}
shift || true
ML_TOMO_PROGRAM=${ML_TOMO:-ml_tomo}
if [[ "$ML_TOMO_PROGRAM" == */* && -e "$ML_TOMO_PROGRAM" ]]; then  # a relative path works after the cd
    ML_TOMO_PROGRAM=$(cd "$(dirname "$ML_TOMO_PROGRAM")" && pwd)/$(basename "$ML_TOMO_PROGRAM")
fi
command_number=0

ml_tomo() {
    local started=$SECONDS
    command_number=$((command_number + 1))
    echo "== command $command_number: ml_tomo $*"
    command "$ML_TOMO_PROGRAM" "$@"
    echo "== command $command_number took $((SECONDS - started)) s"
}

"${PYTHON:-python3}" "$here/make_seed_data.py" "$workdir" "$@"
cd "$workdir"
mkdir -p run1_align run2_3classes run3_3classes run4_extref
chain_started=$SECONDS

ml_tomo -i images.sel --oroot run1_align/nref1_15deg --nref 1 --doc images.doc --missing wedges.doc --iter 15 --ang 15 --dim 32 --perturb
ml_tomo -i images.sel --oroot run1_align/nref1_10deg --nref 1 --doc run1_align/nref1_15deg_it000015.doc --keep_angles --missing wedges.doc --iter 5 --ang 10 --ang_search 50 --maxres 0.35 --perturb
ml_tomo -i images.sel --oroot run1_align/nref1_5deg --nref 1 --doc run1_align/nref1_10deg_it000005.doc --keep_angles -missing wedges.doc --iter 5 --ang 5 --ang_search 25 --maxres 0.35 -perturb

ml_tomo -i images.sel --oroot run2_3classes/nref3_10deg  --nref 3 --doc run1_align/nref1_5deg_it000005.doc --keep_angles --missing wedges.doc --iter 20 --ang 10 --ang_search 50 --maxres 0.35 --perturb --reg0 5 --regF 0 --reg_steps 5
ml_tomo -i images.sel --oroot run2_3classes/nref3_5deg --nref 3 --doc run2_3classes/nref3_10deg_it000020.doc --keep_angles --missing wedges.doc --iter 5 --ang 5 --ang_search 25 --maxres 0.35 --perturb
ml_tomo -i images.sel --oroot run2_3classes/nref3_noalign  --nref 3 --doc run1_align/nref1_5deg_it000005.doc --keep_angles --missing wedges.doc --iter 20 --dont_align --maxres 0.35 --reg0 5 --regF 0 --reg_steps 5 --mask interesting.msk 

ml_tomo -i images.sel --oroot run3_3classes/nref3_15deg --nref 3 --doc images.doc --missing wedges.doc --iter 25 --ang 15 --dim 32 --perturb --reg0 5 --regF 0 --reg_steps 5

ml_tomo -i images.sel --oroot run4_extref/15deg --ref myreference.vol --doc images.doc --missing wedges.doc --iter 1 --ang 15 
ml_tomo -i images.sel --oroot run4_extref/7deg --ref myreference.vol --doc run4_extref/15deg_it000001.doc --missing wedges.doc --iter 1 --ang 7 --ang_search 20
ml_tomo -i images.sel --oroot run4_extref/3deg --ref myreference.vol --doc run4_extref/7deg_it000001.doc --missing wedges.doc --iter 1 --ang 3 --ang_search 10

echo "wall time of the ten commands: $((SECONDS - chain_started)) s"
