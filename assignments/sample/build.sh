#!/usr/bin/env bash
# Builds the sample assignment with `otter assign`:
#   dist/autograder.zip   the autograder configuration zip (stable name; also kept under
#                         dist/autograder/sample-autograder_<timestamp>.zip)
#   dist/student.ipynb    the student notebook (also dist/student/sample.ipynb)
#
# The master notebook is assigned under the name sample.ipynb so that the student notebook,
# its `otter.Notebook("sample.ipynb")` init cell and the zip carry the assignment's name.
# Uses the otter binary named by $OTTER (default: `otter` on PATH); it must be the
# otter-grader version of the grading image (grading-image/requirements.txt).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
HERE=$PWD
OTTER=${OTTER:-otter}
NAME=sample

want=$(sed -n 's/^otter-grader==\([^ ;#]*\).*/\1/p' ../../grading-image/requirements.txt 2>/dev/null || true)
have=$("$OTTER" --version 2>/dev/null | sed -n 's/^Otter-Grader version: //p')
if [[ -n $want && $have != "$want" ]]; then
  echo "build.sh: $OTTER is otter-grader ${have:-?}, the grading image has $want" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$NAME-master.ipynb" "$work/$NAME.ipynb"

rm -rf dist
mkdir -p dist
# otter assign runs the tests against the solutions (run_tests: true) and fails if they fail.
(cd "$work" && "$OTTER" assign "$NAME.ipynb" "$HERE/dist") > "$work/assign.log" 2>&1 \
  || { cat "$work/assign.log" >&2; exit 1; }

zips=(dist/autograder/"$NAME"-autograder_*.zip)
if [[ ${#zips[@]} -ne 1 || ! -f ${zips[0]} ]]; then
  echo "build.sh: expected one dist/autograder/$NAME-autograder_*.zip, found: ${zips[*]}" >&2
  exit 1
fi
cp "${zips[0]}" dist/autograder.zip
cp "dist/student/$NAME.ipynb" dist/student.ipynb
echo "dist/autograder.zip  <- ${zips[0]}"
echo "dist/student.ipynb   <- dist/student/$NAME.ipynb"
