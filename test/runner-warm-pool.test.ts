import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  DockerSandbox,
  JOB_LABEL,
  OTTER_VERSION_LABEL,
  RUN_LABEL,
  RUNNER_LABEL,
  SANDBOX_LABEL,
  WARM_JOB,
  WARM_START_CONTRACT,
  WARM_START_LABEL,
} from "../runner/src/grading/docker-sandbox.js";
import { gradeFromRun } from "../runner/src/grading/results.js";
import type { SandboxInput } from "../runner/src/grading/sandbox.js";
import { type Gateway, ROOT, newCredentials, startGateway, startRunner, waitFor } from "../scripts/local-stack.js";

/**
 * The warm pool of the Docker sandbox (DockerSandbox warmPool): containers created and started
 * before their job, waiting with otter imported, each handed exactly one job. Real parts: the
 * shared Docker engine, the grading image, otter-grader grading the sample notebooks.
 *
 * OTTER_EDGE_IMAGE_CONTRACT selects a test build of the grading image (its org.otter-edge.sandbox
 * value), as the runner's --image-contract does; by default the image every runner uses.
 */
const CONTRACT = process.env.OTTER_EDGE_IMAGE_CONTRACT ?? "uid-split-1";
const SAMPLE = join(ROOT, "assignments", "sample");
const AUTOGRADER = readFileSync(join(SAMPLE, "dist", "autograder.zip"));
const FULL = readFileSync(join(SAMPLE, "submissions", "full.ipynb"));
const LOOP = readFileSync(join(ROOT, "assignments", "hostile", "infinite-loop.ipynb"));
const TAMPER_CHECKER = readFileSync(join(ROOT, "assignments", "hostile", "tamper-checker.ipynb"));
const NAME = `warm-pool-test-${process.pid}`;
const docker = new Docker();
const limits = { memoryBytes: 1024 ** 3, nanoCpus: 1e9, pidsLimit: 256, tmpfsBytes: 256 * 1024 ** 2 };
const sandboxes: DockerSandbox[] = [];

function sandbox(warmPool: { size: number; maxAgeMs: number }, name = NAME): DockerSandbox {
  const s = new DockerSandbox(docker, limits, { runnerName: name, killGraceMs: 15_000, sandboxContract: CONTRACT, warmPool });
  sandboxes.push(s);
  return s;
}

const job = (notebook: Buffer, timeoutMs = 120_000, isolation: SandboxInput["isolation"] = "kernel"): SandboxInput => ({
  jobId: `warm-${Math.random().toString(36).slice(2)}`,
  notebook,
  autograder: AUTOGRADER,
  otterVersion: "7.0.0",
  timeoutMs,
  isolation,
  signal: new AbortController().signal,
});

async function exists(id: string): Promise<boolean> {
  return docker
    .getContainer(id)
    .inspect()
    .then(
      () => true,
      (err) => (err.statusCode === 404 ? false : Promise.reject(err)),
    );
}

/** This test's containers (all runner names it used), running or not. */
async function ours(name = NAME): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`${RUNNER_LABEL}=${name}`] } });
}

/** Waiting warm containers of a runner name: started, labelled as not yet holding a job. */
async function waiting(name = NAME): Promise<Docker.ContainerInfo[]> {
  return (await ours(name)).filter((c) => c.State === "running" && c.Labels[JOB_LABEL] === WARM_JOB);
}

beforeAll(async () => {
  const images = await docker.listImages({ filters: { label: [OTTER_VERSION_LABEL + "=7.0.0", `${SANDBOX_LABEL}=${CONTRACT}`] } });
  const warmCapable = images.filter((i) => i.Labels[WARM_START_LABEL] === WARM_START_CONTRACT);
  if (warmCapable.length === 0) throw new Error(`no grading image with ${SANDBOX_LABEL}=${CONTRACT} and ${WARM_START_LABEL}=${WARM_START_CONTRACT}: rebuild it with grading-image/build.sh`);
});

afterEach(async () => {
  for (const s of sandboxes.splice(0)) await s.close();
});

afterAll(async () => {
  // Whatever a failed test left: this test's runner names only.
  for (const name of [NAME, `${NAME}-crashed`, `${NAME}-cli`]) for (const c of await ours(name)) await docker.getContainer(c.Id).remove({ v: true, force: true }).catch(() => undefined);
});

