#!/usr/bin/env bash
# A Python environment with otter-service 2.2.8 from PyPI and the libraries its otter_nb.py imports,
# at the pins in bench/otter-service/requirements.txt, for bench/intake-vs-otter-service.ts. Kept apart
# from the project's own .otter-edge/venv (other pins: jupyterhub, tornado, aiohttp). Idempotent: a
# second run only compares a stamp. Needs python3 (3.11 here) with venv, and PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
say() { printf '\033[1m[otter-service setup]\033[0m %s\n' "$*" >&2; }

VENV=${OTTER_SERVICE_VENV:-$ROOT/.otter-edge/otter-service-venv}
REQUIREMENTS=bench/otter-service/requirements.txt
STAMP=$VENV/.requirements.sha256
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  say "installing otter-service 2.2.8 and its libraries in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$want" >"$STAMP"
fi

# The wheel PyPI serves for 2.2.8 (sha256 d4e6617f…ff79f) records this hash for otter_nb.py: the
# handler measured is the published one, unmodified.
"$VENV/bin/python" - <<'EOF'
import base64, hashlib, importlib.util, sys
spec = importlib.util.find_spec("otter_service.otter_nb")
digest = base64.urlsafe_b64encode(hashlib.sha256(open(spec.origin, "rb").read()).digest()).rstrip(b"=").decode()
want = "bds8nyPspxOLU80zmpGaXx2dRj-jUOwvILJOVHXhRKU"
if digest != want:
    sys.exit(f"{spec.origin}: sha256 {digest}, not the published 2.2.8's {want}")
EOF
