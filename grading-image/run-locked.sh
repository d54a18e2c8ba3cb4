#!/usr/bin/env bash
# Grades one notebook in the grading image exactly as the runner does (locked-down
# container, job directory on an anonymous volume, files in with `docker cp` before start,
# results out with `docker cp` after exit). A reference and a manual test tool.
#
# Usage: ./run-locked.sh AUTOGRADER_ZIP SUBMISSION_IPYNB OUT_DIR [docker create options...]
#   e.g. ./run-locked.sh ../assignments/sample/dist/autograder.zip \
#          ../assignments/sample/submissions/full.ipynb /tmp/out --memory 256m --memory-swap 256m
# Env: IMAGE (default otter-edge/grading:latest), TIMEOUT seconds (default 300),
#      OTTER_EDGE_PLAIN_OTTER=1 (plain `otter run`, one uid: the design before the uid split)
# Writes OUT_DIR/results.json (if produced), OUT_DIR/log.txt and OUT_DIR/state.json
# ({ExitCode, OOMKilled, TimedOut, Seconds}); exits with the container's exit code.
set -euo pipefail

IMAGE=${IMAGE:-otter-edge/grading:latest}
TIMEOUT=${TIMEOUT:-300}
[[ $# -ge 3 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
AG=$1 SUB=$2 OUT=$3
shift 3
mkdir -p "$OUT"

# The locked-down options (later options given on the command line override these).
OPTS=(
  --network none
  --user 0:0
  --read-only
  --tmpfs /tmp:rw,nosuid,nodev,size=256m
  --tmpfs /home/grader:rw,nosuid,nodev,size=16m,uid=10001,gid=10001,mode=0700
  --cap-drop ALL
  --cap-add SETUID --cap-add SETGID --cap-add SETPCAP
  --security-opt no-new-privileges
  --pids-limit 256
  --memory 1g --memory-swap 1g
  --cpus 1
  -v /job
)

stage=$(mktemp -d)
cid=""
cleanup() {
  [[ -n $cid ]] && docker rm -f -v "$cid" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup EXIT

cp "$AG" "$stage/autograder.zip"
cp "$SUB" "$stage/submission.ipynb"
chmod 0644 "$stage"/*

# The command the runner gives: grade as uid 10001, the notebook's kernel as uid 10002
# (otter-edge/grade; `OTTER_EDGE_PLAIN_OTTER=1` runs plain `otter run` as 10001 instead, for comparison).
if [[ ${OTTER_EDGE_PLAIN_OTTER:-0} == 1 ]]; then
  CMD=(/bin/sh -c 'mkdir -p /job/out && exec otter run --no-logo -a /job/autograder.zip -o /job/out /job/submission.ipynb')
  OPTS+=(--user 10001:10001)
else
  CMD=(/opt/otter-edge/grade -a /job/autograder.zip -o /job/out /job/submission.ipynb)
fi
cid=$(docker create "${OPTS[@]}" "$@" "$IMAGE" "${CMD[@]}")
# Entries owned by 10001 (what putArchive should send); /job itself is owned by 10001 in the
# image, and the fresh anonymous volume inherits that when the container is created.
mkdir "$stage/out"
tar --owner=10001 --group=10001 --numeric-owner -C "$stage" -c autograder.zip submission.ipynb out \
  | docker cp - "$cid:/job"

t0=${EPOCHREALTIME/[.,]/}
docker start "$cid" >/dev/null
timed_out=false
if ! timeout "$TIMEOUT" docker wait "$cid" >/dev/null; then
  timed_out=true
  docker kill "$cid" >/dev/null 2>&1 || true
  docker wait "$cid" >/dev/null
fi
t1=${EPOCHREALTIME/[.,]/}

docker logs "$cid" > "$OUT/log.txt" 2>&1 || true
rm -f "$OUT/results.json"
docker cp "$cid:/job/out/results.json" - 2>/dev/null | tar -xO > "$OUT/results.json" 2>/dev/null || rm -f "$OUT/results.json"
[[ -s $OUT/results.json ]] || rm -f "$OUT/results.json"

exit_code=$(docker inspect -f '{{ .State.ExitCode }}' "$cid")
oom=$(docker inspect -f '{{ .State.OOMKilled }}' "$cid")
secs=$(( (t1 - t0) / 1000 ))
printf '{"ExitCode": %s, "OOMKilled": %s, "TimedOut": %s, "Seconds": %d.%03d}\n' \
  "$exit_code" "$oom" "$timed_out" $(( secs / 1000 )) $(( secs % 1000 )) | tee "$OUT/state.json"
exit "$exit_code"
