import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Dispatcher } from "../src/dispatcher/dispatcher.js";
import { TestRunner, adminFetch, gradedOutcome, setUpAssignment, status, submit, uniqueAssignment } from "./helpers.js";

const dispatcher = () => env.DISPATCHER.get(env.DISPATCHER.idFromName("global"));

/** Reads or changes the Dispatcher's job table from inside the object. */
function jobs<T>(fn: (sql: SqlStorage) => T): Promise<T> {
  return runInDurableObject(dispatcher(), (_instance: Dispatcher, state) => fn(state.storage.sql));
}

/** A round trip on the same socket: once the revoke for a bogus lease arrives, everything sent before it was handled. */
async function settle(runner: TestRunner) {
  runner.send({ type: "heartbeat", holding: [{ jobId: "settle", token: "settle-settle-settle" }] });
  await runner.next("revoke");
}

/** Polls `check` every 10 ms for up to 5 s; throws naming `what` if it never holds. */
async function until(check: () => Promise<boolean>, what: string) {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${what} never happened`);
}

/** Until the Dispatcher has handled a socket's close: the job's requeue is in D1 (written after the lease is taken). */
async function waitUntilRequeued(id: string) {
  await until(async () => (await env.DB.prepare("SELECT 1 FROM submission_events WHERE submission_id = ? AND state = 'requeued'").bind(id).first()) !== null, `requeue of job ${id}`);
}

/**
 * A runner that leased a job and handed it back for want of a slot, whose "ready" (capacity 0) has
 * not been handled yet: it still offers its slot, and has not been leased the job again.
 */
async function handedBack(label: string) {
  const a = uniqueAssignment(label);
  await setUpAssignment(a);
  const runner = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
  const { id } = await submit(a);
  const first = await runner.next("lease");
  runner.send({ type: "release", lease: first.lease, reason: "no free slot" });
  await settle(runner);
  expect(runner.has("lease")).toBe(false);
  return { a, runner, id };
}

describe("Dispatcher", () => {
  it("leases a queued job to a runner with a free slot and records the grade once", async () => {
    const a = uniqueAssignment("lease");
    const { sha256 } = await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);

    const lease = await runner.next("lease");
    expect(lease.job.submissionId).toBe(id);
    expect(lease.attempt).toBe(1);
    expect(lease.job.autograder).toEqual({ sha256, otterVersion: a.otterVersion });
    expect(lease.job.timeoutMs).toBe(60_000);

    runner.send({ type: "result", lease: lease.lease, outcome: gradedOutcome(0.6) });
    expect(await runner.next("ack")).toMatchObject({ accepted: true });

    const s = await status(id);
    expect(s.body).toMatchObject({ status: "graded", verdict: "graded", score: 0.6, points: 3, max_points: 5 });
    expect(s.body.events.map((e: { state: string }) => e.state)).toEqual(["queued", "leased", "graded"]);
    // Hidden test: score shown, output withheld.
    expect(s.body.tests).toEqual([
      { name: "q1", score: 1, max_score: 1, visibility: "visible", output: "q1 passed" },
      { name: "q2", score: 2.4, max_score: 4, visibility: "hidden" },
    ]);

    // The same result again finds no job: refused, and D1 keeps one grade.
    runner.send({ type: "result", lease: lease.lease, outcome: gradedOutcome(1) });
    expect(await runner.next("ack")).toMatchObject({ accepted: false, reason: "stale_lease" });
    expect((await status(id)).body.score).toBe(0.6);
    runner.close();
  });

  it("tells the runner how long the job waited in the queue", async () => {
    const a = uniqueAssignment("queued-ms");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-a", { capacity: 0, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    // The job has been waiting 5 s (the clock cannot be moved in workerd: its enqueue time is).
    await jobs((sql) => sql.exec("UPDATE jobs SET enqueued_at = enqueued_at - 5000 WHERE id = ?", id));
    runner.send({ type: "ready", capacity: 1 });
    const lease = await runner.next("lease");
    expect(lease.job.submissionId).toBe(id);
    expect(lease.queuedMs).toBeGreaterThanOrEqual(5000);
    expect(lease.queuedMs).toBeLessThan(60_000);
    // Staff stats name the runner by its token and by the name it gave itself in hello.
    const stats = (await (await adminFetch("/stats")).json()) as { runners: Array<Record<string, unknown>> };
    expect(stats.runners).toContainEqual(expect.objectContaining({ runner: "runner-a", instance: "test", holding: 1 }));
    runner.close();
  });

  it("refuses a result whose attempt token is not the lease's", async () => {
    const a = uniqueAssignment("stale");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const lease = await runner.next("lease");
    runner.send({ type: "result", lease: { jobId: id, token: "forged-token-0000000000" }, outcome: gradedOutcome(1) });
    expect(await runner.next("ack")).toMatchObject({ accepted: false, reason: "stale_lease" });
    expect((await status(id)).body.status).toBe("leased");
    runner.send({ type: "result", lease: lease.lease, outcome: gradedOutcome(0.2) });
    expect(await runner.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body.score).toBe(0.2);
    runner.close();
  });

  it("gives a runner no more jobs than its capacity, and the next one when a slot frees", async () => {
    const a = uniqueAssignment("capacity");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-a", { capacity: 2, otterVersions: [a.otterVersion] });
    const ids = [(await submit(a)).id, (await submit(a)).id, (await submit(a)).id];
    const first = await runner.next("lease");
    const second = await runner.next("lease");
    await settle(runner);
    expect(runner.has("lease")).toBe(false);
    expect(new Set([first.job.submissionId, second.job.submissionId])).toEqual(new Set(ids.slice(0, 2)));

    runner.send({ type: "result", lease: first.lease, outcome: gradedOutcome(1) });
    const third = await runner.next("lease");
    expect(third.job.submissionId).toBe(ids[2]);
    runner.close();
  });

  it("extends a lease on heartbeat, and never past the grading time limit", async () => {
    const a = uniqueAssignment("heartbeat");
    await setUpAssignment(a, 10);
    const runner = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const lease = await runner.next("lease");
    const deadline = () => jobs((sql) => sql.exec<{ d: number; h: number }>("SELECT lease_deadline AS d, lease_hard_deadline AS h FROM jobs WHERE id = ?", id).one());
    await jobs((sql) => sql.exec("UPDATE jobs SET lease_deadline = lease_deadline - 30000 WHERE id = ?", id));
    const before = await deadline();
    runner.send({ type: "heartbeat", holding: [lease.lease] });
    await settle(runner);
    const after = await deadline();
    expect(after.d).toBeGreaterThan(before.d + 20_000);
    expect(after.d).toBeLessThanOrEqual(after.h);
    expect(after.h - lease.deadline).toBeLessThanOrEqual(10_000 + 2 * 60_000);
    runner.close();
  });

  it("takes an expired lease back, revokes it, and leases the job again with a new token", async () => {
    const a = uniqueAssignment("expiry");
    await setUpAssignment(a);
    const quiet = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const first = await quiet.next("lease");
    // The quiet runner stops taking work; a second runner is ready.
    quiet.send({ type: "ready", capacity: 0 });
    await settle(quiet);
    const other = await TestRunner.connect("runner-b", { capacity: 1, otterVersions: [a.otterVersion] });

    await jobs((sql) => sql.exec("UPDATE jobs SET lease_deadline = ? WHERE id = ?", Date.now() - 1, id));
    // Not asserted to be true: the object's own alarm, set for a job an earlier test left in backoff,
    // may be running at this moment and expire the lease itself (seen under load). The revoke is the proof.
    await runDurableObjectAlarm(dispatcher());
    expect((await quiet.next("revoke")).lease).toEqual(first.lease);
    // The job waits out a short backoff before it is leased again.
    await jobs((sql) => sql.exec("UPDATE jobs SET not_before = 0 WHERE id = ?", id));
    await runDurableObjectAlarm(dispatcher());
    const second = await other.next("lease");
    expect(second.job.submissionId).toBe(id);
    expect(second.attempt).toBe(2);
    expect(second.lease.token).not.toBe(first.lease.token);

    // The first runner's late result is refused; the second one's is recorded.
    quiet.send({ type: "result", lease: first.lease, outcome: gradedOutcome(1) });
    expect(await quiet.next("ack")).toMatchObject({ accepted: false, reason: "stale_lease" });
    other.send({ type: "result", lease: second.lease, outcome: gradedOutcome(0.4) });
    expect(await other.next("ack")).toMatchObject({ accepted: true });
    const s = await status(id);
    expect(s.body).toMatchObject({ status: "graded", score: 0.4, attempts: 2 });
    expect(s.body.events.map((e: { state: string }) => e.state)).toEqual(["queued", "leased", "requeued", "leased", "graded"]);
    quiet.close();
    other.close();
  });

  it("after a restart, keeps a lease whose runner has not reconnected yet, and takes its kept result on attempt 1", async () => {
    const a = uniqueAssignment("restart");
    await setUpAssignment(a);
    const before = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const first = await before.next("lease");
    // What a gateway restart leaves: the lease names a session with no socket (the object lost it
    // without a close), and no heartbeat could arrive, so its deadline has passed.
    await jobs((sql) => sql.exec("UPDATE jobs SET lease_session = 'lost-in-restart', lease_deadline = ? WHERE id = ?", Date.now() - 1, id));
    await runDurableObjectAlarm(dispatcher());
    const row = await jobs((sql) => sql.exec<{ lease_token: string; lease_deadline: number }>("SELECT lease_token, lease_deadline FROM jobs WHERE id = ?", id).one());
    expect(row.lease_token).toBe(first.lease.token);
    expect(row.lease_deadline).toBeGreaterThan(Date.now());
    // The runner comes back holding the lease and sends the grade it kept.
    const after = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion], holding: [first.lease] });
    after.send({ type: "result", lease: first.lease, outcome: gradedOutcome(0.8) });
    expect(await after.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "graded", score: 0.8, attempts: 1 });
    before.close();
    after.close();
  });

  it("requeues the leases of a runner that disconnects", async () => {
    const a = uniqueAssignment("disconnect");
    await setUpAssignment(a);
    const leaving = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const first = await leaving.next("lease");
    const staying = await TestRunner.connect("runner-b", { capacity: 1, otterVersions: [a.otterVersion] });
    leaving.close();
    await jobs((sql) => sql.exec("UPDATE jobs SET not_before = 0 WHERE id = ?", id));
    await runDurableObjectAlarm(dispatcher());
    const second = await staying.next("lease");
    expect(second.job.submissionId).toBe(id);
    expect(second.lease.token).not.toBe(first.lease.token);
    // Back too late: the job is another runner's now, so the lost lease is dropped and its result refused.
    const back = await TestRunner.connect("runner-a", { capacity: 0, otterVersions: [a.otterVersion], holding: [first.lease] });
    back.send({ type: "result", lease: first.lease, outcome: gradedOutcome(0.8) });
    expect(await back.next("ack")).toMatchObject({ accepted: false, reason: "stale_lease" });
    staying.send({ type: "result", lease: second.lease, outcome: gradedOutcome(0.4) });
    expect(await staying.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "graded", score: 0.4, attempts: 2 });
    back.close();
    staying.close();
  });

  it("gives a runner that reconnects before the job is leased again its lost lease back, and takes its kept result on attempt 1", async () => {
    const a = uniqueAssignment("reclaim");
    await setUpAssignment(a);
    const dropped = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const first = await dropped.next("lease");
    // What a stopping gateway or a network blip does: the socket closes while the runner grades on.
    dropped.close();
    await waitUntilRequeued(id);
    const back = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion], holding: [first.lease] });
    const row = await jobs((sql) => sql.exec<{ lease_token: string | null; attempts: number }>("SELECT lease_token, attempts FROM jobs WHERE id = ?", id).one());
    expect(row).toEqual({ lease_token: first.lease.token, attempts: 1 });
    back.send({ type: "result", lease: first.lease, outcome: gradedOutcome(0.8) });
    expect(await back.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "graded", score: 0.8, attempts: 1 });
    const events = await env.DB.prepare("SELECT state, detail FROM submission_events WHERE submission_id = ? ORDER BY id").bind(id).all<{ state: string; detail: string }>();
    expect(events.results.map((e) => e.state)).toEqual(["queued", "leased", "requeued", "leased", "graded"]);
    expect(events.results[3]!.detail).toBe("attempt 1 on runner runner-a (taken back after reconnecting)");
    back.close();
  });

  it("on the last attempt, keeps a disconnected runner's lease for it to take back instead of failing the job", async () => {
    const a = uniqueAssignment("last-attempt");
    await setUpAssignment(a);
    const dropped = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const first = await dropped.next("lease");
    // As if the earlier attempts were used up; the deadline is moved out of reach so that the close's
    // handling shows (it brings the deadline back to one lease TTL, or removes the failed job).
    const marker = () => jobs((sql) => sql.exec<{ d: number; h: number }>("SELECT lease_deadline AS d, lease_hard_deadline AS h FROM jobs WHERE id = ?", id).toArray()[0]);
    await jobs((sql) => sql.exec("UPDATE jobs SET attempts = ?, lease_deadline = lease_hard_deadline WHERE id = ?", Number(env.MAX_ATTEMPTS ?? 5), id));
    dropped.close();
    let row = await marker();
    await until(async () => {
      row = await marker();
      return !row || row.d < row.h;
    }, "the Dispatcher's handling of the close");
    expect(row, "the job is still in the queue, its lease kept for a lease TTL").toBeDefined();
    expect(row!.h - row!.d).toBeGreaterThan(0);
    expect((await status(id)).body.status).toBe("leased");
    const back = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion], holding: [first.lease] });
    back.send({ type: "result", lease: first.lease, outcome: gradedOutcome(0.8) });
    expect(await back.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "graded", score: 0.8 });
    back.close();
  });

  it("retries infrastructure errors without grading, then fails the submission with a reason after the last attempt", async () => {
    const a = uniqueAssignment("infra");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    for (let attempt = 1; attempt <= 5; attempt++) {
      const lease = await runner.next("lease");
      expect(lease.attempt).toBe(attempt);
      runner.send({ type: "result", lease: lease.lease, outcome: { kind: "infrastructure_error", message: "Docker engine unreachable" } });
      expect(await runner.next("ack")).toMatchObject({ accepted: true });
      const s = await status(id);
      expect(s.body.score).toBeNull();
      if (attempt < 5) {
        expect(s.body.status).not.toBe("graded");
        await jobs((sql) => sql.exec("UPDATE jobs SET not_before = 0 WHERE id = ?", id));
        await runDurableObjectAlarm(dispatcher());
      }
    }
    const s = await status(id);
    expect(s.body.status).toBe("failed");
    expect(s.body.message).toMatch(/failed 5 times.*Docker engine unreachable/);
    expect(await jobs((sql) => sql.exec("SELECT COUNT(*) AS n FROM jobs WHERE id = ?", id).one().n)).toBe(0);
    runner.close();
  });

  it("only leases jobs to runners that have the assignment's otter-grader version", async () => {
    const a = uniqueAssignment("version");
    await setUpAssignment(a);
    const wrong = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: ["6.0.0"] });
    const { id } = await submit(a);
    await settle(wrong);
    expect(wrong.has("lease")).toBe(false);
    const right = await TestRunner.connect("runner-b", { capacity: 1, otterVersions: [a.otterVersion] });
    expect((await right.next("lease")).job.submissionId).toBe(id);
    wrong.close();
    right.close();
  });

  it("hands a released lease to another runner without using up an attempt", async () => {
    const a = uniqueAssignment("release");
    await setUpAssignment(a);
    const draining = await TestRunner.connect("runner-a", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const first = await draining.next("lease");
    draining.send({ type: "ready", capacity: 0 });
    draining.send({ type: "release", lease: first.lease, reason: "shutting down" });
    await settle(draining);
    const other = await TestRunner.connect("runner-b", { capacity: 1, otterVersions: [a.otterVersion] });
    const second = await other.next("lease");
    expect(second.job.submissionId).toBe(id);
    expect(second.attempt).toBe(1);
    draining.close();
    other.close();
  });

  it("does not offer a runner the job it just handed back, even while it still offers the slot", async () => {
    const { a, runner: releasing, id } = await handedBack("release-avoid");
    const other = await TestRunner.connect("runner-b", { capacity: 1, otterVersions: [a.otterVersion] });
    const second = await other.next("lease");
    expect(second.job.submissionId).toBe(id);
    expect(second.attempt).toBe(1);
    releasing.close();
    other.close();
  });

  it("wakes up when a runner's avoidance of a job it handed back ends, and leases it the job with no further message from it", async () => {
    // The lone runner keeps offering its slot but holds nothing, so it sends no heartbeat that could
    // prompt a dispatch: only the Dispatcher's own alarm can hand it the job again.
    const { runner, id } = await handedBack("release-wake");
    const { releasedUntil, alarm } = await runInDurableObject(dispatcher(), async (_instance: Dispatcher, state) => ({
      releasedUntil: state.storage.sql.exec<{ t: number }>("SELECT released_until AS t FROM jobs WHERE id = ?", id).one().t,
      alarm: await state.storage.getAlarm(),
    }));
    expect(alarm).not.toBeNull();
    expect(alarm!).toBeLessThanOrEqual(releasedUntil);
    // The window has passed (moved instead of waited for), and the alarm fires.
    await jobs((sql) => sql.exec("UPDATE jobs SET released_until = ? WHERE id = ?", Date.now() - 1, id));
    await runDurableObjectAlarm(dispatcher());
    const again = await runner.next("lease");
    expect(again.job.submissionId).toBe(id);
    expect(again.attempt).toBe(1);
    runner.close();
  });

  it("answers a runner's offer of free slots with how many it filled and whether it ran out of jobs, if asked to", async () => {
    const a = uniqueAssignment("answers");
    await setUpAssignment(a);
    const ids = [(await submit(a)).id, (await submit(a)).id, (await submit(a)).id];
    const runner = await TestRunner.connect("runner-a", { capacity: 2, otterVersions: [a.otterVersion], offerAnswers: true });
    const first = await runner.next("lease");
    const second = await runner.next("lease");
    expect(await runner.next("offer_answer")).toEqual({ type: "offer_answer", leased: 2, exhausted: false });

    // Results alone are not offers: the third job is leased into the freed slot without an answer.
    runner.send({ type: "result", lease: first.lease, outcome: gradedOutcome(1) });
    const third = await runner.next("lease");
    runner.send({ type: "result", lease: second.lease, outcome: gradedOutcome(1) });
    await settle(runner);
    expect(runner.has("offer_answer")).toBe(false);
    expect([first, second, third].map((l) => l.job.submissionId).sort()).toEqual([...ids].sort());

    runner.send({ type: "ready", capacity: 2 });
    expect(await runner.next("offer_answer")).toEqual({ type: "offer_answer", leased: 0, exhausted: true });
    // A runner that did not ask gets no answers.
    const quiet = await TestRunner.connect("runner-b", { capacity: 1, otterVersions: [a.otterVersion] });
    quiet.send({ type: "ready", capacity: 1 });
    await settle(quiet);
    expect(quiet.has("offer_answer")).toBe(false);
    runner.close();
    quiet.close();
  });

  it("answers a malformed runner message with a protocol error and keeps the socket", async () => {
    const runner = await TestRunner.connect("runner-a", { capacity: 0, otterVersions: [] });
    runner.send({ type: "result", lease: { jobId: "x" } });
    expect(await runner.next("error")).toMatchObject({ error: "bad_message" });
    await settle(runner);
    runner.close();
  });

  it("refuses a runner without a valid token", async () => {
    await expect(TestRunner.connectWithToken("wrong-token")).rejects.toThrow(/401.*invalid_runner_token/);
  });
});
