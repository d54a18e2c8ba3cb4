import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, type Runner, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook, waitForFinal } from "../scripts/local-stack.js";

const SAMPLE = join(ROOT, "assignments", "sample");

/** The development fallback: a local otter, no container. Only with --unsandboxed, and it says so. */
describe("runner --unsandboxed (local otter, development only)", () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  let runner: Runner;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "otter-edge-unsandboxed-"));
    credentials = newCredentials(["alice"]);
    gateway = await startGateway({ stateDir: join(work, "state"), credentials });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(SAMPLE, "dist", "autograder.zip") });
    runner = startRunner({
      gatewayUrl: gateway.url,
      token: credentials.runner,
      cacheDir: join(work, "cache"),
      capacity: 1,
      // No Docker engine at this address: only the explicit flag lets the runner grade at all.
      env: { DOCKER_HOST: "unix:///nonexistent/docker.sock" },
      args: ["--unsandboxed", "--otter-bin", join(ROOT, ".otter-edge", "venv", "bin", "otter")],
    });
  });

  afterAll(async () => {
    await runner?.stop();
    await gateway?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("grades with the local otter and warns loudly that nothing is sandboxed", async () => {
    const alice = credentials.students.alice!;
    const { status_url } = await submitNotebook(gateway.url, alice, join(SAMPLE, "submissions", "partial.ipynb"));
    const result = await waitForFinal(status_url, alice);
    expect(result).toMatchObject({ status: "graded", verdict: "graded", score: 0.6, points: 3, max_points: 5 });
    expect(runner.output()).toMatch(/UNSANDBOXED MODE/);
  });
});
