import { existsSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { environmentHash, environmentOfZip } from "@otter-edge/shared";
import { DockerSandbox, OTTER_VERSION_LABEL } from "../runner/src/grading/docker-sandbox.js";
import { ENVIRONMENT_LABEL } from "../runner/src/grading/environment-images.js";
import { EnvironmentBuildError } from "../runner/src/grading/errors.js";
import { gradeFromRun } from "../runner/src/grading/results.js";
import type { SandboxInput } from "../runner/src/grading/sandbox.js";
import { ROOT } from "../scripts/local-stack.js";
import { sampleZipNeedingTabulate as zipWith } from "./support/environment-zip.js";
import { startRegistry } from "./support/registry.js";

/**
 * Assignment environments (runner/src/grading/environment-images.ts): the autograder.zip's
 * requirements installed on top of the grading image, as `otter grade` installs them. Real parts:
 * the Docker engine, pip reaching the package index during the build only, otter-grader grading
 * the sample notebook in the built image with no network.
 *
 * The assignment is the sample's autograder.zip with one more test, qenv, that imports tabulate
 * (absent from the grading image) and checks its version: 6 points of 6 only when the
 * environment was installed, and installed in the version this assignment pinned.
 */
const FULL = readFileSync(join(ROOT, "assignments", "sample", "submissions", "full.ipynb"));
const docker = new Docker();
const NAME = `environments-test-${process.pid}`;
const limits = { memoryBytes: 1024 ** 3, nanoCpus: 1e9, pidsLimit: 256, tmpfsBytes: 256 * 1024 ** 2 };
// pip in the build trusts what this machine trusts (its way to the package index may inspect TLS).
const HOST_CA = ["/etc/ssl/certs/ca-certificates.crt"].find((p) => existsSync(p));

const job = (autograder: Buffer): SandboxInput => ({
  jobId: `env-${Math.random().toString(36).slice(2)}`,
  notebook: FULL,
  autograder,
  otterVersion: "7.0.0",
  timeoutMs: 180_000,
  isolation: "kernel",
  signal: new AbortController().signal,
});

let sandbox: DockerSandbox;
let gradingImageRef: string;
const LOGS = mkdtempSync(join(tmpdir(), "otter-edge-env-logs-"));

/** Removes the environment images of these zips, so that the test starts from a node that never built them. */
async function forget(...zips: Buffer[]): Promise<void> {
  for (const zip of zips) {
    const hash = await environmentHash("7.0.0", environmentOfZip(zip).requirements);
    for (const image of await docker.listImages({ filters: { label: [`${ENVIRONMENT_LABEL}=${hash}`] } })) await docker.getImage(image.Id).remove({ force: true });
  }
}

const V09 = zipWith("tabulate==0.9.0\n", "0.9.0");
const V08 = zipWith("# pinned for this course\ntabulate==0.8.10\n", "0.8.10");
const NOTHING = zipWith(null, "0.9.0");
const CONFLICT = zipWith("tabulate==0.9.0\ntabulate==0.8.10\n", "0.9.0");
// Built by one node, pulled by another through the registry: a spec no other test builds.
const SHARED = zipWith("tabulate==0.9.0\nsix\n", "0.9.0");

beforeAll(async () => {
  const images = await docker.listImages({ filters: { label: [`${OTTER_VERSION_LABEL}=7.0.0`] } });
  if (images.length === 0) throw new Error("no grading image for otter 7.0.0: run grading-image/build.sh");
  await forget(V09, V08, CONFLICT, SHARED);
  gradingImageRef = (await new DockerSandbox(docker, limits, { runnerName: NAME }).images()).get("7.0.0")!;
  sandbox = new DockerSandbox(docker, limits, { runnerName: NAME, killGraceMs: 15_000, environments: { caBundle: HOST_CA, logDir: LOGS } });
});

afterAll(async () => {
  await sandbox?.close();
  await forget(V09, V08, CONFLICT, SHARED);
});

describe("assignment environments", () => {
  it("without the package the assignment needs, its test fails (the grading image lacks tabulate)", async () => {
    const run = await sandbox.run(job(NOTHING));
    await run.cleanup;
    expect(gradeFromRun(run, 180_000)).toMatchObject({ verdict: "graded", points: 5, maxPoints: 6 });
  });

  it("ten simultaneous first jobs of one assignment cause one build, and each grades 1.0 in it", async () => {
    const before = sandbox.environments.stats.builds;
    const runs = await Promise.all(Array.from({ length: 10 }, () => sandbox.run(job(V09))));
    await Promise.all(runs.map((r) => r.cleanup));
    expect(sandbox.environments.stats.builds - before).toBe(1);
    for (const run of runs) expect(gradeFromRun(run, 180_000)).toMatchObject({ verdict: "graded", score: 1, points: 6, maxPoints: 6 });
    // An environment image is never taken for its otter version's grading image, by this runner or
    // by one that predates environments (which lists images by the version and sandbox labels).
    expect((await sandbox.images()).get("7.0.0")).not.toMatch(/otter-edge\/env/);
    const asOldRunnersList = await docker.listImages({ filters: { label: [OTTER_VERSION_LABEL, "org.otter-edge.sandbox=uid-split-1"] } });
    expect(asOldRunnersList.filter((i) => i.Labels?.[ENVIRONMENT_LABEL])).toEqual([]);
    // The image is content-addressed: a node that has it does not build it again.
    const again = await sandbox.run(job(V09));
    await again.cleanup;
    expect(sandbox.environments.stats.builds - before).toBe(1);
    expect(gradeFromRun(again, 180_000).score).toBe(1);
  });

  it("two assignments pinning different versions of one package grade side by side, each in its own", async () => {
    const [old, current] = await Promise.all([sandbox.run(job(V08)), sandbox.run(job(V09))]);
    await Promise.all([old.cleanup, current.cleanup]);
    expect(gradeFromRun(old, 180_000)).toMatchObject({ verdict: "graded", score: 1, points: 6 });
    expect(gradeFromRun(current, 180_000)).toMatchObject({ verdict: "graded", score: 1, points: 6 });
  });

  it("requirements the grading image already satisfies use it as it is (no build, warm pool allowed)", async () => {
    const before = { ...sandbox.environments.stats };
    const run = await sandbox.run(job(zipWith("numpy\npandas>=1\n", "0.9.0")));
    await run.cleanup;
    expect(sandbox.environments.stats.builds).toBe(before.builds);
    expect(sandbox.environments.stats.baseSatisfied).toBe(before.baseSatisfied + 1);
    expect(gradeFromRun(run, 180_000).points).toBe(5); // tabulate is still absent: qenv fails
  });

  it("a build pip refuses is an infrastructure error naming pip's reason (never a grade), and its log is kept", async () => {
    const err = await sandbox.run(job(CONFLICT)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EnvironmentBuildError);
    expect((err as EnvironmentBuildError).network, "pip refused the requirements: the assignment's fault, not the node's").toBe(false);
    expect(String((err as Error).message)).toMatch(/tabulate==0\.8\.10.*tabulate==0\.9\.0|conflict/is);
    const hash = await environmentHash("7.0.0", environmentOfZip(CONFLICT).requirements);
    expect(readdirSync(LOGS)).toContain(`${hash}.log`);
    expect(await sandbox.environments.buildLog(hash)).toMatch(/pip install/);
    // The failed build's intermediate images are gone, and none was taken for the grading image.
    expect(await docker.listImages({ all: true, filters: { label: [`org.otter-edge.environment-build=${hash}`] } })).toEqual([]);
    expect((await sandbox.images()).get("7.0.0")).toBe(gradingImageRef);
  });

  it("a fleet builds once: a node pulls from the registry what another node built and pushed", async () => {
    const registry = await startRegistry();
    try {
      const repo = registry.repository;
      const nodeA = new DockerSandbox(docker, limits, { runnerName: `${NAME}-a`, environments: { caBundle: HOST_CA, registry: repo, logDir: LOGS } });
      const builtOnA = await nodeA.run(job(SHARED));
      await builtOnA.cleanup;
      expect(nodeA.environments.stats).toMatchObject({ builds: 1, pushed: 1, pulled: 0 });
      // The job that waited says how its environment came (for the staff page): built, with pip's log.
      expect(builtOnA.environment).toMatchObject({ how: "built", log: expect.stringMatching(/Successfully installed.*tabulate/) });
      expect(gradeFromRun(builtOnA, 180_000).score).toBe(1);
      await nodeA.close();

      // Node B has never seen it (its engine's copy removed, as on another machine): it pulls, never builds.
      await forget(SHARED);
      const said: string[] = [];
      const log = { info: (o: object, m: string) => said.push(`${m} ${JSON.stringify(o)}`), warn: (o: object, m: string) => said.push(`${m} ${JSON.stringify(o)}`) };
      const nodeB = new DockerSandbox(docker, limits, { runnerName: `${NAME}-b`, environments: { caBundle: HOST_CA, registry: repo, log } });
      const pulledOnB = await nodeB.run(job(SHARED));
      await pulledOnB.cleanup;
      expect(nodeB.environments.stats, said.join("\n")).toMatchObject({ builds: 0, pulled: 1 });
      expect(pulledOnB.environment).toMatchObject({ how: "pulled" });
      expect(gradeFromRun(pulledOnB, 180_000).score).toBe(1);
      await nodeB.close();
    } finally {
      registry.stop();
    }
  });
});
