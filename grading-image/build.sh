#!/usr/bin/env bash
# Builds the otter-edge grading image without any container registry:
#
#   1. otter-edge/base:bookworm   debootstrap (minbase) from the machine's own apt
#                                 mirror, imported with `docker import` (skipped if present)
#   2. .wheels/                   `pip download` of requirements.txt on the host, for the
#                                 image's Python (CPython 3.11, manylinux x86_64)
#   3. otter-edge/grading:otter-<version> and :latest
#                                 `docker build` of Dockerfile on top of the base
#   4. a smoke test of the image with no network, as the grader user
#
# Idempotent: the grading image carries the label org.otter-edge.recipe, a sha256 of
# Dockerfile + requirements.txt + otter-edge/; when the existing image has the same recipe, steps 2-4
# are skipped.
#
# Usage: ./build.sh [--force] [--rebuild-base] [--relock]
#   --force         rebuild the grading image even if its recipe is unchanged (no layer cache)
#   --rebuild-base  also re-create otter-edge/base:bookworm with debootstrap (implies --force)
#   --relock        re-resolve requirements.in into requirements.txt first
#
# Environment:
#   OTTER_EDGE_APT_MIRROR   Debian mirror URI for debootstrap (default: read from the
#                           machine's apt sources, deb822 *.sources or one-line *.list)
#   OTTER_EDGE_IMAGE        grading image repository (default otter-edge/grading)
#   OTTER_EDGE_BASE_IMAGE   base image (default otter-edge/base:bookworm)
#   PYTHON                  host Python used for pip (default python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
HERE=$PWD

SUITE=bookworm
BASE_IMAGE=${OTTER_EDGE_BASE_IMAGE:-otter-edge/base:bookworm}
IMAGE=${OTTER_EDGE_IMAGE:-otter-edge/grading}
PYTHON=${PYTHON:-python3}
WHEELS=$HERE/.wheels
# The image's interpreter: Debian bookworm ships CPython 3.11.2. Resolving for 3.11.2
# (not just "3.11") matters: some packages need Requires-Python >= 3.11.5.
IMAGE_PY_VERSION=3.11.2
PIP_TARGET=(
  --only-binary=:all:
  --implementation cp --python-version "$IMAGE_PY_VERSION" --abi cp311
  --platform manylinux_2_36_x86_64 --platform manylinux_2_34_x86_64
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
  --platform manylinux1_x86_64 --platform linux_x86_64
)

# Docker engine 20.10 with a newer client and no buildx plugin: use the classic builder.
export DOCKER_BUILDKIT=0

FORCE=0
REBUILD_BASE=0
RELOCK=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --rebuild-base) REBUILD_BASE=1; FORCE=1 ;;
    --relock) RELOCK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- timing helpers
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $(( t / 1000 )); }
T_ALL=$(now_ms)
STEP_NAME=""
STEP_T=0
step() { STEP_NAME=$1; STEP_T=$(now_ms); echo "==> $STEP_NAME"; }
step_done() {
  local ms=$(( $(now_ms) - STEP_T ))
  printf '    [%s: %d.%01ds]\n' "$STEP_NAME${1:+ ($1)}" $(( ms / 1000 )) $(( ms % 1000 / 100 ))
}
total_done() {
  local ms=$(( $(now_ms) - T_ALL ))
  printf '==> total: %d.%01ds\n' $(( ms / 1000 )) $(( ms % 1000 / 100 ))
}

# ---------------------------------------------------------------- apt mirror
# Prints the URI of the first enabled `deb` source for $SUITE found in the machine's apt
# configuration. Never hard-code a mirror host in the repository.
apt_mirror() {
  if [[ -n ${OTTER_EDGE_APT_MIRROR:-} ]]; then
    echo "$OTTER_EDGE_APT_MIRROR"
    return
  fi
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (!found && enabled != "no" && (" " types " ") ~ /[ \t]deb[ \t]/ &&
            (" " suites " ") ~ ("[ \t]" suite "[ \t]") && uris != "") {
          split(uris, u); print u[1]; found = 1
        }
        types = ""; suites = ""; uris = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1); $1 = "" }
      key == "types:"   { types = $0 }
      key == "uris:"    { uris = $0 }
      key == "suites:"  { suites = $0 }
      key == "enabled:" { enabled = tolower($2) }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) print $i
      }' "$f"
  done
}