describe("warm pool", () => {
  // The job's isolation reaches grade.py through job.json, in a warm container (started before the
  // job was known) as in a cold one: tamper-checker rewrites otter's checker in its kernel, which
  // counts under "kernel" (5/5, as plain otter run) and not under "grader" (0/5).
  it.each([
    ["warm", "kernel", 5],
    ["warm", "grader", 0],
    ["cold", "kernel", 5],
    ["cold", "grader", 0],
  ] as const)("a %s container grades with the job's isolation (%s: %i of 5)", async (start, isolation, points) => {
    const s = sandbox({ size: start === "warm" ? 1 : 0, maxAgeMs: 600_000 });
    if (start === "warm") {
      s.fillPool();
      await waitFor(async () => (await waiting()).length === 1, 60_000, () => "no warm container started");
    }
    const run = await s.run(job(TAMPER_CHECKER, 120_000, isolation));
    expect(run.timings.warm ?? 0).toBe(start === "warm" ? 1 : 0);
    expect(gradeFromRun(run, 120_000)).toMatchObject({ verdict: "graded", points, maxPoints: 5 });
    await run.cleanup;
  });

  it("hands each started container exactly one job, removes it after, and refills", async () => {
    const s = sandbox({ size: 1, maxAgeMs: 600_000 });
    s.fillPool();
    await waitFor(async () => (await waiting()).length === 1, 60_000, () => "no warm container started");
    const [first] = await waiting();

    const one = await s.run(job(FULL));
    // The job ran in the container that was already waiting, and was graded in full.
    expect(one.container).toBe(first!.Id);
    expect(one.timings.warm).toBe(1);
    expect(gradeFromRun(one, 120_000)).toMatchObject({ verdict: "graded", score: 1, points: 5 });
    await one.cleanup;
    expect(await exists(first!.Id), "a container that graded a job is removed").toBe(false);

    // The pool refilled with a new container, which the next job gets: never the first one again.
    await waitFor(async () => (await waiting()).length === 1, 60_000, () => "the pool did not refill");
    const [second] = await waiting();
    expect(second!.Id).not.toBe(first!.Id);
    const two = await s.run(job(FULL));
    expect(two.container).toBe(second!.Id);
    expect(two.timings.warm).toBe(1);
    expect(gradeFromRun(two, 120_000).score).toBe(1);
    await two.cleanup;
    expect(await exists(second!.Id)).toBe(false);
    expect(s.poolStats.handedOver).toBe(2);

    // Closing removes the waiting container and leaves nothing of this runner behind.
    await s.close();
    expect(await ours()).toEqual([]);
  });

  it("a close while a warm container is starting waits for that start and removes its container", async () => {
    const s = sandbox({ size: 1, maxAgeMs: 600_000 });
    const events = (await docker.getEvents({ filters: { type: ["container"], event: ["create"], label: [`${RUNNER_LABEL}=${NAME}`] } })) as NodeJS.ReadableStream & { destroy(): void };
    const created = new Promise((resolve) => events.once("data", resolve));
    s.fillPool();
    // The engine has created the container; the pool is still starting it, so it is not in the pool yet.
    await created;
    events.destroy();
    await s.close();
    expect(await ours()).toEqual([]);
  });

  it("starts the time limit at the hand-over, not when the container started", async () => {
    const timeoutMs = 6_000;
    const s = sandbox({ size: 1, maxAgeMs: 600_000 });
    s.fillPool();
    await waitFor(async () => (await waiting()).length === 1, 60_000, () => "no warm container started");
    const [warm] = await waiting();
    // The container must have been up for longer than the limit before its job comes: a clock
    // started at the container's start would then kill the job at once. (Created is in whole seconds
    // and precedes the start call's return, from which the sandbox counts: hence the margin.)
    await waitFor(async () => Date.now() - warm!.Created * 1000 > timeoutMs + 4_000, 30_000, () => "unreachable");

    const run = await s.run(job(LOOP, timeoutMs));
    expect(run.container).toBe(warm!.Id);
    expect(run.timings.waitedMs).toBeGreaterThan(timeoutMs);
    expect(run.timedOut).toBe(true);
    expect(gradeFromRun(run, timeoutMs).verdict).toBe("timeout");
    // Killed at the limit counted from the hand-over (runMs), within the kill's own latency.
    expect(run.timings.runMs).toBeGreaterThanOrEqual(timeoutMs);
    expect(run.timings.runMs).toBeLessThan(timeoutMs + 10_000);
  });

  it("never hands a job to a warm container that died while waiting: the job starts cold", async () => {
    const s = sandbox({ size: 1, maxAgeMs: 600_000 });
    s.fillPool();
    await waitFor(async () => (await waiting()).length === 1, 60_000, () => "no warm container started");
    const [warm] = await waiting();
    await docker.getContainer(warm!.Id).kill();
    await waitFor(async () => s.poolStats.diedWaiting === 1, 30_000, () => "the pool did not notice its container died");

    const run = await s.run(job(FULL));
    expect(run.container).not.toBe(warm!.Id);
    expect(run.timings.warm).toBeUndefined();
    expect(gradeFromRun(run, 120_000).score).toBe(1);
    await run.cleanup;
  });

  it("replaces a warm container that waited longer than its maximum age", async () => {
    const s = sandbox({ size: 1, maxAgeMs: 3_000 });
    s.fillPool();
    await waitFor(async () => (await waiting()).length === 1, 60_000, () => "no warm container started");
    const [old] = await waiting();
    await waitFor(async () => s.poolStats.retired >= 1 && !(await exists(old!.Id)), 60_000, () => "the old warm container was not retired");
    await waitFor(async () => (await waiting()).some((c) => c.Id !== old!.Id), 60_000, () => "no replacement started");
  });

  it("leaves warm containers of a runner that died to the next runner of its name, which removes them", async () => {
    const crashed = `${NAME}-crashed`;
    const dead = new DockerSandbox(docker, limits, { runnerName: crashed, sandboxContract: CONTRACT, warmPool: { size: 2, maxAgeMs: 600_000 } });
    dead.fillPool();
    await waitFor(async () => (await waiting(crashed)).length === 2, 60_000, () => "no warm containers started");
    const left = await waiting(crashed);
    for (const c of left) expect(c.Labels[RUN_LABEL]).toMatch(/^[0-9a-f-]{36}$/);
    // `dead` is abandoned without close(), as a killed runner would leave it: its containers keep waiting.
    // A sandbox of another name spares them; the next one of the same name (the restarted runner) removes them.
    expect((await sandbox({ size: 0, maxAgeMs: 1_000 }).reapOrphans()).removed).toEqual([]);
    const restarted = new DockerSandbox(docker, limits, { runnerName: crashed, sandboxContract: CONTRACT });
    const { removed } = await restarted.reapOrphans();
    expect(removed.sort()).toEqual(left.map((c) => c.Id).sort());
    expect(await ours(crashed)).toEqual([]);
  });
});

