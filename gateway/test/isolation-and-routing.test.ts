import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, ALICE, BASE, TestRunner, adminFetch, autograderZip, notebook, setUpAssignment, status, uniqueAssignment } from "./helpers.js";

async function upload(a: ReturnType<typeof uniqueAssignment>, query: string) {
  const res = await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder?timeout_seconds=60${query}`, { method: "PUT", body: autograderZip(a.otterVersion) });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function postNotebook(nb: unknown) {
  const res = await SELF.fetch(`${BASE}/api/v1/submissions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ALICE}` },
    body: JSON.stringify({ nb }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

describe("an assignment's isolation", () => {
  it("is kernel for a new assignment, is set by ?isolation=, kept by an upload that does not say, and reaches the runner in the job", async () => {
    const a = uniqueAssignment("isolation");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-isolation", { capacity: 1, otterVersions: [a.otterVersion] });

    const first = await postNotebook(notebook(a));
    expect((await runner.next("lease")).job).toMatchObject({ submissionId: first.body.id, isolation: "kernel" });

    expect((await upload(a, "&isolation=grader")).body.isolation).toBe("grader");
    expect((await upload(a, "")).body.isolation).toBe("grader"); // a fixed zip keeps the setting
    // The first job goes back to the queue with the runner's socket; a second runner takes both.
    runner.close();
    const second = await TestRunner.connect("runner-isolation-2", { capacity: 2, otterVersions: [a.otterVersion] });
    const next = await postNotebook(notebook(a));
    const leases = [await second.next("lease"), await second.next("lease")];
    expect(leases.find((l) => l.job.submissionId === next.body.id)!.job.isolation).toBe("grader");
    second.close();
  });

  it("refuses an unknown isolation with 400 invalid_isolation and changes nothing", async () => {
    const a = uniqueAssignment("isolation-bad");
    await setUpAssignment(a);
    const refused = await upload(a, "&isolation=none");
    expect([refused.status, refused.body.error]).toEqual([400, "invalid_isolation"]);
    expect(refused.body.message).toMatch(/kernel.*grader/);
    expect((await upload(a, "")).body.isolation).toBe("kernel");
  });
});

describe("otter-service 0.1 routing (top-level metadata.course/section/assignment or lab)", () => {
  const seedNotebook = (metadata: Record<string, unknown>) => {
    const nb = notebook(undefined);
    return { ...nb, metadata: { ...nb.metadata, ...metadata } };
  };

  it.each(["assignment", "lab"])("routes a notebook carrying metadata.%s like metadata.otter_service", async (key) => {
    const a = uniqueAssignment(`seed-${key}`);
    await setUpAssignment(a);
    const res = await postNotebook(seedNotebook({ course: a.course, section: a.section, [key]: a.assignment }));
    expect(res.status).toBe(202);
    const s = await status(res.body.id);
    expect(s.body).toMatchObject({ status: "queued", course: a.course, section: a.section, assignment: a.assignment });
  });

  it("prefers metadata.otter_service when a notebook carries both", async () => {
    const a = uniqueAssignment("seed-both");
    await setUpAssignment(a);
    const res = await postNotebook({ ...notebook(a), metadata: { ...notebook(a).metadata, course: "old-course", section: "9", lab: "old-lab" } });
    expect(res.status).toBe(202);
    expect((await status(res.body.id)).body).toMatchObject({ course: a.course, assignment: a.assignment });
  });

  it("says which top-level field is missing", async () => {
    const res = await postNotebook(seedNotebook({ course: "x", section: "1" }));
    expect([res.status, res.body.error]).toEqual([400, "invalid_routing"]);
    expect(res.body.message).toBe("metadata.assignment (or metadata.lab) is missing or not a non-empty string.");
    const otter = await postNotebook(notebook({ course: "x", section: "1" } as never));
    expect(otter.body.message).toBe("metadata.otter_service.assignment is missing or not a non-empty string.");
  });
});

describe("a test that ran in the kernel under grader isolation", () => {
  it("is shown to staff with the reason, and to the student only as otter's feedback", async () => {
    const a = uniqueAssignment("ran-in-kernel");
    await setUpAssignment(a);
    const runner = await TestRunner.connect("runner-ran-in-kernel", { capacity: 1, otterVersions: [a.otterVersion] });
    const { body } = await postNotebook(notebook(a));
    const lease = await runner.next("lease");
    const reason = "compares or tests the truth of a Point from the notebook";
    runner.send({
      type: "result",
      lease: lease.lease,
      outcome: {
        kind: "graded",
        grade: {
          verdict: "graded", score: 1, points: 2, maxPoints: 2, message: "",
          tests: [
            { name: "q1", score: 1, maxScore: 1, visibility: "visible", output: "q1 passed", ranInKernel: reason },
            { name: "q2", score: 1, maxScore: 1, visibility: "visible", output: "q2 passed" },
          ],
        },
        timings: {},
      },
    });
    expect(await runner.next("ack")).toMatchObject({ accepted: true });
    runner.close();

    const staff = await SELF.fetch(`${BASE}/api/v1/submissions/${body.id}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const staffTests = ((await staff.json()) as { tests: Array<Record<string, unknown>> }).tests;
    expect(staffTests).toEqual([
      { name: "q1", score: 1, max_score: 1, visibility: "visible", output: "q1 passed", ran_in_kernel: reason },
      { name: "q2", score: 1, max_score: 1, visibility: "visible", output: "q2 passed" },
    ]);
    const student = await status(body.id);
    expect(JSON.stringify(student.body.tests)).not.toContain("ran_in_kernel");
  });
});