# ---------------------------------------------------------------- 0. relock (optional)
if (( RELOCK )); then
  step "relock requirements.in -> requirements.txt (CPython $IMAGE_PY_VERSION)"
  tmp_report=$(mktemp)
  tmp_target=$(mktemp -d)
  "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --target "$tmp_target" \
    "${PIP_TARGET[@]}" -r requirements.in --report "$tmp_report"
  {
    echo '# Generated by `./build.sh --relock` from requirements.in: the fully resolved,'
    echo "# pinned set for the image's Python (Debian bookworm CPython $IMAGE_PY_VERSION, x86_64)."
    echo '# Edit requirements.in, not this file.'
    "$PYTHON" -c '
import json, sys
report = json.load(open(sys.argv[1]))
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    meta = item["metadata"]
    print(meta["name"] + "==" + meta["version"])
' "$tmp_report"
  } > requirements.txt.new
  mv requirements.txt.new requirements.txt
  rm -rf "$tmp_report" "$tmp_target"
  step_done
fi

OTTER_VERSION=$(sed -n 's/^otter-grader==\([^ ;#]*\).*/\1/p' requirements.txt)
if [[ -z $OTTER_VERSION ]]; then
  echo "build.sh: requirements.txt does not pin otter-grader==<version>" >&2
  exit 1
fi
TAG=$IMAGE:otter-$OTTER_VERSION
# The recipe: the Dockerfile, the pins and the grading driver in otter-edge/ (names and contents).
RECIPE=$( { cat Dockerfile .dockerignore requirements.txt; find otter-edge -type f -print0 | sort -z | xargs -0 sha256sum; } \
          | sha256sum | cut -d' ' -f1)