describe("warm pool of a runner process", () => {
  let work: string;
  let gateway: Gateway | undefined;
  afterAll(async () => {
    await gateway?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("is removed when the runner stops; left by a killed runner, it is removed by the next runner of that name", async () => {
    work = mkdtempSync(join(tmpdir(), "otter-edge-warm-pool-"));
    const credentials = newCredentials(["alice"]);
    gateway = await startGateway({ stateDir: join(work, "state"), credentials });
    const name = `${NAME}-cli`;
    const env = { OTTER_EDGE_RUNNER_NAME: name, OTTER_EDGE_WARM_POOL: "2", OTTER_EDGE_IMAGE_CONTRACT: CONTRACT };
    const start = () => startRunner({ gatewayUrl: gateway!.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 1, env });

    const first = start();
    await waitFor(async () => (await waiting(name)).length === 2, 90_000, () => `no warm containers:\n${first.output().slice(-2000)}`, () => first.process.exitCode !== null);
    const left = (await waiting(name)).map((c) => c.Id).sort();
    await first.stop("SIGKILL");
    // A killed runner cannot clean up: its containers keep waiting.
    expect((await waiting(name)).map((c) => c.Id).sort()).toEqual(left);

    const second = start();
    await waitFor(
      async () => {
        const now = (await waiting(name)).map((c) => c.Id);
        return now.length === 2 && now.every((id) => !left.includes(id));
      },
      90_000,
      () => `the restarted runner did not replace the orphans:\n${second.output().slice(-2000)}`,
      () => second.process.exitCode !== null,
    );
    for (const id of left) expect(await exists(id), `orphan ${id.slice(0, 12)}`).toBe(false);
    // The log line can arrive after the engine already shows the orphans gone.
    await waitFor(async () => /removed an orphan grading container/.test(second.output()), 10_000, () => `no removal logged:\n${second.output().slice(-2000)}`);

    expect(await second.stop("SIGTERM")).toBe(0);
    expect(await ours(name), "a stopped runner leaves no warm container").toEqual([]);
  });
});

/**
 * Fault injection on the real engine: the answer to the engine's `wait` call never comes (what a
 * runner saw for containers alive across a dockerd restart). The job must still end when its
 * container exits, not after the time limit.
 */
describe("a lost answer to the engine's wait call", () => {
  it("ends the job when its container exits, graded, long before the time limit", async () => {
    const proto = (Docker as unknown as { Container: { prototype: { wait: (...args: unknown[]) => unknown } } }).Container.prototype;
    const original = proto.wait;
    proto.wait = () => new Promise(() => undefined);
    try {
      const t0 = Date.now();
      const run = await sandbox({ size: 0, maxAgeMs: 60_000 }).run(job(FULL, 300_000));
      expect(run.timedOut).toBe(false);
      expect(gradeFromRun(run, 300_000)).toMatchObject({ verdict: "graded", score: 1 });
      expect(Date.now() - t0).toBeLessThan(120_000);
      await run.cleanup;
    } finally {
      proto.wait = original;
    }
  });
});
