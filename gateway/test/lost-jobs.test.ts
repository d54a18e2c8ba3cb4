import { createExecutionContext, createScheduledController, env, runDurableObjectAlarm, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { Dispatcher } from "../src/dispatcher/dispatcher.js";
import { STUCK_AFTER_MS } from "../src/dispatcher/sweeper.js";
import worker from "../src/index.js";
import { TestRunner, gradedOutcome, setUpAssignment, status, submit, uniqueAssignment } from "./helpers.js";

/**
 * No lost job when D1 fails a write. The faults are real D1 failures: a SQLite trigger that aborts
 * the one write under test (for one submission), dropped again to let D1 "recover".
 */
const dispatcher = () => env.DISPATCHER.get(env.DISPATCHER.idFromName("global"));
const heldByDispatcher = (id: string) =>
  runInDurableObject(dispatcher(), (_d: Dispatcher, state) => state.storage.sql.exec("SELECT COUNT(*) AS n FROM jobs WHERE id = ?", id).one().n as number);
const wakeNow = (id: string) => runInDurableObject(dispatcher(), (_d: Dispatcher, state) => void state.storage.sql.exec("UPDATE jobs SET not_before = 0 WHERE id = ?", id));

const faults: string[] = [];
/** Makes D1 refuse the update of this submission to `status`, until `heal`. */
async function failStatusWrite(id: string, statusValue: string) {
  const name = `fault_${statusValue}_${id.replace(/-/g, "")}`;
  await env.DB.exec(`CREATE TRIGGER ${name} BEFORE UPDATE OF status ON submissions WHEN NEW.id = '${id}' AND NEW.status = '${statusValue}' BEGIN SELECT RAISE(ABORT, 'injected D1 fault'); END`);
  faults.push(name);
}
async function heal() {
  for (const name of faults.splice(0)) await env.DB.exec(`DROP TRIGGER IF EXISTS ${name}`);
}
afterEach(heal);

describe("a D1 write that fails loses no job", () => {
  it("the last attempt's failure: the job stays in the Dispatcher until D1 takes 'failed'", async () => {
    const a = uniqueAssignment("lost-final");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-lost-final", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    await failStatusWrite(id, "failed");
    for (let attempt = 1; attempt <= 5; attempt++) {
      const lease = await runner.next("lease");
      runner.send({ type: "result", lease: lease.lease, outcome: { kind: "infrastructure_error", message: "Docker engine unreachable" } });
      expect(await runner.next("ack")).toMatchObject({ accepted: true });
      await wakeNow(id);
      await runDurableObjectAlarm(dispatcher());
    }
    // D1 refused "failed": before the fix the job was gone here, and D1 said "leased" forever.
    expect(await heldByDispatcher(id)).toBe(1);
    expect((await status(id)).body.status).not.toBe("failed");

    await heal();
    const again = await runner.next("lease");
    expect(again.attempt).toBe(6);
    runner.send({ type: "result", lease: again.lease, outcome: { kind: "infrastructure_error", message: "Docker engine unreachable" } });
    expect(await runner.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "failed", score: null });
    expect(await heldByDispatcher(id)).toBe(0);
    runner.close();
  });

  it("the grade: refused with record_failed, the job is graded again, and recorded once D1 takes it", async () => {
    const a = uniqueAssignment("lost-grade");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-lost-grade", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    await failStatusWrite(id, "graded");
    const first = await runner.next("lease");
    runner.send({ type: "result", lease: first.lease, outcome: gradedOutcome(1) });
    expect(await runner.next("ack")).toMatchObject({ accepted: false, reason: "record_failed" });
    expect(await heldByDispatcher(id)).toBe(1);

    await heal();
    await wakeNow(id);
    await runDurableObjectAlarm(dispatcher());
    const second = await runner.next("lease");
    runner.send({ type: "result", lease: second.lease, outcome: gradedOutcome(1) });
    expect(await runner.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "graded", score: 1 });
    expect(await heldByDispatcher(id)).toBe(0);
    runner.close();
  });

  it("the lease: D1 keeps saying queued, the job is graded all the same", async () => {
    const a = uniqueAssignment("lost-lease");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-lost-lease", { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    await failStatusWrite(id, "leased");
    const lease = await runner.next("lease");
    runner.send({ type: "result", lease: lease.lease, outcome: gradedOutcome(0.5) });
    expect(await runner.next("ack")).toMatchObject({ accepted: true });
    expect((await status(id)).body).toMatchObject({ status: "graded", score: 0.5 });
    runner.close();
  });
});

describe("the sweeper (cron trigger)", () => {
  it("queues again a submission D1 says is waiting that no Dispatcher holds, and leaves held and recent ones alone", async () => {
    const a = uniqueAssignment("sweeper");
    await setUpAssignment(a);
    const [lost, held, recent] = [(await submit(a)).id, (await submit(a)).id, (await submit(a)).id];
    const old = new Date(Date.now() - STUCK_AFTER_MS - 60_000).toISOString();
    await env.DB.prepare("UPDATE submissions SET updated_at = ?1 WHERE id IN (?2, ?3)").bind(old, lost, held).run();
    // The Dispatcher lost one job (as an older gateway's requeue could), and lost the recent one too,
    // which the sweeper must not touch before STUCK_AFTER_MS.
    await runInDurableObject(dispatcher(), (_d: Dispatcher, state) => void state.storage.sql.exec("DELETE FROM jobs WHERE id IN (?, ?)", lost, recent));

    // The Worker's own scheduled handler, as the cron trigger calls it.
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: "*/5 * * * *" }), env, ctx);
    await waitOnExecutionContext(ctx);
    expect(await heldByDispatcher(lost)).toBe(1);
    expect(await heldByDispatcher(held)).toBe(1);
    expect(await heldByDispatcher(recent)).toBe(0);
    const events = (await status(lost)).body.events as Array<{ state: string; detail: string }>;
    expect(events.at(-1)).toMatchObject({ state: "requeued", detail: expect.stringContaining("sweeper") });
    expect(((await status(held)).body.events as Array<{ state: string }>).map((e) => e.state)).toEqual(["queued"]);

    // And it is graded like any job.
    const runner = await TestRunner.connect("runner-sweeper", { capacity: 3, otterVersions: [a.otterVersion] });
    const leases = [await runner.next("lease"), await runner.next("lease")];
    expect(leases.map((l) => l.job.submissionId).sort()).toEqual([lost, held].sort());
    for (const l of leases) {
      runner.send({ type: "result", lease: l.lease, outcome: gradedOutcome(1) });
      expect(await runner.next("ack")).toMatchObject({ accepted: true });
    }
    expect((await status(lost)).body).toMatchObject({ status: "graded", score: 1 });
    runner.close();
  });
});