# ---------------------------------------------------------------- 1. base image
step "base image $BASE_IMAGE"
if (( ! REBUILD_BASE )) && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step_done "present"
else
  MIRROR=$(apt_mirror | head -n1)
  if [[ -z $MIRROR ]]; then
    echo "build.sh: no apt source for '$SUITE' found in /etc/apt; set OTTER_EDGE_APT_MIRROR" >&2
    exit 1
  fi
  echo "    debootstrap --variant=minbase $SUITE from the machine's apt mirror"
  ROOTFS=$(mktemp -d "${TMPDIR:-/var/tmp}/otter-edge-rootfs.XXXXXX")
  trap 'rm -rf "$ROOTFS"' EXIT
  include=()
  [[ $MIRROR == https:* ]] && include=(--include=ca-certificates)
  debootstrap --variant=minbase "${include[@]}" "$SUITE" "$ROOTFS" "$MIRROR" \
    > "$ROOTFS.log" 2>&1 || { tail -n 30 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
  rm -f "$ROOTFS.log"
  # Trim what an image does not need; docker provides /dev and /proc at run time.
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb \
         "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log "$ROOTFS"/dev "$ROOTFS"/proc
  mkdir -p "$ROOTFS"/dev "$ROOTFS"/proc "$ROOTFS"/var/lib/apt/lists/partial
  # Keep later apt layers small: no docs, man pages or translations; no apt caches.
  cat > "$ROOTFS"/etc/dpkg/dpkg.cfg.d/otter-edge-excludes <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat > "$ROOTFS"/etc/apt/apt.conf.d/90otter-edge <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
  tar --numeric-owner -C "$ROOTFS" -c . \
    | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE" \
        - "$BASE_IMAGE" >/dev/null
  rm -rf "$ROOTFS"
  trap - EXIT
  step_done "built"
fi

# ---------------------------------------------------------------- recipe check
if (( ! FORCE )); then
  have=$(docker image inspect -f '{{ index .Config.Labels "org.otter-edge.recipe" }}' "$TAG" 2>/dev/null || true)
  if [[ $have == "$RECIPE" ]]; then
    docker tag "$TAG" "$IMAGE:latest"
    echo "==> $TAG is up to date (recipe ${RECIPE:0:12}); use --force to rebuild"
    total_done
    exit 0
  fi
fi

# ---------------------------------------------------------------- 2. wheels
step "wheels for CPython $IMAGE_PY_VERSION manylinux x86_64 -> .wheels/"
mkdir -p "$WHEELS"
stamp_want=$(printf '%s\n' "${PIP_TARGET[@]}" | cat - requirements.txt | sha256sum | cut -d' ' -f1)
if [[ -f $WHEELS/.stamp && $(cat "$WHEELS/.stamp") == "$stamp_want" ]]; then
  step_done "cached"
else
  rm -f "$WHEELS/.stamp"
  # requirements.txt is fully resolved, so --no-deps is exact and skips the resolver.
  if ! "$PYTHON" -m pip download --quiet --no-deps --dest "$WHEELS" "${PIP_TARGET[@]}" \
       -r requirements.txt; then
    # Some pin has no compatible wheel: take each one separately and build the missing
    # ones on the host (same Python minor version, same glibc family as the image).
    echo "    batch download failed; retrying one requirement at a time"
    grep -Ev '^[[:space:]]*(#|$)' requirements.txt | while read -r req; do
      "$PYTHON" -m pip download --quiet --no-deps --dest "$WHEELS" "${PIP_TARGET[@]}" "$req" \
        2>/dev/null && continue
      echo "    no wheel for $req: building one on the host"
      "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "$req"
    done
  fi
  echo "$stamp_want" > "$WHEELS/.stamp"
  step_done "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
fi

# ---------------------------------------------------------------- 3. docker build
step "docker build $TAG"
build_args=(--build-arg "OTTER_VERSION=$OTTER_VERSION" --label "org.otter-edge.recipe=$RECIPE"
            -t "$TAG" -t "$IMAGE:latest")
(( FORCE )) && build_args+=(--no-cache)
old_id=$(docker image inspect -f '{{ .Id }}' "$TAG" 2>/dev/null || true)
build_log=$(mktemp)
if ! docker build "${build_args[@]}" . > "$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2
  rm -f "$build_log"
  exit 1
fi
rm -f "$build_log"
# Drop the build stage's image (venv + 190 MB of wheels) and the image this one replaces.
docker image prune --force --filter label=org.otter-edge.stage=build >/dev/null
new_id=$(docker image inspect -f '{{ .Id }}' "$TAG")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
  docker image rm "$old_id" >/dev/null 2>&1 || true
fi
step_done "$(docker image inspect -f '{{ .Size }}' "$TAG" | awk '{ printf "%d MB", $1 / 1e6 }')"

# ---------------------------------------------------------------- 4. smoke test
step "smoke test (no network, uid 10001, read-only root)"
docker run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges "$TAG" \
  python -c '
import sys, otter, numpy, pandas, matplotlib, datascience, ipykernel
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec("python3")
assert spec.argv[0].startswith("/opt/otter/"), spec.argv
import os; assert os.getuid() == 10001, os.getuid()
print(f"    otter {otter.__version__}, python {sys.version.split()[0]}, kernel {spec.argv[0]}")
'
# The uid split grade.py relies on, with the runner's options: root with CAP_SETUID/SETGID/SETPCAP
# only, dropped to 10001 holding them as ambient capabilities; the student kernelspec resolves.
docker run --rm --network none --read-only --tmpfs /tmp \
  --tmpfs /home/grader:rw,nosuid,nodev,size=16m,uid=10001,gid=10001,mode=0700 \
  --cap-drop ALL --cap-add SETUID --cap-add SETGID --cap-add SETPCAP --security-opt no-new-privileges \
  --user 0:0 --entrypoint /bin/sh "$TAG" -c '
exec setpriv --reuid=10001 --regid=10001 --clear-groups --inh-caps=-all,+setuid,+setgid,+setpcap \
  --ambient-caps=-all,+setuid,+setgid,+setpcap -- env JUPYTER_PATH=/opt/otter-edge/jupyter python -I -c "
import os, subprocess
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec(\"python3\")
assert spec.argv[0] == \"/opt/otter-edge/student-kernel\", spec.argv
st = os.stat(\"/home/grader\"); assert (st.st_uid, st.st_mode & 0o777) == (10001, 0o700), st
out = subprocess.run([\"setpriv\", \"--reuid=10002\", \"--regid=10002\", \"--clear-groups\", \"--inh-caps=-all\",
                      \"--ambient-caps=-all\", \"--bounding-set=-all\", \"id\", \"-u\"], capture_output=True, text=True, check=True).stdout
assert out.strip() == \"10002\", out
print(\"    grader uid\", os.getuid(), \"starts the kernel as uid\", out.strip())
"'
step_done
total_done
