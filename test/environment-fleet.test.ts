import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { environmentHash, environmentOfZip } from "@otter-edge/shared";
import { ENVIRONMENT_LABEL } from "../runner/src/grading/environment-images.js";
import { type Credentials, type Gateway, ROOT, type Runner, adminCli, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook, waitForFinal } from "../scripts/local-stack.js";
import { sampleZipNeedingTabulate } from "./support/environment-zip.js";
import { type Registry, startRegistry } from "./support/registry.js";

/**
 * A course's environment as a fleet meets it, end to end: staff upload a zip that needs a package
 * the grading image lacks, build its image ahead of students with `otter-edge autograder build`,
 * which pushes it to the fleet's registry (a real one on loopback); a runner on a node that has
 * never seen the image pulls it instead of building it, and the student's page says what it waits
 * for meanwhile. Real parts throughout: wrangler dev, the runner process, Docker, pip, otter.
 */
const SAMPLE = join(ROOT, "assignments", "sample");
const HOST_CA = ["/etc/ssl/certs/ca-certificates.crt"].find((p) => existsSync(p));
// A spec no other test builds, so that this engine holds no image of it before the test.
const ZIP = sampleZipNeedingTabulate("tabulate==0.9.0\ntoolz\n", "0.9.0");
const docker = new Docker();

async function forgetEnvironment(): Promise<void> {
  const hash = await environmentHash("7.0.0", environmentOfZip(ZIP).requirements);
  for (const image of await docker.listImages({ filters: { label: [`${ENVIRONMENT_LABEL}=${hash}`] } })) await docker.getImage(image.Id).remove({ force: true });
}

describe("an assignment environment across a fleet: built once by staff, pulled by runners", () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  let registry: Registry;
  let runner: Runner | undefined;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "otter-edge-env-fleet-"));
    await writeFile(join(work, "autograder.zip"), ZIP);
    credentials = newCredentials(["alice"]);
    registry = await startRegistry();
    gateway = await startGateway({ stateDir: join(work, "state"), credentials });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(work, "autograder.zip"), timeoutSeconds: 300 });
    await forgetEnvironment();
  });

  afterAll(async () => {
    await runner?.stop();
    await gateway?.stop();
    registry?.stop();
    await forgetEnvironment();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("otter-edge autograder build pushes the image; a runner without it pulls it, the page says 'preparing the environment', and the solution grades 1.0", async () => {
    const built = await adminCli<Record<string, unknown>>(gateway.url, credentials.admin, [
      "autograder", "build", "demo101", "sample", "--registry", registry.repository, ...(HOST_CA ? ["--ca-bundle", HOST_CA] : []), "--log-dir", join(work, "build-logs"),
    ]);
    expect(built).toMatchObject({ course: "demo101", assignment: "sample", otter_version: "7.0.0", outcome: "built", pushed: true });
    expect(built.requirements).toContain("tabulate==0.9.0");

    // The runner's node has never seen the image: only the registry has it.
    await forgetEnvironment();
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 1, env: { OTTER_EDGE_ENVIRONMENT_REGISTRY: registry.repository } });
    const alice = credentials.students.alice!;
    const submitted = await submitNotebook(gateway.url, alice, join(SAMPLE, "submissions", "full.ipynb"));
    const final = await waitForFinal(submitted.status_url, alice);
    expect(final, JSON.stringify(final)).toMatchObject({ status: "graded", score: 1 });
    expect(final.tests.map((t: { name: string }) => t.name)).toContain("qenv");
    expect(final.events.map((e: { state: string }) => e.state)).toEqual(["queued", "leased", "preparing_environment", "graded"]);
    expect(runner.output()).toContain("environment image pulled from the registry");
    expect(runner.output()).not.toContain("building an environment image");
  });
});
