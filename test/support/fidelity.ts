/**
 * The differential fidelity harness: every notebook of the corpus (assignments/fidelity, built by
 * make_corpus.py with `otter assign`) graded by plain `otter run` in the grading image and by
 * otter-edge (gateway → runner → container), and every test's score compared. Used by
 * `npm run bench:fidelity` (the whole corpus) and test/fidelity.test.ts (a representative part).
 */
import { createHash } from "node:crypto";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import type { Isolation } from "@otter-edge/shared";
import { strFromU8, strToU8, unzipSync, zipSync } from "fflate";
import { type Gateway, ROOT, adminCli, run, submitNotebook, waitForFinal } from "../../scripts/local-stack.js";
import { type DirectResult, otterRunDirectly } from "./direct-otter.js";

export const FIDELITY = join(ROOT, "assignments", "fidelity");
const HOST_PYTHON = join(ROOT, ".otter-edge", "venv", "bin", "python");
const HOST_OTTER = join(ROOT, ".otter-edge", "venv", "bin", "otter");
export const COURSE = "fidelity";
const SECTION = "1";

export interface CorpusNotebook {
  name: string;
  kind: string;
  path: string;
}
export interface CorpusAssignment {
  slug: string;
  autograder: string;
  questions: string[];
  submissions: CorpusNotebook[];
}

