import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { strFromU8, strToU8, unzipSync, zipSync } from "fflate";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, type Runner, adminCli, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook, waitFor, waitForFinal } from "../scripts/local-stack.js";
import { otterRunDirectly } from "./support/direct-otter.js";
import { LmsStandin } from "./support/lms.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const AUTOGRADER = join(SAMPLE, "dist", "autograder.zip");
const notebookPath = (name: string) => join(SAMPLE, "submissions", `${name}.ipynb`);
const STUDENTS = { alice: "full", bob: "partial", carol: "zero" } as const;

/**
 * The sample autograder after staff "fix" it: q1 is worth 3 points instead of 1. A full notebook
 * stays at 1.0 and an empty one at 0; the partial one (which passes q1) goes up.
 */
async function fixedAutograder(dir: string): Promise<string> {
  const files = unzipSync(new Uint8Array(await readFile(AUTOGRADER)));
  const q1 = strFromU8(files["tests/q1.py"]!);
  expect(q1).toMatch(/'points': 1\b/);
  files["tests/q1.py"] = strToU8(q1.replace(/'points': 1\b/, "'points': 3"));
  const path = join(dir, "autograder-fixed.zip");
  await writeFile(path, zipSync(files));
  return path;
}

describe("regrade end to end: wrangler dev + runner + Docker + otter-grader + LMS stand-in", () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  let runner: Runner;
  let lms: LmsStandin;
  const ids: Record<string, string> = {};

  const settledPassbacks = () =>
    waitFor(
      async () => (await gateway.query<{ n: number }>(`SELECT COUNT(*) AS n FROM passbacks WHERE state IN ('pending', 'retrying')`))[0]!.n === 0,
      60_000,
      () => "passbacks did not settle",
    );
  const scores = async () =>
    Object.fromEntries((await gateway.query<{ user: string; score: number; points: number; max_points: number }>("SELECT user, score, points, max_points FROM submissions")).map((r) => [r.user, r]));
  const cli = <T = Record<string, any>>(args: string[]) => adminCli<T>(gateway.url, credentials.admin, args);

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "otter-edge-regrade-"));
    credentials = newCredentials(Object.keys(STUDENTS));
    lms = await LmsStandin.start();
    gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { LTI_CONSUMERS: `${lms.key}:${lms.secret}`, EDX_URL: lms.url } });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 2 });
    for (const [user, notebook] of Object.entries(STUDENTS)) {
      const { id, status_url } = await submitNotebook(gateway.url, credentials.students[user]!, notebookPath(notebook));
      ids[user] = id;
      expect((await waitForFinal(status_url, credentials.students[user]!)).status).toBe("graded");
    }
    await settledPassbacks();
  });

  afterAll(async () => {
    await runner?.stop();
    await gateway?.stop();
    await lms?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("after the autograder changes: a dry run reports the one changed score and changes nothing; the regrade applies it and re-posts only that grade", async () => {
    const original = await scores();
    expect(Object.fromEntries(Object.entries(original).map(([u, r]) => [u, r.score]))).toEqual({ alice: 1, bob: 0.6, carol: 0 });
    const posted = await lms.grades();
    expect(posted).toHaveLength(3);

    const fixed = await fixedAutograder(work);
    await cli(["autograder", "upload", "demo101", "sample", fixed, "--timeout-seconds", "300"]);
    // The reference: plain `otter run` of bob's notebook with the fixed autograder, in the grading image.
    const reference = await otterRunDirectly(notebookPath("partial"), fixed);
    const bobsNewScore = Math.round((reference.points / reference.maxPoints) * 1000) / 1000;
    expect(bobsNewScore).toBeGreaterThan(0.6);

    const dry = await cli(["regrade", "start", "demo101", "sample", "--dry-run", "--wait"]);
    expect(dry).toMatchObject({ state: "finished", dry_run: true, total: 3, done: 3, outcomes: { would_change: 1, would_stay: 2 } });
    expect(dry.changes).toEqual([{ submission_id: ids.bob, user: "bob", old_score: 0.6, new_score: bobsNewScore, verdict: "graded", outcome: "would_change" }]);
    expect(await scores()).toEqual(original);
    expect(await lms.grades()).toHaveLength(3);

    const real = await cli(["regrade", "start", "demo101", "sample", "--only-outdated", "--wait"]);
    expect(real).toMatchObject({ state: "finished", dry_run: false, total: 3, outcomes: { changed: 1, unchanged: 2 } });
    const after = await scores();
    expect(after.bob).toEqual({ user: "bob", score: bobsNewScore, points: reference.points, max_points: reference.maxPoints });
    expect(after.alice).toMatchObject({ score: 1, max_points: reference.maxPoints });
    expect(after.carol).toMatchObject({ score: 0 });

    await settledPassbacks();
    const received = await lms.grades();
    const fresh = received.slice(posted.length);
    expect(fresh).toHaveLength(1);
    expect(fresh[0]!.sourcedId).toMatch(/:bob$/);
    expect(Number(fresh[0]!.textString)).toBe(bobsNewScore);

    // Everything is graded by the current autograder now: nothing is outdated.
    const again = await cli(["regrade", "start", "demo101", "sample", "--only-outdated"]);
    expect(again).toMatchObject({ state: "finished", total: 0 });
  });
});
