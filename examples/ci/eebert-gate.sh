#!/bin/sh
# The CI gate both examples call: check the recipe, then run it against its [expect] budget.
#   exit 0: every expectation met; 1: an error (bad recipe, missing file, ...);
#   3: the run finished but missed an expectation (the table on stderr/stdout names which).
# EEBERT overrides the command (default `eebert`); the verdict (or the error, as {"error", "hint"}) is kept
# in eebert-run.json.
set -eu
RECIPE="${1:?usage: eebert-gate.sh RECIPE.toml [OUT.json]}"
OUT="${2:-eebert-run.json}"
EEBERT="${EEBERT:-eebert}"

$EEBERT validate "$RECIPE"
status=0
$EEBERT run "$RECIPE" --json > "$OUT" || status=$?
if [ "$status" -eq 3 ]; then
  echo "eebert: the checkpoint misses its budget (see expectations in $OUT)" >&2
fi
exit "$status"
