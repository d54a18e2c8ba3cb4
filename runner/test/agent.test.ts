import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LeaseMessage } from "@otter-edge/shared";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Agent } from "../src/agent.js";
import { Artifacts } from "../src/artifacts.js";
import { GatewayConnection } from "../src/connection.js";
import { ScriptedGateway } from "./support/scripted-gateway.js";
import { ScriptedSandbox } from "./support/scripted-sandbox.js";

/**
 * The runner agent's side of the protocol, in process and in seconds: the real Agent, connection
 * (WebSocket on loopback) and blob downloads, against a gateway the test scripts and a sandbox that
 * ends each job when told (see their docs). Grading itself is tested with real containers in test/.
 */
let gateway: ScriptedGateway;
let sandbox: ScriptedSandbox;
let cacheDir: string;
let agent: Agent | undefined;
let notebook: string;
let autograder: string;
let tokens = 0;

beforeEach(async () => {
  gateway = await ScriptedGateway.start();
  sandbox = new ScriptedSandbox();
  cacheDir = await mkdtemp(join(tmpdir(), "otter-edge-agent-test-"));
  notebook = gateway.blob(Buffer.from('{"cells": []}'));
  autograder = gateway.blob(Buffer.from("PK autograder bytes"));
});

afterEach(async () => {
  await agent?.drain(0);
  agent = undefined;
  await gateway.stop();
  await rm(cacheDir, { recursive: true, force: true });
});

async function startAgent(capacity: number): Promise<Agent> {
  const log = pino({ level: process.env.LOG_LEVEL ?? "silent" });
  agent = new Agent({
    name: "agent-test",
    capacity,
    // Reconnects within milliseconds, so a dropped socket comes back at once.
    connect: (shard) => new GatewayConnection({ gatewayUrl: gateway.url, token: "runner-token", shard, log, minBackoffMs: 10, maxBackoffMs: 50 }),
    sandbox,
    artifacts: new Artifacts(gateway.url, "runner-token", cacheDir),
    log,
  });
  await agent.start();
  return agent;
}

/** Answers the runner's hello on a shard; returns the hello. */
async function welcome(shard = 0, o: { shards?: number; heartbeatMs?: number; dropped?: LeaseMessage["lease"][] } = {}) {
  const hello = await gateway.next("hello", shard);
  gateway.send(shard, { type: "welcome", heartbeatMs: o.heartbeatMs ?? 60_000, leaseTtlMs: 60_000, dropped: o.dropped ?? [], shards: o.shards ?? 1 });
  return hello;
}

function lease(jobId: string, shard = 0): LeaseMessage {
  const message: LeaseMessage = {
    type: "lease",
    lease: { jobId, token: `token-${jobId}-${(tokens += 1)}`.padEnd(16, "x") },
    attempt: 1,
    deadline: Date.now() + 60_000,
    job: { submissionId: jobId, course: "c", section: "1", assignment: "a", notebook: { sha256: notebook, bytes: 13 }, autograder: { sha256: autograder, otterVersion: "7.0.0" }, timeoutMs: 60_000, isolation: "kernel" },
  };
  gateway.send(shard, message);
  return message;
}

