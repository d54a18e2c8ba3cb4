#!/usr/bin/env bash
# Validates Kubernetes manifests offline with kubeconform -strict, against every Kubernetes version
# scripts/k8s-tools.sh laid out schemas for (built-in kinds) and KEDA's CRD schemas. A kind without
# a schema is an error, not a skip. Usage: scripts/kubeconform.sh [PATH ...] (default deploy/k8s).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/.otter-edge/k8s
[ -x "$DIR/bin/kubeconform" ] || bash "$ROOT/scripts/k8s-tools.sh"
[ $# -gt 0 ] || set -- "$ROOT/deploy/k8s"
status=0
for v in $(cat "$DIR/kubernetes-versions"); do
  echo "Kubernetes $v:"
  "$DIR/bin/kubeconform" -strict -summary -output text -kubernetes-version "$v" \
    -schema-location "$DIR/schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$DIR/schemas/crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$@" || status=1
done
exit $status
