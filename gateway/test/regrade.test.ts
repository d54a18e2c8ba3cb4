import { SELF, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import type { LeaseMessage } from "@otter-edge/shared";
import { describe, expect, it } from "vitest";
import type { Dispatcher } from "../src/dispatcher/dispatcher.js";
import { strToU8, zipSync } from "fflate";
import { ADMIN, BASE, BOB, TestRunner, adminFetch, gradedOutcome, issueToken, setUpAssignment, status, submit, type TestAssignment, uniqueAssignment } from "./helpers.js";

const dispatcher = () => env.DISPATCHER.get(env.DISPATCHER.idFromName("global"));
const outbox = () => env.PASSBACK.get(env.PASSBACK.idFromName("global"));

/**
 * Runs the outbox until none of these submissions' rows waits (this gateway has no LTI consumer, so rows
 * settle as `disabled`). A row written a moment ago can be due a millisecond after the outbox's clock.
 */
async function drainOutbox(ids: Record<string, string>) {
  const waiting = () =>
    env.DB.prepare(`SELECT COUNT(*) AS n FROM passbacks WHERE state IN ('pending', 'retrying') AND submission_id IN (SELECT value FROM json_each(?))`)
      .bind(JSON.stringify(Object.values(ids)))
      .first<number>("n");
  for (let round = 0; round < 50; round++) {
    await outbox().kick();
    await runDurableObjectAlarm(outbox());
    if ((await waiting()) === 0) return;
  }
  throw new Error("the outbox did not settle");
}

function staffFetch(path: string, init: RequestInit = {}, token = ADMIN) {
  return SELF.fetch(`${BASE}/api/v1/staff${path}`, { ...init, headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers ?? {}) } });
}

async function startRegrade(a: TestAssignment, body: Record<string, unknown>, token = ADMIN) {
  const res = await staffFetch(`/courses/${a.course}/assignments/${a.assignment}/regrades`, { method: "POST", body: JSON.stringify(body) }, token);
  return { code: res.status, body: (await res.json()) as Record<string, any> };
}

async function regrade(id: number) {
  const res = await staffFetch(`/regrades/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, any>;
}

/** Stops the runner taking work, and waits until the gateway has heard it. */
async function pause(runner: TestRunner) {
  runner.send({ type: "ready", capacity: 0 });
  // A round trip on the same socket: the revoke for a bogus lease comes after the ready was handled.
  runner.send({ type: "heartbeat", holding: [{ jobId: "settle", token: "settle-settle-settle" }] });
  await runner.next("revoke");
}

/** Takes the next lease and answers it with a grade of `score`. */
async function grade(runner: TestRunner, scoreFor: (lease: LeaseMessage) => number) {
  const lease = await runner.next("lease");
  runner.send({ type: "result", lease: lease.lease, outcome: gradedOutcome(scoreFor(lease)) });
  expect(await runner.next("ack")).toMatchObject({ accepted: true });
  return lease;
}

/** Three graded submissions of one assignment: alice 1.0, alice 0.6 (her latest), bob 0.0. */
async function gradedAssignment(label: string) {
  const a = uniqueAssignment(label);
  const { sha256 } = await setUpAssignment(a);
  const runner = await TestRunner.connect("runner-rg", { capacity: 1, otterVersions: [a.otterVersion] });
  const first = (await submit(a)).id;
  await grade(runner, () => 1);
  const second = (await submit(a)).id;
  await grade(runner, () => 0.6);
  const bobs = (await submit(a, BOB)).id;
  await grade(runner, () => 0);
  return { a, runner, sha256, ids: { first, second, bobs } };
}

/** Uploads a different autograder for the assignment (a fixed test, say) and returns its hash. */
async function newAutograder(a: TestAssignment) {
  const fixed = zipSync({ "otter_config.json": strToU8("{}"), "requirements.txt": strToU8(`otter-grader==${a.otterVersion}\n`), "tests/q1.py": strToU8("OK_FORMAT = True\n# fixed\n") });
  const res = await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder?timeout_seconds=60`, { method: "PUT", body: fixed });
  expect(res.status).toBe(200);
  return ((await res.json()) as { sha256: string }).sha256;
}

