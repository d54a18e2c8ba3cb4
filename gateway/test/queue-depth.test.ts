import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, ALICE, BASE, TestRunner, issueToken, setUpAssignment, submit, uniqueAssignment } from "./helpers.js";

type Depth = { pending: number; leased: number; demand: number; oldest_enqueued_at: string | null };

async function queue(token: string) {
  return SELF.fetch(`${BASE}/runner/v1/queue`, { headers: { authorization: `Bearer ${token}` } });
}

async function depth(token: string): Promise<Depth> {
  const res = await queue(token);
  expect(res.status).toBe(200);
  expect(res.headers.get("cache-control")).toBe("no-store");
  return (await res.json()) as Depth;
}

describe("queue depth for the autoscaler (GET /runner/v1/queue)", () => {
  it("takes a runner token only", async () => {
    for (const token of ["", ALICE, ADMIN, "oe_runner_not-issued"]) {
      const res = await queue(token);
      expect(res.status, `token ${JSON.stringify(token)}`).toBe(401);
      expect(await res.json()).toMatchObject({ error: "invalid_runner_token" });
    }
  });

  it("counts waiting and leased jobs, and demand is their sum", async () => {
    const { token } = await issueToken({ kind: "runner", name: "keda" });
    const a = uniqueAssignment("depth");
    await setUpAssignment(a);
    const before = await depth(token);

    const ids = [await submit(a), await submit(a), await submit(a)].map((s) => s.id);
    const queued = await depth(token);
    expect(queued).toMatchObject({ pending: before.pending + 3, leased: before.leased, demand: before.demand + 3 });
    expect(Date.parse(queued.oldest_enqueued_at!)).not.toBeNaN();

    // A runner with one slot for this assignment's otter version takes one job: it moves from
    // waiting to leased, and the demand stays (it still holds a slot until its result).
    const runner = await TestRunner.connect("depth-runner", { capacity: 1, otterVersions: [a.otterVersion] });
    const lease = await runner.next("lease");
    expect(ids).toContain(lease.job.submissionId);
    expect(await depth(token)).toMatchObject({ pending: before.pending + 2, leased: before.leased + 1, demand: before.demand + 3 });
    runner.close();
  });
});
