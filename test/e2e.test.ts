import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, type Runner, configureAssignment, freePort, newCredentials, startGateway, startRunner, submitNotebook, waitFor, waitForFinal } from "../scripts/local-stack.js";
import { otterRunDirectly } from "./support/direct-otter.js";
import { LmsStandin } from "./support/lms.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const AUTOGRADER = join(SAMPLE, "dist", "autograder.zip");
const notebookPath = (name: string) => join(SAMPLE, "submissions", `${name}.ipynb`);

describe("end to end: wrangler dev gateway + runner + Docker + otter-grader", () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  let runner: Runner;
  let lms: LmsStandin;
  let metricsPort: number;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "otter-edge-e2e-"));
    credentials = newCredentials(["alice", "bob"]);
    lms = await LmsStandin.start();
    // Grades go to the LMS stand-in at the edX-shaped URL built from the sample's course config.
    gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { LTI_CONSUMERS: `${lms.key}:${lms.secret}`, EDX_URL: lms.url } });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
    metricsPort = await freePort();
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 2, env: { OTTER_EDGE_METRICS_PORT: String(metricsPort) } });
  });

  afterAll(async () => {
    await runner?.stop();
    await gateway?.stop();
    await lms?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("records in D1 exactly the score that otter run gives for full, partial and zero notebooks", async () => {
    const names = ["full", "partial", "zero"] as const;
    const alice = credentials.students.alice!;
    // Submitted through both entry points: the hub Submit button's path and the versioned API.
    const submitted = await Promise.all(names.map((n, i) => submitNotebook(gateway.url, alice, notebookPath(n), i === 0 ? "/services/otter_grade/" : "/api/v1/submissions")));
    const direct = await Promise.all(names.map((n) => otterRunDirectly(notebookPath(n), AUTOGRADER)));
    const finals = await Promise.all(submitted.map((s) => waitForFinal(s.status_url, alice)));

    const rows = await gateway.query<{ id: string; status: string; verdict: string; score: number; points: number; max_points: number }>(
      `SELECT id, status, verdict, score, points, max_points FROM submissions WHERE id IN (${submitted.map((s) => `'${s.id}'`).join(",")})`,
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    names.forEach((name, i) => {
      const row = byId.get(submitted[i]!.id)!;
      const reference = direct[i]!;
      expect(finals[i]!.status, `${name}: ${finals[i]!.message}`).toBe("graded");
      expect(row.status).toBe("graded");
      expect(row.points).toBeCloseTo(reference.points, 6);
      expect(row.max_points).toBeCloseTo(reference.maxPoints, 6);
      expect(row.score).toBe(Math.round((reference.points / reference.maxPoints) * 1000) / 1000);
      expect(finals[i]!.tests.map((t: { name: string }) => t.name).sort()).toEqual(reference.tests.map((t) => t.name).sort());
    });
    // The three sample notebooks are what their names say.
    expect(direct.map((d) => d.points / d.maxPoints)).toEqual([1, expect.any(Number), 0]);
    expect(direct[1]!.points).toBeGreaterThan(0);
    expect(direct[1]!.points).toBeLessThan(direct[1]!.maxPoints);

    const events = await gateway.query<{ state: string }>(`SELECT state FROM submission_events WHERE submission_id = '${submitted[0]!.id}' ORDER BY id`);
    expect(events.map((e) => e.state)).toEqual(["queued", "leased", "graded"]);

    // The gradebook ends with the latest submission's grade (policy latest); the others are superseded or were overwritten.
    const passbacks = await gateway.query<{ submission_id: string; state: string }>(
      `SELECT p.submission_id, p.state FROM passbacks p JOIN submissions s ON s.id = p.submission_id ORDER BY s.created_at`,
    );
    await waitFor(
      async () => (await gateway.query<{ n: number }>(`SELECT COUNT(*) AS n FROM passbacks WHERE state IN ('pending', 'retrying')`))[0]!.n === 0,
      60_000,
      () => `passbacks not settled: ${JSON.stringify(passbacks)}`,
    );
    const [latest] = await gateway.query<{ score: number }>(`SELECT score FROM submissions WHERE user = 'alice' ORDER BY created_at DESC, rowid DESC LIMIT 1`);
    const received = await lms.grades();
    expect(received.length).toBeGreaterThan(0);
    expect(received.every((g) => g.sourcedId === "course-v1%3ADemoX+Demo101+2026:" + new URL(lms.url).host + "-sample-lti-block:alice")).toBe(true);
    expect(Number(received.at(-1)!.textString)).toBe(latest!.score);

    // The runner's Prometheus endpoint counted the three gradings, and its readiness probe is green.
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/^otter_edge_runner_jobs_total\{outcome="graded"\} 3$/m);
    expect(metrics).toMatch(/^otter_edge_runner_grading_seconds_count 3$/m);
    expect(metrics).toMatch(/^otter_edge_runner_queue_wait_seconds_count 3$/m);
    expect(metrics).toMatch(/^otter_edge_runner_capacity 2$/m);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status).toBe(200);
  });

  it("does not show one student's submission to another", async () => {
    const { status_url } = await submitNotebook(gateway.url, credentials.students.alice!, notebookPath("zero"));
    const res = await fetch(status_url, { headers: { authorization: `Bearer ${credentials.students.bob}` } });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: string }).error).toBe("forbidden");
    await waitForFinal(status_url, credentials.students.alice!);
  });
});
