import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { shardOf } from "@otter-edge/shared";
import { type Credentials, type Gateway, ROOT, type Runner, adminCli, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook, waitFor, waitForFinal } from "../scripts/local-stack.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const SHARDS = 3;
// Enough that every shard gets two jobs long before the list runs out (about 8 are needed on average).
const STUDENTS = Array.from({ length: 48 }, (_, i) => `student${i}`);
/** The sample's two reference scores (see e2e.test.ts, which checks them against plain `otter run`). */
const NOTEBOOKS = [
  { name: "full", score: 1 },
  { name: "partial", score: 0.6 },
] as const;

describe(`sharded Dispatcher: wrangler dev with ${SHARDS} shards + one runner + Docker + otter-grader`, () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  let runner: Runner;
  const submitted: Array<{ id: string; statusUrl: string; user: string; shard: number; expected: number }> = [];
  const cli = <T = Record<string, any>>(args: string[]) => adminCli<T>(gateway.url, credentials.admin, args);
  const eventCounts = async (state: string) =>
    new Map((await gateway.query<{ id: string; n: number }>(`SELECT submission_id AS id, COUNT(*) AS n FROM submission_events WHERE state = '${state}' GROUP BY submission_id`)).map((r) => [r.id, r.n]));

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "otter-edge-shards-"));
    credentials = newCredentials(STUDENTS);
    gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { DISPATCHER_SHARDS: String(SHARDS) } });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(SAMPLE, "dist", "autograder.zip"), timeoutSeconds: 300 });
  });

  afterAll(async () => {
    await runner?.stop();
    await gateway?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("one runner holds a socket to every shard and grades the backlog of all of them, each exactly once", async () => {
    // Ids are random, so submit (one student each) until every shard has at least two jobs. The runner
    // starts after, so every shard has work to offer it at once and its two slots are contended.
    const perShard = () => Array.from({ length: SHARDS }, (_, s) => submitted.filter((x) => x.shard === s).length);
    for (const user of STUDENTS) {
      if (Math.min(...perShard()) >= 2) break;
      const notebook = NOTEBOOKS[submitted.length % NOTEBOOKS.length]!;
      const { id, status_url } = await submitNotebook(gateway.url, credentials.students[user]!, join(SAMPLE, "submissions", `${notebook.name}.ipynb`));
      submitted.push({ id, statusUrl: status_url, user, shard: shardOf(id, SHARDS), expected: notebook.score });
    }
    expect(Math.min(...perShard()), `jobs per shard: ${perShard().join(", ")}`).toBeGreaterThanOrEqual(2);
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 2 });

    const finals = await Promise.all(submitted.map((s) => waitForFinal(s.statusUrl, credentials.students[s.user]!)));
    finals.forEach((final, i) => {
      expect(final.status, `${submitted[i]!.user} (shard ${submitted[i]!.shard}): ${final.message}`).toBe("graded");
      expect(final.score).toBe(submitted[i]!.expected);
    });
    for (let shard = 0; shard < SHARDS; shard++) expect(runner.output()).toMatch(new RegExp(`"shard":${shard}[^\\n]*"msg":"connected to gateway"`));

    const graded = await eventCounts("graded");
    for (const s of submitted) expect(graded.get(s.id), s.id).toBe(1);
    expect((await eventCounts("failed")).size).toBe(0);
    // Under a backlog the runner offers each free slot to one shard at a time, so no shard leases a
    // job into a slot another shard filled: nothing is handed back and leased again.
    const requeues = await gateway.query<{ detail: string }>(`SELECT detail FROM submission_events WHERE state = 'requeued'`);
    expect(requeues.map((r) => r.detail)).toEqual([]);

    // The queue and the fleet, summed over the shards: one runner with its own capacity, nothing waiting.
    await waitFor(async () => (await cli<{ queue: { leased: number } }>(["stats"])).queue.leased === 0, 30_000, () => "leases did not clear");
    const stats = await cli<{ queue: { pending: number; leased: number }; runners: Array<{ capacity: number; holding: number }> }>(["stats"]);
    expect(stats.queue).toMatchObject({ pending: 0, leased: 0 });
    expect(stats.runners).toEqual([expect.objectContaining({ capacity: 2, holding: 0 })]);
  });

  it("a regrade of the assignment is spread over the shards and finishes in all of them", async () => {
    expect(submitted.length).toBeGreaterThanOrEqual(2 * SHARDS);
    const regrade = await cli(["regrade", "start", "demo101", "sample", "--wait"]);
    // The autograder did not change, so every submission is graded again to the same score.
    expect(regrade).toMatchObject({ state: "finished", dry_run: false, total: submitted.length, done: submitted.length, outcomes: { unchanged: submitted.length } });
  });

  it("refuses a runner socket for a shard that does not exist, with a JSON reason", async () => {
    const socket = new WebSocket(`${gateway.url.replace(/^http/, "ws")}/runner/v1/connect?shard=${SHARDS}`, { headers: { authorization: `Bearer ${credentials.runner}` } });
    const refusal = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      socket.on("open", () => reject(new Error("the socket opened")));
      socket.on("error", () => undefined);
      socket.on("unexpected-response", (_req, res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
    });
    expect(refusal.status).toBe(400);
    expect(JSON.parse(refusal.body)).toMatchObject({ error: "invalid_shard" });
  });
});
