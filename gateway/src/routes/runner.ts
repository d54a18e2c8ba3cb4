import { Hono } from "hono";
import { type RunnerEnv, requireRunner } from "../auth/service-tokens.js";
import { queueStats } from "../dispatcher/queue-stats.js";
import { dispatcherShard, shardCount } from "../dispatcher/stub.js";
import { ApiError } from "../errors.js";

/** What runners call: the job socket and the blobs a job needs. Every route takes a runner token. */
export const runnerRoutes = new Hono<RunnerEnv>();

runnerRoutes.use("*", requireRunner);

runnerRoutes.get("/connect", async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError(426, "websocket_expected", "Connect to this endpoint with a WebSocket upgrade.");
  }
  // `?shard=k` picks one of the Dispatcher's shards; a runner learns how many there are from the
  // welcome on shard 0 (the default, so a runner that predates sharding still reaches shard 0).
  const shard = Number(c.req.query("shard") ?? "0");
  const shards = shardCount(c.env);
  if (!Number.isInteger(shard) || shard < 0 || shard >= shards) {
    throw new ApiError(400, "invalid_shard", `shard must be an integer from 0 to ${shards - 1}.`);
  }
  // The Dispatcher trusts this header only because nothing but this Worker can reach it.
  const headers = new Headers(c.req.raw.headers);
  headers.set("x-otter-runner", c.get("runner"));
  headers.set("x-otter-runner-token-id", c.get("runnerTokenId"));
  return dispatcherShard(c.env, shard).fetch(new Request(c.req.url, { headers }));
});

/**
 * Queue depth for an autoscaler (KEDA's metrics-api scaler, deploy/k8s/autoscaled): `demand` is
 * the jobs that want a grading slot now, waiting or being graded. It takes the runner token the
 * fleet already holds, so the autoscaler needs no admin credential.
 */
runnerRoutes.get("/queue", async (c) => {
  const { pending, leased, oldestEnqueuedAt } = await queueStats(c.env);
  return c.json(
    { pending, leased, demand: pending + leased, oldest_enqueued_at: oldestEnqueuedAt ? new Date(oldestEnqueuedAt).toISOString() : null },
    200,
    { "cache-control": "no-store" },
  );
});

const SHA256 = /^[0-9a-f]{64}$/;

for (const kind of ["notebooks", "autograders"] as const) {
  runnerRoutes.get(`/${kind}/:sha256`, async (c) => {
    const sha = c.req.param("sha256");
    if (!SHA256.test(sha)) throw new ApiError(400, "invalid_sha256", "Blobs are named by their lowercase hex SHA-256.");
    const blob = await c.env.BLOBS.get(`${kind}/${sha}`);
    if (!blob) throw new ApiError(404, "blob_not_found", `No ${kind.slice(0, -1)} ${sha}.`);
    return new Response(blob.body, { headers: { "content-type": "application/octet-stream", "content-length": String(blob.size) } });
  });
}
