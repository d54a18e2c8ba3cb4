import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, ALICE, BASE, TestRunner, adminFetch, issueToken, setUpAssignment, submit, uniqueAssignment } from "./helpers.js";

const asToken = (token: string, path: string, init: RequestInit = {}) =>
  SELF.fetch(`${BASE}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });

describe("runner and staff tokens", () => {
  it("keeps only a hash of each token", async () => {
    const { id, token } = await issueToken({ kind: "runner", name: "hash-check" });
    expect(token).toMatch(/^oe_runner_[A-Za-z0-9_-]{43}$/);
    const row = await env.DB.prepare("SELECT * FROM api_tokens WHERE id = ?").bind(id).first<Record<string, string>>();
    expect(Object.values(row!).some((v) => String(v).includes(token.slice(10)))).toBe(false);
    const listed = (await (await adminFetch("/tokens")).json()) as { tokens: Array<Record<string, unknown>> };
    expect(listed.tokens.find((t) => t.id === id)).toMatchObject({ kind: "runner", name: "hash-check", revoked_at: null });
    expect(JSON.stringify(listed)).not.toContain(token);
  });

  it("closes the socket of a revoked runner token, requeues its job, and refuses the token afterwards", async () => {
    const a = uniqueAssignment("revoke");
    await setUpAssignment(a);
    const doomed = await issueToken({ kind: "runner", name: "doomed" });
    const runner = await TestRunner.connectWithToken(doomed.token, { capacity: 1, otterVersions: [a.otterVersion] });
    const { id } = await submit(a);
    const lease = await runner.next("lease");
    expect(lease.job.submissionId).toBe(id);

    const revoke = await adminFetch(`/tokens/${doomed.id}`, { method: "DELETE" });
    expect(revoke.status).toBe(200);
    expect(((await revoke.json()) as { disconnected: number }).disconnected).toBe(1);
    await expect(runner.next("lease")).rejects.toThrow(/socket closed/);
    const events = await env.DB.prepare("SELECT state, detail FROM submission_events WHERE submission_id = ? ORDER BY id").bind(id).all<{ state: string; detail: string }>();
    expect(events.results.at(-1)).toMatchObject({ state: "requeued", detail: "runner token revoked" });
    await expect(TestRunner.connectWithToken(doomed.token)).rejects.toThrow(/401.*invalid_runner_token/);
  });

  it("lets staff of a course read its submissions, hidden output included, and nothing of another course", async () => {
    const mine = uniqueAssignment("staff-mine");
    const other = uniqueAssignment("staff-other");
    await setUpAssignment(mine);
    await setUpAssignment(other);
    const staff = await issueToken({ kind: "staff", name: "ta", course: mine.course });
    const inMine = await submit(mine);
    const inOther = await submit(other);

    expect((await asToken(staff.token, `/api/v1/submissions/${inMine.id}`)).status).toBe(200);
    const refused = await asToken(staff.token, `/api/v1/submissions/${inOther.id}`);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: string }).error).toBe("forbidden_course");

    const zip = await adminFetch(`/assignments/${other.course}/lab01/autograder`, { method: "PUT" });
    expect(zip.status).toBe(400); // the admin may; an empty body is the only problem
    const staffUpload = await asToken(staff.token, `/api/v1/admin/assignments/${other.course}/lab01/autograder`, { method: "PUT", body: "x" });
    expect([staffUpload.status, ((await staffUpload.json()) as { error: string }).error]).toEqual([403, "forbidden_course"]);
    const staffToken = await asToken(staff.token, "/api/v1/admin/tokens", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ kind: "admin", name: "escalate" }) });
    expect([staffToken.status, ((await staffToken.json()) as { error: string }).error]).toEqual([403, "admin_only"]);
  });

  it("refuses student and unknown tokens on the admin API, and runner tokens as staff", async () => {
    const runner = await issueToken({ kind: "runner", name: "not-staff" });
    for (const token of [ALICE, "nope", runner.token]) {
      const res = await asToken(token, "/api/v1/admin/stats");
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: string }).error).toBe("invalid_staff_token");
    }
    const stats = await asToken(ADMIN, "/api/v1/admin/stats");
    expect(stats.status).toBe(200);
    expect(await stats.json()).toMatchObject({ queue: { pending: expect.any(Number), leased: expect.any(Number) }, runners: expect.any(Array), passback_backlog: expect.any(Object) });
  });
});
