import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Credentials, type Gateway, ROOT, configureAssignment, newCredentials, startGateway, submitNotebook, waitForFinal } from "../scripts/local-stack.js";

const run = promisify(execFile);
const SAMPLE = join(ROOT, "assignments", "sample");

/** The runner agent image (root Dockerfile) built and run as an operator would, grading for real. */
describe("runner agent image", () => {
  let work: string;
  let credentials: Credentials;
  let gateway: Gateway;
  const name = `otter-edge-runner-test-${process.pid}`;

  beforeAll(async () => {
    await run("bash", [join(ROOT, "runner", "image", "build.sh")], { cwd: ROOT });
    work = await mkdtemp(join(tmpdir(), "otter-edge-runner-image-"));
    credentials = newCredentials(["alice"]);
    gateway = await startGateway({ stateDir: join(work, "state"), credentials });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(SAMPLE, "dist", "autograder.zip") });
  }, 300_000);

  afterAll(async () => {
    await run("docker", ["rm", "-f", name]).catch(() => undefined);
    await gateway?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("prints its options with --help", async () => {
    const { stdout } = await run("docker", ["run", "--rm", "otter-edge/runner:latest", "--help"]);
    expect(stdout).toContain("--gateway");
  });

  it("connects with a token from the environment, drives the node's Docker engine through the mounted socket, and grades, with a read-only root and no capabilities", async () => {
    const socketGroup = String((await stat("/var/run/docker.sock")).gid);
    // Host networking: the test gateway listens on loopback only. The rest as in deploy/k8s's pod:
    // read-only root with /tmp and the autograder cache on scratch mounts, no capabilities, no
    // privilege escalation, the engine's socket in a directory of its own named by DOCKER_HOST.
    const container = spawn(
      "docker",
      ["run", "--rm", "--name", name, "--network", "host", "-v", "/var/run/docker.sock:/run/otter-edge-docker/docker.sock", "--group-add", socketGroup,
        "--read-only", "--tmpfs", "/tmp:size=64m", "--tmpfs", "/var/cache/otter-edge:size=64m,uid=10100,gid=10100", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-e", "DOCKER_HOST=unix:///run/otter-edge-docker/docker.sock",
        "-e", `OTTER_EDGE_GATEWAY_URL=${gateway.url}`, "-e", `OTTER_EDGE_RUNNER_TOKEN=${credentials.runner}`, "-e", "OTTER_EDGE_CAPACITY=1", "otter-edge/runner:latest"],
      { stdio: "ignore" },
    );
    try {
      const alice = credentials.students.alice!;
      const { status_url } = await submitNotebook(gateway.url, alice, join(SAMPLE, "submissions", "partial.ipynb"));
      expect(await waitForFinal(status_url, alice, 120_000)).toMatchObject({ status: "graded", score: 0.6 });
    } finally {
      await run("docker", ["stop", "-t", "30", name]).catch(() => undefined);
      await new Promise((resolve) => (container.exitCode !== null ? resolve(null) : container.once("exit", resolve)));
    }
  });
});
