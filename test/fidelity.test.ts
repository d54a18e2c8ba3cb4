/**
 * Grades equal to plain `otter run`: a representative part of the fidelity corpus
 * (assignments/fidelity; the whole corpus is `npm run bench:fidelity`), graded by plain `otter run`
 * in the grading image and by otter-edge (wrangler dev gateway → runner → container) in both
 * isolations, compared test by test: every test's score and visibility, and every total, must agree.
 *
 * The part: `protocols` (our own assignment whose tests reach the student's code through
 * generators, classes, closures, context managers, in-place mutation, printing, exceptions, seeds,
 * plots, pandas/numpy/datascience values), one public assignment, and `protocols` under an
 * otter_config.json setting that changes the grade (points_possible). The runner keeps a warm pool.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Gateway, type Runner, newCredentials, startGateway, startRunner } from "../scripts/local-stack.js";
import { type AssignmentReport, type CorpusAssignment, buildCorpus, runFidelity, withConfigVariants } from "./support/fidelity.js";

const PART = ["protocols", "rsprouse-hw01-dataframes"];
/** Notebooks per assignment: the solution, the untouched one, the one that raises, then wrong and blank answers in turn. */
const PER_ASSIGNMENT = 12;
const CONFIGS = ["points-possible"];

describe("grades equal to plain otter run on the fidelity corpus", () => {
  let work: string;
  let gateway: Gateway;
  let runner: Runner;
  let assignments: CorpusAssignment[];
  let reports: AssignmentReport[];

  beforeAll(async () => {
    assignments = await buildCorpus(PART, PER_ASSIGNMENT);
    assignments.push(...(await withConfigVariants(assignments.find((a) => a.slug === "protocols")!, CONFIGS)));
    work = await mkdtemp(join(tmpdir(), "otter-edge-fidelity-test-"));
    const credentials = newCredentials(["fidelity"]);
    gateway = await startGateway({ stateDir: join(work, "state"), credentials });
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, capacity: 2, cacheDir: join(work, "cache"), env: { OTTER_EDGE_WARM_POOL: "2" } });
    reports = await runFidelity({ gateway, admin: credentials.admin, student: credentials.students.fidelity!, assignments, isolations: ["kernel", "grader"], work });
    console.table(reports.map((r) => ({ assignment: r.slug, isolation: r.isolation, notebooks: r.notebooks, tests: r.tests, agreeing: r.agreeing })));
  }, 1_800_000);

  afterAll(async () => {
    await runner?.stop();
    await gateway?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("covers the part: every variant of every assignment was graded both ways", () => {
    for (const a of assignments) {
      for (const isolation of ["kernel", "grader"]) {
        const r = reports.find((x) => x.slug === a.slug && x.isolation === isolation)!;
        expect(r.notebooks).toBe(a.submissions.length);
        expect(r.tests).toBeGreaterThan(0);
      }
    }
    // The variants must move the grade, or agreeing proves little: full marks, none and partial.
    for (const r of reports.filter((x) => x.isolation === "kernel" && PART.includes(x.slug))) {
      const totals = new Set(r.otterPoints);
      expect(totals.has(0), `${r.slug}: a notebook scoring 0`).toBe(true);
      expect(totals.size, `${r.slug}: full, zero and partial totals`).toBeGreaterThanOrEqual(3);
    }
  });

  it.each(["kernel", "grader"])("isolation %s: every test of every notebook scores as plain otter run scores it", (isolation) => {
    const disagreements = reports.filter((r) => r.isolation === isolation).flatMap((r) => r.disagreements.map((d) => ({ assignment: r.slug, ...d })));
    expect(disagreements).toEqual([]);
  });
});