/** A hash of every file under a directory (names and bytes): the corpus is rebuilt when its sources change. */
async function treeHash(dir: string): Promise<string> {
  const hash = createHash("sha256");
  const walk = async (d: string): Promise<void> => {
    for (const entry of (await readdir(d, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) await walk(p);
      else hash.update(relative(dir, p)).update("\0").update(await readFile(p)).update("\0");
    }
  };
  await walk(dir);
  hash.update(await readFile(join(FIDELITY, "make_corpus.py")));
  return hash.digest("hex");
}

/**
 * Builds the corpus for the given assignments (all when `only` is empty) under .otter-edge/fidelity,
 * once per version of their sources: `otter assign` (which checks the solutions pass) and the
 * variants (solution, each question wrong and left blank, a notebook that raises, the untouched one).
 */
export async function buildCorpus(only: string[] = [], maxPerAssignment = Infinity): Promise<CorpusAssignment[]> {
  const sources = join(FIDELITY, "sources");
  const slugs = only.length ? only : (await readdir(sources, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  const out: CorpusAssignment[] = [];
  for (const slug of slugs) {
    const dir = join(ROOT, ".otter-edge", "fidelity", slug);
    const stamp = join(dir, ".sources.sha256");
    const want = await treeHash(join(sources, slug));
    if ((await readFile(stamp, "utf8").catch(() => "")) !== want) {
      await run(HOST_PYTHON, [join(FIDELITY, "make_corpus.py"), "--otter", HOST_OTTER, "--sources", sources, "--out", dir, "--only", slug, "--course", COURSE]);
      await writeFile(stamp, want);
    }
    const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as { assignments: Array<{ slug: string; autograder: string; questions: string[]; submissions: CorpusNotebook[] }> };
    for (const a of manifest.assignments) {
      const submissions = a.submissions.map((s) => ({ ...s, path: join(dir, s.path) }));
      out.push({ slug: a.slug, autograder: join(dir, a.autograder), questions: a.questions, submissions: sample(submissions, maxPerAssignment) });
    }
  }
  return out;
}

/**
 * otter_config.json settings that change the grade or what students see (docs/design.md, "otter 7
 * results.json"), each applied to a copy of one assignment's autograder.zip: plain otter and
 * otter-edge must agree on them too.
 */
export const CONFIG_VARIANTS: Record<string, Record<string, unknown>> = {
  "points-possible": { points_possible: 40 },
  "score-threshold": { score_threshold: 0.5 },
  "show-hidden": { show_hidden: true },
  "show-stdout": { show_stdout: true },
  "hidden-summary": { show_hidden: false, show_all_public: true },
  seed: { seed: 42 },
  pdf: { pdf: true, warn_missing_pdf: true },
};

/** The assignment again with each of CONFIG_VARIANTS written into its otter_config.json. */
export async function withConfigVariants(a: CorpusAssignment, names = Object.keys(CONFIG_VARIANTS)): Promise<CorpusAssignment[]> {
  const files = unzipSync(new Uint8Array(await readFile(a.autograder)));
  const config = JSON.parse(strFromU8(files["otter_config.json"]!)) as Record<string, unknown>;
  const out: CorpusAssignment[] = [];
  for (const name of names) {
    const autograder = a.autograder.replace(/\.zip$/, `.${name}.zip`);
    await writeFile(autograder, zipSync({ ...files, "otter_config.json": strToU8(JSON.stringify({ ...config, ...CONFIG_VARIANTS[name] })) }));
    // Enough notebooks to move the settings: full marks, none, a raise and partial scores.
    const kept = [...a.submissions.filter((s) => ["solution", "empty", "raises"].includes(s.name)), ...a.submissions.filter((s) => s.name.startsWith("wrong-")).slice(0, 3)];
    out.push({ ...a, slug: `${a.slug}-cfg-${name}`, autograder, submissions: kept });
  }
  return out;
}

/**
 * At most `max` of an assignment's notebooks, always the same ones: the solution, the untouched
 * notebook and the one that raises, then wrong and blank answers to the questions in turn.
 */
export function sample(notebooks: CorpusNotebook[], max: number): CorpusNotebook[] {
  if (notebooks.length <= max) return notebooks;
  const fixed = notebooks.filter((n) => ["solution", "empty", "raises"].includes(n.kind));
  const wrong = notebooks.filter((n) => n.kind === "wrong");
  const blank = notebooks.filter((n) => n.kind === "blank");
  const rest = wrong.flatMap((w, i) => [w, ...(blank[i] ? [blank[i]!] : [])]);
  return [...fixed, ...rest].slice(0, max);
}

/** The assignment name otter-edge knows a corpus assignment by, per isolation. */
export const assignmentName = (slug: string, isolation: Isolation) => `${slug}--${isolation}`;

/** Loads one course config holding every corpus assignment in each isolation, and uploads their autograders. */
export async function configureCorpus(gateway: Gateway, admin: string, assignments: CorpusAssignment[], isolations: Isolation[], work: string) {
  const names = Object.fromEntries(assignments.flatMap((a) => isolations.map((i) => [assignmentName(a.slug, i), `${assignmentName(a.slug, i)}-block`])));
  const configFile = join(work, "fidelity-course-config.json");
  await writeFile(configFile, JSON.stringify({ [COURSE]: { [SECTION]: { course_id: "Fidelity+2026", assignments: names } } }));
  await adminCli(gateway.url, admin, ["config", "load", configFile]);
  for (const a of assignments) {
    for (const isolation of isolations) {
      await adminCli(gateway.url, admin, ["autograder", "upload", COURSE, assignmentName(a.slug, isolation), a.autograder, "--timeout-seconds", "600", "--isolation", isolation]);
    }
  }
}

export interface TestScore {
  name: string;
  score: number;
  maxScore: number;
  visibility: string;
  /**
   * Failing cases otter reported in the test's output ("❌" per case), within the part of the
   * output the runner keeps: many public tests are worth 0 points, where the score alone cannot
   * tell a pass from a fail.
   */
  failures: number;
}

/** The runner keeps this much of a test's output (runner/src/grading/results.ts); both sides are counted within it. */
const KEPT_OUTPUT = 4_000;
const failures = (output: string | undefined) => ((output ?? "").slice(0, KEPT_OUTPUT).match(/❌/g) ?? []).length;
export interface Graded {
  points: number;
  tests: TestScore[];
  /** Seconds the grading itself took: `docker run` for otter; lease → graded (the D1 events) for otter-edge. */
  seconds: number;
  /** otter-edge only: the submission's verdict and message. */
  verdict?: string;
  message?: string;
  output?: Record<string, string>;
  /** otter-edge only: tests that ran in the student's kernel although the assignment runs them in the grader, and why. */
  ranInKernel?: Array<{ test: string; reason: string }>;
}

export async function gradeWithOtter(nb: CorpusNotebook, autograder: string): Promise<Graded> {
  const t0 = performance.now();
  const r: DirectResult = await otterRunDirectly(nb.path, autograder);
  const tests = r.tests as Array<{ name?: string; score?: number; max_score?: number; visibility?: string; output?: string }>;
  return {
    points: r.points,
    tests: tests.map((t, i) => ({ name: t.name ?? `test ${i + 1}`, score: t.score ?? 0, maxScore: t.max_score ?? 0, visibility: t.visibility ?? "visible", failures: failures(t.output) })),
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * Submits a corpus notebook to otter-edge as the given student, routed to the assignment of that
 * isolation, and reads the result as staff (`admin`): hidden tests' output included.
 */
export async function gradeWithOtterEdge(gateway: Gateway, student: string, admin: string, slug: string, isolation: Isolation, nb: CorpusNotebook, work: string): Promise<Graded> {
  const notebook = JSON.parse(await readFile(nb.path, "utf8"));
  notebook.metadata.otter_service = { course: COURSE, section: SECTION, assignment: assignmentName(slug, isolation) };
  const path = join(work, `${slug}.${nb.name}.${isolation}.ipynb`);
  await writeFile(path, JSON.stringify(notebook));
  const { status_url } = await submitNotebook(gateway.url, student, path);
  const final = await waitForFinal(status_url, admin, 900_000);
  const tests = (final.tests ?? []) as Array<{ name: string; score: number; max_score: number; visibility: string; output?: string; ran_in_kernel?: string }>;
  const events = (final.events ?? []) as Array<{ at: string; state: string }>;
  const leased = events.filter((e) => e.state === "leased").at(-1);
  const done = events.find((e) => e.state === "graded" || e.state === "failed");
  return {
    points: final.points ?? 0,
    tests: tests.map((t) => ({ name: t.name, score: t.score, maxScore: t.max_score, visibility: t.visibility, failures: failures(t.output) })),
    seconds: leased && done ? (Date.parse(done.at) - Date.parse(leased.at)) / 1000 : NaN,
    verdict: final.verdict,
    message: final.message,
    output: Object.fromEntries(tests.map((t) => [t.name, t.output ?? ""])),
    ranInKernel: tests.filter((t) => t.ran_in_kernel).map((t) => ({ test: t.name, reason: t.ran_in_kernel! })),
  };
}

export interface Disagreement {
  notebook: string;
  test: string;
  otter: number | null;
  otterEdge: number | null;
  detail: string;
  /**
   * Plain otter gave this test (or total) different results when the notebook was graded again
   * (`rechecks`): the test depends on chance, such as an unseeded simulation, so a difference from
   * otter-edge on it says nothing about otter-edge. Undefined when not rechecked.
   */
  otterVaries?: boolean;
}

/** Every test otter scored, compared with otter-edge's score for it, and the totals. */
export function compare(notebook: string, otter: Graded, edge: Graded): { tests: number; agreeing: number; disagreements: Disagreement[] } {
  const disagreements: Disagreement[] = [];
  const edgeByName = new Map(edge.tests.map((t) => [t.name, t]));
  const same = (a: number, b: number) => Math.abs(a - b) < 1e-9;
  for (const t of otter.tests) {
    const e = edgeByName.get(t.name);
    if (!e || !same(e.score, t.score) || !same(e.maxScore, t.maxScore) || e.visibility !== t.visibility || e.failures !== t.failures) {
      const visibility = e && e.visibility !== t.visibility ? `visibility ${t.visibility} vs ${e.visibility}; ` : "";
      const failing = e && e.failures !== t.failures ? `failing cases ${t.failures} vs ${e.failures}; ` : "";
      disagreements.push({ notebook, test: t.name, otter: t.score, otterEdge: e?.score ?? null, detail: e ? (visibility + failing + (edge.output?.[t.name] ?? "")).slice(0, 300) : `missing (verdict ${edge.verdict}: ${edge.message ?? ""})`.slice(0, 300) });
    }
  }
  for (const e of edge.tests) {
    if (!otter.tests.some((t) => t.name === e.name)) disagreements.push({ notebook, test: e.name, otter: null, otterEdge: e.score, detail: "not in otter's results" });
  }
  // otter-edge records points to 3 decimals (the grade's own precision): a total agrees within that.
  if (Math.abs(otter.points - edge.points) > 0.0005 + 1e-9) disagreements.push({ notebook, test: "(total)", otter: otter.points, otterEdge: edge.points, detail: `verdict ${edge.verdict}` });
  const tests = otter.tests.length;
  const failingTests = new Set(disagreements.filter((d) => d.test !== "(total)" && d.otter !== null).map((d) => d.test));
  return { tests, agreeing: tests - failingTests.size, disagreements };
}

/** Runs `fn` over `items` with at most `limit` at a time, keeping the order of results. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i]!, i);
      }
    }),
  );
  return results;
}

export interface AssignmentReport {
  slug: string;
  isolation: Isolation;
  notebooks: number;
  tests: number;
  agreeing: number;
  disagreements: Disagreement[];
  /** Disagreeing tests on which plain otter also disagreed with itself when graded again (chance, not otter-edge). */
  otterVaries: number;
  /** Tests that ran in the kernel although the assignment runs them in the grader (`grader` isolation), and why. */
  ranInKernel: Array<{ notebook: string; test: string; reason: string }>;
  /** Plain otter's total per notebook: the variants must spread it (full marks, none, partial). */
  otterPoints: number[];
  otterSeconds: number[];
  otterEdgeSeconds: number[];
}

/**
 * Grades every notebook of `assignments` with plain otter (`referenceConcurrency` containers at a
 * time), then through otter-edge in each isolation (the gateway's runner does the pacing: up to
 * `inFlight` submissions wait in its queue), and compares them test by test.
 */
export async function runFidelity(opts: {
  gateway: Gateway;
  admin: string;
  student: string;
  assignments: CorpusAssignment[];
  isolations: Isolation[];
  work: string;
  referenceConcurrency?: number;
  inFlight?: number;
  /** Each notebook with a disagreement is graded this many more times by plain otter, to tell chance from otter-edge. */
  rechecks?: number;
  progress?: (line: string) => void;
}): Promise<AssignmentReport[]> {
  await configureCorpus(opts.gateway, opts.admin, opts.assignments, opts.isolations, opts.work);
  const jobs = opts.assignments.flatMap((a) => a.submissions.map((nb) => ({ a, nb })));
  const reference = await mapLimit(jobs, opts.referenceConcurrency ?? 2, async ({ a, nb }) => gradeWithOtter(nb, a.autograder));
  opts.progress?.(`plain otter run: ${jobs.length} notebooks graded`);
  const reports: AssignmentReport[] = [];
  for (const isolation of opts.isolations) {
    const graded = await mapLimit(jobs, opts.inFlight ?? 4, async ({ a, nb }) => gradeWithOtterEdge(opts.gateway, opts.student, opts.admin, a.slug, isolation, nb, opts.work));
    opts.progress?.(`otter-edge (${isolation}): ${jobs.length} notebooks graded`);
    for (const a of opts.assignments) {
      const report: AssignmentReport = { slug: a.slug, isolation, notebooks: 0, tests: 0, agreeing: 0, disagreements: [], otterVaries: 0, ranInKernel: [], otterPoints: [], otterSeconds: [], otterEdgeSeconds: [] };
      jobs.forEach(({ a: ja, nb }, i) => {
        if (ja !== a) return;
        const c = compare(nb.name, reference[i]!, graded[i]!);
        report.notebooks += 1;
        report.tests += c.tests;
        report.agreeing += c.agreeing;
        report.disagreements.push(...c.disagreements);
        report.ranInKernel.push(...(graded[i]!.ranInKernel ?? []).map((k) => ({ notebook: nb.name, ...k })));
        report.otterPoints.push(reference[i]!.points);
        report.otterSeconds.push(reference[i]!.seconds);
        report.otterEdgeSeconds.push(graded[i]!.seconds);
      });
      reports.push(report);
    }
  }
  if (opts.rechecks) await recheckWithOtter(reports, jobs, reference, opts.rechecks, opts.referenceConcurrency ?? 2, opts.progress);
  return reports;
}

/** What plain otter said of one test (or of the total, "(total)") in one grading. */
function otterSays(g: Graded, test: string): string {
  if (test === "(total)") return g.points.toFixed(3);
  const t = g.tests.find((x) => x.name === test);
  return t ? `${t.score}/${t.failures}` : "missing";
}

/**
 * Grades each notebook that has a disagreement `times` more with plain otter and marks the
 * disagreements on which plain otter's own results vary.
 */
async function recheckWithOtter(
  reports: AssignmentReport[],
  jobs: Array<{ a: CorpusAssignment; nb: CorpusNotebook }>,
  reference: Graded[],
  times: number,
  concurrency: number,
  progress?: (line: string) => void,
): Promise<void> {
  const key = (slug: string, notebook: string) => `${slug}/${notebook}`;
  const wanted = new Set(reports.flatMap((r) => r.disagreements.map((d) => key(r.slug, d.notebook))));
  const rechecked = jobs.map((j, i) => ({ ...j, i })).filter(({ a, nb }) => wanted.has(key(a.slug, nb.name)));
  const again = await mapLimit(rechecked.flatMap((j) => Array.from({ length: times }, () => j)), concurrency, ({ a, nb }) => gradeWithOtter(nb, a.autograder));
  const runs = new Map<string, Graded[]>();
  rechecked.forEach(({ a, nb, i }, n) => runs.set(key(a.slug, nb.name), [reference[i]!, ...again.slice(n * times, (n + 1) * times)]));
  for (const r of reports) {
    for (const d of r.disagreements) {
      const said = new Set((runs.get(key(r.slug, d.notebook)) ?? []).map((g) => otterSays(g, d.test)));
      d.otterVaries = said.size > 1;
    }
    r.otterVaries = new Set(r.disagreements.filter((d) => d.otterVaries && d.test !== "(total)" && d.otter !== null).map((d) => `${d.notebook}/${d.test}`)).size;
  }
  progress?.(`plain otter again: ${rechecked.length} notebooks with a disagreement graded ${times} more times each`);
}
