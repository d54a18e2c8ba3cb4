/**
 * Fidelity: grades equal to plain `otter run`, proven on the corpus of real otter-assign notebooks
 * (assignments/fidelity). Every notebook is graded by plain `otter run` in the grading image (the
 * reference) and by otter-edge (wrangler dev gateway → runner → container) in each isolation, and
 * every test's score and each total are compared. Prints agreement per assignment and isolation, the
 * disagreements with otter-edge's output for them, and grading times side by side.
 *
 *   npm run bench:fidelity
 *   BENCH_FIDELITY_ONLY=slug,slug     only these assignments (default: all under sources/)
 *   BENCH_FIDELITY_ISOLATIONS=kernel  which isolations (default kernel,grader)
 *   BENCH_FIDELITY_CONFIG=protocols   the assignment also graded with each otter_config.json setting of
 *                                     CONFIG_VARIANTS (points_possible, score_threshold, show_hidden, …);
 *                                     "none" for no config variants
 *   BENCH_FIDELITY_MAX=13              at most this many notebooks per assignment (default all): the
 *                                     solution, the untouched one, the one that raises, then wrong
 *                                     and blank answers in turn
 *   BENCH_FIDELITY_RECHECKS=3         each notebook with a disagreement graded this many more times by
 *                                     plain otter: a test whose own results vary is chance (an unseeded
 *                                     simulation), not otter-edge; 0 to skip
 *   BENCH_CAPACITY=2                  the runner's slots (and plain otter's parallel containers)
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Isolation } from "@otter-edge/shared";
import { newCredentials, startGateway, startRunner } from "../scripts/local-stack.js";
import { type AssignmentReport, buildCorpus, runFidelity, withConfigVariants } from "../test/support/fidelity.js";
import { fmt, machine, median, table, writeResults } from "./lib.js";

const ONLY = (process.env.BENCH_FIDELITY_ONLY ?? "").split(",").filter(Boolean);
const ISOLATIONS = (process.env.BENCH_FIDELITY_ISOLATIONS ?? "kernel,grader").split(",").map((i) => Isolation.parse(i));
const CAPACITY = Number(process.env.BENCH_CAPACITY ?? 2);
const CONFIG_BASE = process.env.BENCH_FIDELITY_CONFIG ?? "protocols";
const MAX_PER_ASSIGNMENT = Number(process.env.BENCH_FIDELITY_MAX ?? Infinity);
const RECHECKS = Number(process.env.BENCH_FIDELITY_RECHECKS ?? 3);

function reasons(r: AssignmentReport): string {
  const byTest = new Map<string, string>();
  for (const d of r.disagreements) if (!byTest.has(d.test)) byTest.set(d.test, `${d.otterVaries ? "(otter varies) " : ""}${d.notebook}/${d.test}: otter ${d.otter} vs ${d.otterEdge}; ${d.detail.replace(/\s+/g, " ").slice(0, 120)}`);
  return [...byTest.values()].slice(0, 3).join(" | ");
}

async function main() {
  const t0 = performance.now();
  const assignments = await buildCorpus(ONLY, MAX_PER_ASSIGNMENT);
  const configBase = assignments.find((a) => a.slug === CONFIG_BASE);
  if (configBase) assignments.push(...(await withConfigVariants(configBase)));
  const notebooks = assignments.reduce((n, a) => n + a.submissions.length, 0);
  console.log(`corpus: ${assignments.length} assignments, ${notebooks} notebooks (built in ${fmt((performance.now() - t0) / 1000)} s)`);

  const work = await mkdtemp(join(tmpdir(), "otter-edge-fidelity-"));
  const credentials = newCredentials(["fidelity"]);
  const gateway = await startGateway({ stateDir: join(work, "state"), credentials });
  const runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, capacity: CAPACITY, cacheDir: join(work, "cache") });
  let reports: AssignmentReport[];
  try {
    reports = await runFidelity({
      gateway,
      admin: credentials.admin,
      student: credentials.students.fidelity!,
      assignments,
      isolations: ISOLATIONS,
      work,
      referenceConcurrency: CAPACITY,
      inFlight: CAPACITY * 2,
      rechecks: RECHECKS,
      progress: (line) => console.log(`  ${line} (${fmt((performance.now() - t0) / 1000)} s)`),
    });
  } finally {
    await runner.stop();
    await gateway.stop();
    await rm(work, { recursive: true, force: true });
  }

  console.log("\nper-test agreement with plain `otter run` (same image, same autograder.zip):\n");
  console.log(
    table(
      ["assignment", "isolation", "notebooks", "tests", "agreeing", "disagreeing", "of which otter varies", "why (first of each test)"],
      reports.map((r) => [r.slug, r.isolation, r.notebooks, r.tests, r.agreeing, r.tests - r.agreeing, RECHECKS ? r.otterVaries : "-", reasons(r)]),
    ),
  );
  const fallbacks = reports.filter((r) => r.isolation === "grader");
  if (fallbacks.length > 0) {
    console.log("\ntests that ran in the kernel under `grader` (the bridge could not carry them), by reason:\n");
    const byReason = new Map<string, { count: number; assignments: Set<string>; example: string }>();
    for (const r of fallbacks)
      for (const k of r.ranInKernel) {
        // The reason's first clause, without the values it names, groups like with like.
        const key = k.reason.replace(/\s+/g, " ").replace(/'[^']*'|"[^"]*"|\d+/g, "…").slice(0, 90);
        const entry = byReason.get(key) ?? { count: 0, assignments: new Set<string>(), example: `${r.slug}/${k.notebook}/${k.test}` };
        entry.count += 1;
        entry.assignments.add(r.slug);
        byReason.set(key, entry);
      }
    const tests = fallbacks.reduce((n, r) => n + r.tests, 0);
    const fell = fallbacks.reduce((n, r) => n + r.ranInKernel.length, 0);
    console.log(`${fell} of ${tests} tests (${fmt((100 * fell) / Math.max(1, tests), 2)} %)`);
    if (byReason.size > 0)
      console.log(table(["reason", "tests", "assignments", "example"], [...byReason].sort((x, y) => y[1].count - x[1].count).map(([reason, e]) => [reason, e.count, [...e.assignments].join(" "), e.example])));
  }
  console.log("\ntotals and grading time (median seconds per notebook: otter = docker run of plain otter run; otter-edge = lease → graded):\n");
  console.log(
    table(
      ["isolation", "notebooks", "tests", "agreeing", "agreement", "disagreeing where otter varies", "totals differing", "otter s", "otter-edge s", "ratio"],
      ISOLATIONS.map((isolation) => {
        const rs = reports.filter((r) => r.isolation === isolation);
        const tests = rs.reduce((n, r) => n + r.tests, 0);
        const agreeing = rs.reduce((n, r) => n + r.agreeing, 0);
        const varies = rs.reduce((n, r) => n + r.otterVaries, 0);
        const totals = rs.reduce((n, r) => n + r.disagreements.filter((d) => d.test === "(total)").length, 0);
        const otter = median(rs.flatMap((r) => r.otterSeconds));
        const edge = median(rs.flatMap((r) => r.otterEdgeSeconds));
        return [isolation, rs.reduce((n, r) => n + r.notebooks, 0), tests, agreeing, `${fmt((100 * agreeing) / Math.max(1, tests), 2)} %`, RECHECKS ? varies : "-", totals, fmt(otter, 2), fmt(edge, 2), fmt(edge / otter, 2)];
      }),
    ),
  );
  const file = await writeResults("fidelity", { machine: machine(), at: new Date().toISOString(), capacity: CAPACITY, reports });
  console.log(`\nfull report (every disagreement): ${file}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
