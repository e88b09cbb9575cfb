#!/usr/bin/env bash
# Nightly-style fuzzing: the Hypothesis tests with fresh random examples (CI runs them
# derandomised, so that a passing commit stays passing). A failure prints the seed to
# reproduce it with (`--hypothesis-seed=N`); turn the case into a fixed regression test.
#   bench/fuzz_nightly.sh            # one run with a random seed
#   bench/fuzz_nightly.sh -x -q      # extra pytest arguments are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest tests/test_fuzz_intake.py --hypothesis-profile=nightly \
  --hypothesis-seed="${HYPOTHESIS_SEED:-$RANDOM$RANDOM}" -p no:cacheprovider "$@"