const row = (id: string) => env.DB.prepare("SELECT score, points, autograder_sha256, graded_token FROM submissions WHERE id = ?").bind(id).first();
const events = async (id: string) => (await env.DB.prepare("SELECT state, detail FROM submission_events WHERE submission_id = ? ORDER BY id").bind(id).all()).results;
const passback = (id: string) => env.DB.prepare("SELECT state, created_at, attempts FROM passbacks WHERE submission_id = ?").bind(id).first();
const testsOf = async (id: string) => (await env.DB.prepare("SELECT name, score FROM test_results WHERE submission_id = ? ORDER BY name").bind(id).all()).results;

/** Scores a changed autograder would give: alice's first stays 1.0, her second goes 0.6 → 0.8, bob's stays 0. */
const fixedScores = (ids: { first: string; second: string; bobs: string }) => (lease: LeaseMessage) =>
  lease.job.submissionId === ids.first ? 1 : lease.job.submissionId === ids.second ? 0.8 : 0;

describe("regrade", () => {
  it("dry run: grades everything, reports which scores would change, and changes nothing", async () => {
    const { a, runner, ids } = await gradedAssignment("dry");
    await newAutograder(a);
    await drainOutbox(ids);
    const before = { rows: await Promise.all(Object.values(ids).map(row)), events: await Promise.all(Object.values(ids).map(events)), passbacks: await Promise.all(Object.values(ids).map(passback)), tests: await testsOf(ids.second) };

    const started = await startRegrade(a, { dry_run: true });
    expect(started.code).toBe(202);
    expect(started.body).toMatchObject({ state: "running", dry_run: true, total: 3, done: 0 });
    for (let i = 0; i < 3; i++) {
      const lease = await grade(runner, fixedScores(ids));
      expect(lease.job.regradeId).toBe(started.body.id);
      expect(lease.lease.jobId).toBe(`r${started.body.id}:${lease.job.submissionId}`);
    }
    await drainOutbox(ids);
    const done = await regrade(started.body.id);
    expect(done).toMatchObject({ state: "finished", total: 3, done: 3, progress: { graded: 3, queued: 0, leased: 0 }, outcomes: { would_change: 1, would_stay: 2, changed: 0 } });
    expect(done.changes).toEqual([{ submission_id: ids.second, user: "alice", old_score: 0.6, new_score: 0.8, verdict: "graded", outcome: "would_change" }]);
    expect(done.finished_at).toBeTruthy();

    const after = { rows: await Promise.all(Object.values(ids).map(row)), events: await Promise.all(Object.values(ids).map(events)), passbacks: await Promise.all(Object.values(ids).map(passback)), tests: await testsOf(ids.second) };
    expect(after).toEqual(before);
    runner.close();
  });

  it("applies new scores and tests, records the change, and re-queues the LMS grade only where it changed", async () => {
    const { a, runner, ids } = await gradedAssignment("apply");
    const newSha = await newAutograder(a);
    await drainOutbox(ids);
    const before = { first: await passback(ids.first), second: await passback(ids.second), bobs: await passback(ids.bobs) };

    const started = await startRegrade(a, {});
    for (let i = 0; i < 3; i++) await grade(runner, fixedScores(ids));
    await drainOutbox(ids);
    const done = await regrade(started.body.id);
    expect(done).toMatchObject({ state: "finished", outcomes: { changed: 1, unchanged: 2 } });

    expect(await row(ids.second)).toMatchObject({ score: 0.8, points: 4, autograder_sha256: newSha });
    expect(await testsOf(ids.second)).toEqual([{ name: "q1", score: 1 }, { name: "q2", score: 3.2 }]);
    // Unchanged scores are still marked as graded by the new autograder, so only_outdated skips them next time.
    expect(await row(ids.bobs)).toMatchObject({ score: 0, autograder_sha256: newSha });
    const history = await events(ids.second);
    expect(history.at(-1)).toMatchObject({ state: "regraded", detail: expect.stringMatching(/0\.6 → 0\.8/) });
    expect((await status(ids.second)).body).toMatchObject({ status: "graded", score: 0.8 });

    // Alice's latest (policy "latest") changed: her row was queued again (a fresh outbox entry).
    // Her first and Bob's did not change: their outbox rows are untouched.
    expect((await passback(ids.second))!.created_at).not.toBe(before.second!.created_at);
    expect(await passback(ids.first)).toEqual(before.first);
    expect(await passback(ids.bobs)).toEqual(before.bobs);
    runner.close();
  });

  it("never-lower keeps a higher score; a higher one still applies", async () => {
    const { a, runner, ids } = await gradedAssignment("never-lower");
    await newAutograder(a);
    const started = await startRegrade(a, { never_lower: true, user: "alice" });
    expect(started.body.total).toBe(2);
    // Alice's first drops 1.0 → 0.4; her second rises 0.6 → 0.8.
    for (let i = 0; i < 2; i++) await grade(runner, (l) => (l.job.submissionId === ids.first ? 0.4 : 0.8));
    const done = await regrade(started.body.id);
    expect(done.outcomes).toMatchObject({ kept_higher: 1, changed: 1 });
    expect(await row(ids.first)).toMatchObject({ score: 1 });
    expect((await events(ids.first)).at(-1)).toMatchObject({ state: "regraded", detail: expect.stringMatching(/never-lower/) });
    expect(await row(ids.second)).toMatchObject({ score: 0.8 });
    runner.close();
  });

  it("only_outdated picks the submissions graded by another autograder", async () => {
    const { a, runner, ids } = await gradedAssignment("outdated");
    await newAutograder(a);
    const fresh = (await submit(a)).id;
    await grade(runner, () => 0.2);
    const started = await startRegrade(a, { only_outdated: true, dry_run: true });
    expect(started.body.total).toBe(3);
    const leased = new Set<string>();
    for (let i = 0; i < 3; i++) leased.add((await grade(runner, () => 0.5)).job.submissionId);
    expect(leased).toEqual(new Set(Object.values(ids)));
    expect(leased.has(fresh)).toBe(false);
    runner.close();
  });

  it("runs behind new submissions: a student's Submit is leased before queued regrade jobs", async () => {
    const { a, runner, ids } = await gradedAssignment("priority");
    await pause(runner);
    const started = await startRegrade(a, { dry_run: true });
    const fresh = (await submit(a)).id;
    runner.send({ type: "ready", capacity: 1 });
    const first = await grade(runner, () => 0.5);
    expect(first.job.submissionId).toBe(fresh);
    expect(first.job.regradeId).toBeUndefined();
    const rest = [await grade(runner, () => 0.5), await grade(runner, () => 0.5), await grade(runner, () => 0.5)];
    expect(rest.every((l) => l.job.regradeId === started.body.id)).toBe(true);
    expect(new Set(rest.map((l) => l.job.submissionId))).toEqual(new Set(Object.values(ids)));
    runner.close();
  });

  it("an infrastructure failure leaves the old grade; exhausted attempts mark the item failed, never the submission", async () => {
    const { a, runner, ids } = await gradedAssignment("infra");
    const started = await startRegrade(a, { submission_ids: [ids.second] });
    expect(started.body.total).toBe(1);
    const jobId = `r${started.body.id}:${ids.second}`;
    for (let attempt = 1; attempt <= 5; attempt++) {
      const lease = await runner.next("lease");
      expect(lease.attempt).toBe(attempt);
      runner.send({ type: "result", lease: lease.lease, outcome: { kind: "infrastructure_error", message: "Docker engine unreachable" } });
      expect(await runner.next("ack")).toMatchObject({ accepted: true });
      if (attempt < 5) {
        await runInDurableObject(dispatcher(), (_i: Dispatcher, state) => state.storage.sql.exec("UPDATE jobs SET not_before = 0 WHERE id = ?", jobId));
        await runDurableObjectAlarm(dispatcher());
      }
    }
    const done = await regrade(started.body.id);
    expect(done).toMatchObject({ state: "finished", progress: { failed: 1 }, failures: [{ submission_id: ids.second, message: expect.stringMatching(/Docker engine unreachable/) }] });
    expect(await row(ids.second)).toMatchObject({ score: 0.6 });
    expect((await status(ids.second)).body.status).toBe("graded");
    runner.close();
  });

  it("cancel drops waiting jobs and revokes leased ones; what was applied stays", async () => {
    const { a, runner, ids } = await gradedAssignment("cancel");
    const started = await startRegrade(a, {});
    const applied = await grade(runner, () => 0.3);
    const leased = await runner.next("lease");
    const cancelled = await staffFetch(`/regrades/${started.body.id}/cancel`, { method: "POST" });
    expect(cancelled.status).toBe(200);
    expect(await cancelled.json()).toMatchObject({ state: "cancelled", progress: { graded: 1, cancelled: 2, queued: 0, leased: 0 } });
    expect((await runner.next("revoke")).lease).toEqual(leased.lease);
    runner.send({ type: "result", lease: leased.lease, outcome: gradedOutcome(0.9) });
    expect(await runner.next("ack")).toMatchObject({ accepted: false, reason: "stale_lease" });
    expect(await row(applied.job.submissionId)).toMatchObject({ score: 0.3 });
    expect(await row(leased.job.submissionId)).not.toMatchObject({ score: 0.9 });
    expect(await runInDurableObject(dispatcher(), (_i: Dispatcher, state) => state.storage.sql.exec("SELECT COUNT(*) AS n FROM jobs WHERE id LIKE ?", `r${started.body.id}:%`).one().n)).toBe(0);
    expect(Object.values(ids)).toContain(leased.job.submissionId);
    runner.close();
  });

  it("refuses bad requests with specific codes, and staff of another course", async () => {
    const { a, runner, ids } = await gradedAssignment("refusals");
    const other = await issueToken({ kind: "staff", name: "ta-other", course: "some-other-course" });
    const own = await issueToken({ kind: "staff", name: "ta-own", course: a.course });

    expect(await startRegrade(a, {}, other.token)).toMatchObject({ code: 403, body: { error: "forbidden_course" } });
    expect(await startRegrade(a, { dry_run: "yes" })).toMatchObject({ code: 400, body: { error: "invalid_regrade_request" } });
    expect(await startRegrade(a, { everything: true })).toMatchObject({ code: 400, body: { error: "invalid_regrade_request" } });
    expect(await startRegrade(a, { submission_ids: ["no-such-submission"] })).toMatchObject({ code: 404, body: { error: "submission_not_found" } });
    expect(await startRegrade({ ...a, assignment: "lab99" }, {})).toMatchObject({ code: 404, body: { error: "unknown_assignment" } });
    const raw = await staffFetch(`/courses/${a.course}/assignments/${a.assignment}/regrades`, { method: "POST", body: "{not json" });
    expect([raw.status, ((await raw.json()) as { error: string }).error]).toEqual([400, "invalid_json"]);

    // A student's submission still in the queue is not regraded under their feet.
    await pause(runner);
    const pending = (await submit(a)).id;
    expect(await startRegrade(a, { submission_ids: [pending] }, own.token)).toMatchObject({ code: 409, body: { error: "submission_in_progress" } });

    const first = await startRegrade(a, { user: "bob" }, own.token);
    expect(first.code).toBe(202);
    expect(first.body).toMatchObject({ total: 1, requested_by: "staff:ta-own", scope: { user: "bob", submission_ids: null } });
    expect(await startRegrade(a, {})).toMatchObject({ code: 409, body: { error: "regrade_in_progress" } });
    expect((await staffFetch(`/regrades/${first.body.id}`, {}, other.token)).status).toBe(403);
    expect((await staffFetch(`/regrades/999999999`)).status).toBe(404);
    const list = (await (await staffFetch(`/courses/${a.course}/regrades`, {}, own.token)).json()) as { regrades: Array<{ id: number }> };
    expect(list.regrades.map((r) => r.id)).toEqual([first.body.id]);
    expect(ids.bobs).toBeTruthy();
    runner.close();
  });
});
