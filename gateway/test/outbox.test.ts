import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import type { PassbackOutbox } from "../src/passback/outbox.js";
import { describe, expect, it } from "vitest";

const outbox = () => env.PASSBACK.get(env.PASSBACK.idFromName("global"));

/** Graded submissions with pending outbox rows: `students` students with `each` rows apiece. */
async function backlog(students: number, each: number): Promise<void> {
  const rows = Array.from({ length: students * each }, (_, i) => ({ id: `sub-${i}`, user: `student${i % students}`, at: new Date(Date.UTC(2026, 11, 1, 9, 0, 0, i)).toISOString() }));
  await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO submissions (id, user, course, section, assignment, notebook_sha256, notebook_bytes, autograder_sha256, status, score, created_at, finished_at, updated_at)
       SELECT j.value ->> '$.id', j.value ->> '$.user', 'c', 's', 'a', 'nb', 1, 'ag', 'graded', 1, j.value ->> '$.at', j.value ->> '$.at', j.value ->> '$.at'
       FROM json_each(?1) AS j ORDER BY j.key`,
    ).bind(JSON.stringify(rows)),
    env.DB.prepare(
      `INSERT INTO passbacks (submission_id, course, section, assignment, user, state, attempts, next_attempt_at, created_at, updated_at)
       SELECT j.value ->> '$.id', 'c', 's', 'a', j.value ->> '$.user', 'pending', 0, 0, j.value ->> '$.at', j.value ->> '$.at'
       FROM json_each(?1) AS j ORDER BY j.key`,
    ).bind(JSON.stringify(rows)),
  ]);
}

describe("the passback outbox's drain", () => {
  // It reads one page of due rows (200) at a time and reads again only once every row taken is
  // settled: rows beyond the first page must still be served in the same drain, each exactly once.
  it("settles a backlog larger than one page in one alarm, every row once", async () => {
    await backlog(25, 10);
    // One drain, called directly: a kick would also let the runtime fire the alarm on its own, in a race with the test.
    await runInDurableObject(outbox(), (instance) => (instance as unknown as PassbackOutbox).alarm());
    const states = await env.DB.prepare("SELECT state, COUNT(*) AS n FROM passbacks GROUP BY state").all<{ state: string; n: number }>();
    // This gateway has no LTI consumer configured, so every row is settled as `disabled`, with the reason.
    expect(states.results).toEqual([{ state: "disabled", n: 250 }]);
    const reasons = await env.DB.prepare("SELECT DISTINCT last_error AS e FROM passbacks").all<{ e: string }>();
    expect(reasons.results.map((r) => r.e)).toEqual([expect.stringMatching(/no LTI consumer configured/)]);
    expect(await runDurableObjectAlarm(outbox())).toBe(false); // nothing left due, no alarm set
  });
});
