#!/usr/bin/env bash
# Installs what validates deploy/k8s offline, at pinned versions, under .otter-edge/k8s (ignored by
# git): kubeconform built from the Go module proxy, Kubernetes JSON schemas from the PyPI wheel
# kubernetes-validate, and KEDA's CRD schemas converted from the KEDA Go module's CRD YAML. No
# schema is fetched at validation time. Idempotent: a second run only compares a stamp.
# Needs go and the project venv's Python (PyYAML); run by scripts/setup.sh after the venv step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest Kubernetes the manifests support (the dockerd sidecar is a native sidecar, an init
# container with restartPolicy: Always: on by default since 1.29, GA in 1.33) and the newest the
# wheel knows.
KUBERNETES_VERSIONS="1.33.0 1.37.0"
KEDA_VERSION=v2.21.0

DIR=$ROOT/.otter-edge/k8s
PYTHON=${PYTHON:-$ROOT/.otter-edge/venv/bin/python}
say() { printf '\033[1m[k8s-tools]\033[0m %s\n' "$*" >&2; }

want="kubeconform=$KUBECONFORM_VERSION kubernetes-validate=$KUBERNETES_VALIDATE_VERSION k8s=$KUBERNETES_VERSIONS keda=$KEDA_VERSION $(sha256sum scripts/k8s-schemas.py | cut -c1-16)"
if [ -x "$DIR/bin/kubeconform" ] && [ "$(cat "$DIR/stamp" 2>/dev/null)" = "$want" ]; then exit 0; fi

# Go from the machine image; a non-login shell may lack its directory on PATH.
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { say "go is needed to build kubeconform"; exit 1; }
rm -rf "$DIR" && mkdir -p "$DIR/bin" "$DIR/download"

say "building kubeconform $KUBECONFORM_VERSION"
GOBIN=$DIR/bin GOFLAGS=-buildvcs=false go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"

say "Kubernetes schemas (kubernetes-validate $KUBERNETES_VALIDATE_VERSION) and KEDA $KEDA_VERSION CRDs"
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps -d "$DIR/download" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
KEDA=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
for v in $KUBERNETES_VERSIONS; do
  "$PYTHON" scripts/k8s-schemas.py "$DIR/schemas" --wheel "$DIR"/download/kubernetes_validate-*.whl --kubernetes-version "$v" \
    --crd "$KEDA/config/crd/bases/keda.sh_scaledobjects.yaml" --crd "$KEDA/config/crd/bases/keda.sh_triggerauthentications.yaml" >&2
done
rm -rf "$DIR/download"
echo "$KUBERNETES_VERSIONS" > "$DIR/kubernetes-versions"
echo "$want" > "$DIR/stamp"