describe("runner agent against a scripted gateway", () => {
  it("says hello with its capacity and otter versions, grades a lease, and reports the grade with the lease's token", async () => {
    await startAgent(1);
    const hello = await welcome();
    expect(hello).toMatchObject({ capacity: 1, otterVersions: ["7.0.0"], holding: [], offerAnswers: true, slots: 1 });
    const l = lease("job-1");
    const input = await sandbox.whenRunning("job-1");
    expect(input.notebook.toString()).toBe('{"cells": []}');
    sandbox.finish("job-1", { q1: 1, q2: 0 });
    const result = await gateway.next("result");
    expect(result.lease).toEqual(l.lease);
    expect(result.outcome).toMatchObject({ kind: "graded", grade: { verdict: "graded", points: 1, maxPoints: 2, score: 0.5 } });
  });

  it("sends a lease that arrives with no free slot straight back, and never runs it", async () => {
    await startAgent(1);
    await welcome();
    lease("job-1");
    await sandbox.whenRunning("job-1");
    const extra = lease("job-2");
    const released = await gateway.next("release");
    expect(released).toEqual({ type: "release", lease: extra.lease, reason: "no free slot" });
    expect(sandbox.started).toEqual(["job-1"]);
  });

  it("stops a job whose lease is revoked and reports nothing for it", async () => {
    await startAgent(1);
    await welcome();
    const l = lease("job-1");
    await sandbox.whenRunning("job-1");
    gateway.send(0, { type: "revoke", lease: l.lease, reason: "regraded elsewhere" });
    await sandbox.whenAborted("job-1");
    // The slot is free again, and it says so; no result for the revoked lease comes before that.
    lease("job-2");
    await sandbox.whenRunning("job-2");
    sandbox.finish("job-2", { q1: 1 });
    const result = await gateway.next("result");
    expect(result.lease.jobId).toBe("job-2");
    expect(gateway.pending().filter((m) => m.type === "result")).toEqual([]);
  });

  it("ignores a revoke naming an older token of the same job", async () => {
    await startAgent(1);
    await welcome();
    const l = lease("job-1");
    await sandbox.whenRunning("job-1");
    gateway.send(0, { type: "revoke", lease: { jobId: "job-1", token: "an-older-token-of-job-1" }, reason: "stale" });
    // A heartbeat round trip shows the revoke was handled: the job still runs.
    gateway.send(0, { type: "welcome", heartbeatMs: 20, leaseTtlMs: 60_000, dropped: [], shards: 1 });
    expect((await gateway.next("heartbeat")).holding).toEqual([l.lease]);
    expect(sandbox.isRunning("job-1")).toBe(true);
  });

  it("keeps a result finished while the gateway was away, names its lease in hello, and sends it again after the welcome", async () => {
    await startAgent(1);
    await welcome();
    const l = lease("job-1");
    await sandbox.whenRunning("job-1");
    gateway.drop(0);
    await gateway.until(() => (gateway.connected(0) ? undefined : true));
    sandbox.finish("job-1", { q1: 1 });
    // The agent reconnects by itself; its hello names the lease whose result it still holds.
    const hello = await gateway.next("hello");
    expect(hello.holding).toEqual([l.lease]);
    expect(gateway.connections.get(0)).toBe(2);
    gateway.send(0, { type: "welcome", heartbeatMs: 60_000, leaseTtlMs: 60_000, dropped: [], shards: 1 });
    const again = await gateway.next("result");
    expect(again.lease).toEqual(l.lease);
    // Acknowledged: not held any more.
    gateway.send(0, { type: "ack", lease: l.lease, accepted: true });
    gateway.drop(0);
    expect((await gateway.next("hello")).holding).toEqual([]);
  });

  it("drops a result whose lease the gateway says is gone after a reconnect, and aborts a running job it drops", async () => {
    await startAgent(2);
    await welcome();
    const done = lease("job-1");
    const running = lease("job-2");
    await sandbox.whenRunning("job-1");
    await sandbox.whenRunning("job-2");
    gateway.drop(0);
    await gateway.until(() => (gateway.connected(0) ? undefined : true));
    sandbox.finish("job-1", { q1: 1 });
    const hello = await gateway.next("hello");
    expect(new Set(hello.holding.map((h) => h.jobId))).toEqual(new Set(["job-1", "job-2"]));
    gateway.send(0, { type: "welcome", heartbeatMs: 60_000, leaseTtlMs: 60_000, dropped: [done.lease, running.lease], shards: 1 });
    await sandbox.whenAborted("job-2");
    gateway.drop(0);
    expect((await gateway.next("hello")).holding).toEqual([]);
    expect(gateway.pending().filter((m) => m.type === "result")).toEqual([]);
  });

  it("heartbeats the leases it holds on the shard that gave them", async () => {
    await startAgent(1);
    await welcome(0, { heartbeatMs: 20 });
    const l = lease("job-1");
    await sandbox.whenRunning("job-1");
    expect((await gateway.next("heartbeat")).holding).toEqual([l.lease]);
  });

  it("opens a socket per shard the welcome names and offers its one free slot to one shard at a time", async () => {
    await startAgent(1);
    const first = await welcome(0, { shards: 2 });
    expect(first.capacity).toBe(1);
    const second = await welcome(1, { shards: 2 });
    // The slot was offered to shard 0 first; shard 1 gets nothing until shard 0 answers.
    expect(second.capacity).toBe(0);
    // Shard 0 has no job: it says so, and the slot moves to shard 1.
    gateway.send(0, { type: "offer_answer", leased: 0, exhausted: true });
    expect(await gateway.next("ready", 1)).toEqual({ type: "ready", capacity: 1 });
    lease("job-1", 1);
    await sandbox.whenRunning("job-1");
    sandbox.finish("job-1", { q1: 1 });
    expect((await gateway.next("result", 1)).lease.jobId).toBe("job-1");
  });

  it("a refused result is counted and forgotten", async () => {
    const a = await startAgent(1);
    await welcome();
    const l = lease("job-1");
    await sandbox.whenRunning("job-1");
    sandbox.finish("job-1", { q1: 1 });
    await gateway.next("result");
    gateway.send(0, { type: "ack", lease: l.lease, accepted: false, reason: "stale_lease" });
    // The socket's messages are handled in order: by the hello after the drop, the ack was.
    gateway.drop(0);
    expect((await gateway.next("hello")).holding).toEqual([]);
    expect(a.stats.refused).toBe(1);
  });

  it("draining: withdraws its slots, lets the running job finish within the grace, and hands back what is left", async () => {
    const a = await startAgent(2);
    await welcome();
    const finishing = lease("job-1");
    const left = lease("job-2");
    await sandbox.whenRunning("job-1");
    await sandbox.whenRunning("job-2");
    const drained = a.drain(60_000);
    expect(await gateway.next("ready")).toEqual({ type: "ready", capacity: 0 });
    sandbox.finish("job-1", { q1: 1 });
    expect((await gateway.next("result")).lease).toEqual(finishing.lease);
    gateway.send(0, { type: "ack", lease: finishing.lease, accepted: true });
    // Past the grace, what still runs is handed back unworked.
    const early = a.drain(0);
    expect(await gateway.next("release")).toEqual({ type: "release", lease: left.lease, reason: "runner shutting down" });
    await Promise.all([drained, early]);
    expect(sandbox.aborted).toEqual(["job-2"]);
    agent = undefined;
  });
});
