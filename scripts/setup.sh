#!/usr/bin/env bash
# Installs and starts everything otter-edge needs on this machine, from the project's own files:
# npm packages, the Docker engine (Debian's docker.io) and debootstrap, the grading image, a host
# otter-grader (the image's exact wheels) and the sample assignment. Idempotent: a second run only
# checks. `npm start` and `npm test` run it first; `npm test` then adds its test-only tools
# (scripts/k8s-tools.sh: kubeconform and offline schemas), which `npm start` does not need.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else say "needs root: $*"; exit 1; fi; }

export WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false

# 1. npm packages, when missing or older than the lock file.
if [ ! -x node_modules/.bin/wrangler ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi

# 2. Debian packages: the Docker engine, debootstrap for the base image, python3-venv for the host otter,
#    Chromium, which the browser tests drive headless through playwright-core (no browser download), and
#    docker-registry, the fleet registry test/environments.test.ts starts on loopback.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v chromium >/dev/null || missing+=(chromium)
command -v docker-registry >/dev/null || missing+=(docker-registry)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 3. The Docker engine, started here when nothing answers (CI and fresh machines start none).
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/otter-edge-dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/otter-edge-dockerd.log 2>&1 &'
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.25; done
  docker info >/dev/null 2>&1 || { say "dockerd did not start; see /var/log/otter-edge-dockerd.log"; tail -20 /var/log/otter-edge-dockerd.log >&2; exit 1; }
fi

# 4. The grading image (skips itself when its recipe is unchanged).
bash grading-image/build.sh

# 5. A host Python environment: otter-grader at the image's exact pins (builds the sample assignment
#    with `otter assign`, serves the runner's --unsandboxed mode), the LTI stand-in's oauthlib, and
#    JupyterHub for the identity tests.
OTTER_VERSION=$(sed -n 's/^otter-grader==\([^ ;#]*\).*/\1/p' grading-image/requirements.txt)
VENV=$ROOT/.otter-edge/venv
STAMP=$VENV/.requirements.sha256
REQUIREMENTS=(grading-image/requirements.txt test/lti/requirements.txt test/lti13/requirements.txt test/hub/requirements.txt)
want=$(cat "${REQUIREMENTS[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "installing otter-grader $OTTER_VERSION and test tools in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # The image's wheels when build.sh left them here; the package index for anything else.
  links=(); [ -d grading-image/.wheels ] && links=(--find-links grading-image/.wheels)
  "$VENV/bin/pip" install -q --disable-pip-version-check "${links[@]}" $(printf -- '-r %s ' "${REQUIREMENTS[@]}")
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
  echo "$want" > "$STAMP"
fi

# 6. The sample assignment: autograder.zip and student notebook from the master notebook.
if [ ! -f assignments/sample/dist/autograder.zip ] || [ assignments/sample/sample-master.ipynb -nt assignments/sample/dist/autograder.zip ]; then
  say "building the sample assignment with otter assign"
  OTTER=$VENV/bin/otter PATH=$VENV/bin:$PATH bash assignments/sample/build.sh >/dev/null
fi
say "ready"
