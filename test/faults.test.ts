/**
 * Invariants 1-3 under faults, with real processes: wrangler dev (workerd) as the gateway, runner
 * agents as child processes, the real Docker engine and otter-grader. Each fault is injected at a
 * moment found by watching the system (a grading container exists), never by sleeping:
 *
 *   1. a runner killed with SIGKILL mid-grade (and, beside it, a runner frozen with SIGSTOP, so the
 *      lease runs out instead of the socket closing): the job is graded once, by another runner, and
 *      the killed runner's orphan container is reaped when a runner of that name starts again;
 *   2. the gateway (wrangler dev + workerd) stopped and started on the same port and state with jobs
 *      leased and queued, and one grade finished while it was away: nothing lost, nothing doubled;
 *   3. the Docker engine stopped (SIGTERM to dockerd, as `systemctl stop docker` does) mid-job: an
 *      infrastructure error, retried, never a 0; dockerd is started again in any case;
 *   4. a container that cannot be killed: its containerd shim frozen (SIGSTOP), so `docker kill` and
 *      `docker inspect` hang as with a wedged runtime; the runner gives up on it after its kill grace,
 *      reports an infrastructure error, leaves it for an operator and keeps grading.
 *
 * Measured times (fault → graded again) are written to .otter-edge/faults-report.json.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type Credentials,
  type Gateway,
  ROOT,
  type Runner,
  adminCli,
  configureAssignment,
  freePort,
  newCredentials,
  startGateway,
  startRunner,
  submitNotebook,
  waitFor,
  waitForFinal,
} from "../scripts/local-stack.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const AUTOGRADER = join(SAMPLE, "dist", "autograder.zip");
const SUBMISSIONS = join(SAMPLE, "submissions");
const INFINITE_LOOP = join(ROOT, "assignments", "hostile", "infinite-loop.ipynb");
const JOB_LABEL = "org.otter-edge.job";
const RUNNER_LABEL = "org.otter-edge.runner";
const REPORT = join(ROOT, ".otter-edge", "faults-report.json");
/** What otter gives the sample notebooks (checked against a direct `otter run` in e2e.test.ts). */
const EXPECTED = { full: { score: 1, points: 5 }, partial: { score: 0.6, points: 3 }, zero: { score: 0, points: 0 } } as const;
/** Runner names on the shared engine: unique to this test process, so reaping never touches another stack's containers. */
const NAME = (n: string) => `faults-${process.pid}-${n}`;

const exec = promisify(execFile);
type Final = Record<string, any>;
type Event = { at: string; state: string; detail: string | null };

const report: Record<string, unknown> = {};
const ownedRunners: Runner[] = [];
const toResume: number[] = [];
let work: string;

async function docker(...args: string[]): Promise<string[]> {
  const { stdout } = await exec("docker", args, { timeout: 30_000 });
  return stdout.split("\n").filter(Boolean);
}

/** The running grading container of a submission, once it exists: the job is mid-grade. */
async function runningContainer(submissionId: string, timeoutMs = 120_000): Promise<string> {
  let id = "";
  await waitFor(
    async () => {
      id = (await docker("ps", "-q", "--no-trunc", "--filter", `label=${JOB_LABEL}=${submissionId}`, "--filter", "status=running"))[0] ?? "";
      return id !== "";
    },
    timeoutMs,
    () => `no running grading container for ${submissionId}`,
  );
  return id;
}

async function containerExists(id: string): Promise<boolean> {
  return (await docker("ps", "-a", "-q", "--no-trunc", "--filter", `id=${id}`)).length > 0;
}

function runner(gateway: Gateway, token: string, name: string, opts: { capacity?: number; env?: Record<string, string> } = {}): Runner {
  const r = startRunner({
    gatewayUrl: gateway.url,
    token,
    capacity: opts.capacity ?? 1,
    cacheDir: join(work, `cache-${name}`),
    env: { OTTER_EDGE_RUNNER_NAME: NAME(name), OTTER_EDGE_DRAIN_MS: "2000", ...opts.env },
  });
  ownedRunners.push(r);
  return r;
}

/** A runner token of its own per runner: the gateway names a runner's session (and its events) by its token. */
async function runnerToken(gateway: Gateway, credentials: Credentials, name: string): Promise<string> {
  return (await adminCli<{ token: string }>(gateway.url, credentials.admin, ["tokens", "create", "runner", name])).token;
}

async function events(gateway: Gateway, id: string): Promise<Event[]> {
  return gateway.query<Event>(`SELECT at, state, detail FROM submission_events WHERE submission_id = '${id}' ORDER BY id`);
}

/** What D1 holds about one submission: the row, how many grades were recorded, tests and passbacks. */
async function recorded(gateway: Gateway, id: string) {
  const [row] = await gateway.query<{ status: string; verdict: string; score: number; points: number; attempts: number; runner: string }>(
    `SELECT status, verdict, score, points, attempts, runner FROM submissions WHERE id = '${id}'`,
  );
  const [counts] = await gateway.query<{ graded: number; tests: number; passbacks: number }>(
    `SELECT (SELECT COUNT(*) FROM submission_events WHERE submission_id = '${id}' AND state = 'graded') AS graded,
            (SELECT COUNT(*) FROM test_results WHERE submission_id = '${id}') AS tests,
            (SELECT COUNT(*) FROM passbacks WHERE submission_id = '${id}') AS passbacks`,
  );
  return { ...row!, ...counts! };
}

/** The sample notebook with a first cell that sleeps: same score, but it grades for `seconds` more. */
async function slowNotebook(name: keyof typeof EXPECTED, seconds: number): Promise<string> {
  const nb = JSON.parse(await readFile(join(SUBMISSIONS, `${name}.ipynb`), "utf8"));
  nb.cells.unshift({ cell_type: "code", execution_count: null, metadata: {}, outputs: [], source: [`import time\n`, `time.sleep(${seconds})`] });
  const path = join(work, `${name}-slow-${seconds}.ipynb`);
  await writeFile(path, JSON.stringify(nb));
  return path;
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "otter-edge-faults-"));
});

// Every test's runners end with it, whatever it asserted: a runner left running would take the next test's jobs.
afterEach(async () => {
  for (const pid of toResume.splice(0)) {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // gone
    }
  }
  await Promise.all(ownedRunners.splice(0).map((r) => r.stop()));
}, 60_000);

afterAll(async () => {
  for (const pid of toResume) {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // gone
    }
  }
  await Promise.all(ownedRunners.map((r) => r.stop("SIGKILL")));
  await ensureDockerd();
  // Whatever our runners left (a killed runner's container): removed by name, never another stack's.
  for (const n of ["a", "b", "b2", "frozen", "gw", "engine", "stuck"]) {
    const left = await docker("ps", "-a", "-q", "--filter", `label=${RUNNER_LABEL}=${NAME(n)}`).catch(() => []);
    if (left.length > 0) await docker("rm", "-f", "-v", ...left).catch(() => undefined);
    const volumes = await docker("volume", "ls", "-q", "--filter", `label=${RUNNER_LABEL}=${NAME(n)}`).catch(() => []);
    if (volumes.length > 0) await docker("volume", "rm", ...volumes).catch(() => undefined);
  }
  await writeFile(REPORT, JSON.stringify({ at: new Date().toISOString(), ...report }, null, 2) + "\n").catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
}, 120_000);

describe("a runner killed mid-grade", () => {
  let credentials: Credentials;
  let gateway: Gateway;
  let tokens: Record<string, string>;

  beforeAll(async () => {
    credentials = newCredentials(["alice"]);
    // Short leases so a silent runner is noticed in seconds.
    gateway = await startGateway({ stateDir: join(work, "state-kill"), credentials, vars: { LEASE_TTL_MS: "4000", HEARTBEAT_MS: "1000" } });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
    tokens = Object.fromEntries(await Promise.all(["runner-a", "runner-b", "runner-frozen"].map(async (n) => [n, await runnerToken(gateway, credentials, n)] as const)));
  });

  afterAll(async () => {
    await gateway?.stop();
  });

  it("SIGKILL: the job is leased to a second runner and graded exactly once; the orphan container is reaped when the runner starts again", async () => {
    const alice = credentials.students.alice!;
    const a = runner(gateway, tokens["runner-a"]!, "a");
    const { id, status_url } = await submitNotebook(gateway.url, alice, join(SUBMISSIONS, "full.ipynb"));
    const orphan = await runningContainer(id);

    const tFault = performance.now();
    await a.stop("SIGKILL"); // the runner's whole process group: tsx and node
    expect(await containerExists(orphan), "a killed runner leaves its container behind").toBe(true);

    const b = runner(gateway, tokens["runner-b"]!, "b");
    const final = await waitForFinal(status_url, alice, 120_000);
    const faultToGraded = performance.now() - tFault;

    expect(final.status, final.message).toBe("graded");
    expect(final.score).toBe(EXPECTED.full.score);
    const evs = await events(gateway, id);
    expect(evs.map((e) => e.state)).toEqual(["queued", "leased", "requeued", "leased", "graded"]);
    expect(evs[1]!.detail).toMatch(/attempt 1 on runner runner-a/);
    expect(evs[3]!.detail).toMatch(/attempt 2 on runner runner-b/);
    const row = await recorded(gateway, id);
    expect(row).toMatchObject({ status: "graded", score: 1, points: 5, attempts: 2, runner: "runner-b", graded: 1, tests: final.tests.length, passbacks: 1 });

    // The same runner (same name) starts again: it removes what its killed predecessor left.
    const tRestart = performance.now();
    const a2 = runner(gateway, tokens["runner-a"]!, "a");
    // The log line follows the engine's answer, so it can reach this process after the container is gone: wait for both.
    await waitFor(
      async () => /removed an orphan grading container/.test(a2.output()) && !(await containerExists(orphan)),
      60_000,
      () => `orphan ${orphan} not removed (or not logged):\n${a2.output().slice(-3000)}`,
    );
    const reapedAfter = performance.now() - tRestart;
    // The second runner's containers were never touched (it had none left), and it still serves.
    expect(b.process.exitCode).toBeNull();

    report.runnerKilled = {
      faultToGradedSeconds: seconds(faultToGraded),
      requeueReason: evs[2]!.detail,
      orphanReapedSecondsAfterRestart: seconds(reapedAfter),
    };
    await Promise.all([a2.stop(), b.stop()]);
  });

  it("SIGSTOP (socket open, no heartbeats): the lease expires and another runner grades the job exactly once", async () => {
    const alice = credentials.students.alice!;
    const frozen = runner(gateway, tokens["runner-frozen"]!, "frozen");
    const { id, status_url } = await submitNotebook(gateway.url, alice, join(SUBMISSIONS, "partial.ipynb"));
    await runningContainer(id);

    const tFault = performance.now();
    process.kill(-frozen.process.pid!, "SIGSTOP");
    toResume.push(-frozen.process.pid!);
    runner(gateway, tokens["runner-b"]!, "b2");
    const final = await waitForFinal(status_url, alice, 120_000);
    const faultToGraded = performance.now() - tFault;

    expect(final.status, final.message).toBe("graded");
    expect(final.score).toBe(EXPECTED.partial.score);
    const evs = await events(gateway, id);
    expect(evs.map((e) => e.state)).toEqual(["queued", "leased", "requeued", "leased", "graded"]);
    expect(evs[2]!.detail).toMatch(/lease expired on runner runner-frozen/);
    expect(evs[3]!.detail).toMatch(/attempt 2 on runner runner-b/);
    expect(await recorded(gateway, id)).toMatchObject({ status: "graded", score: 0.6, points: 3, attempts: 2, runner: "runner-b", graded: 1, tests: final.tests.length, passbacks: 1 });

    // Thawed, the frozen runner finds its lease revoked: its late result (if any) is refused, not recorded.
    process.kill(-frozen.process.pid!, "SIGCONT");
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await recorded(gateway, id)).toMatchObject({ graded: 1, attempts: 2, runner: "runner-b", score: 0.6 });
    report.runnerFrozen = { faultToGradedSeconds: seconds(faultToGraded), requeueReason: evs[2]!.detail, frozenRunnerLog: frozen.output().match(/"msg":"(stopping job|gateway refused the result)"/g) ?? [] };
  });
});

// With shards, each of the runner's sockets reconnects on its own and the kept result goes back on
// its shard's socket.
describe.each([1, 3])("the gateway restarted with jobs leased and queued (%i Dispatcher shards)", (shards) => {
  let credentials: Credentials;
  let gateway: Gateway;
  let port: number;
  const stateDir = () => join(work, `state-gw-${shards}`);
  const vars = { DISPATCHER_SHARDS: String(shards) };

  beforeAll(async () => {
    credentials = newCredentials(["bob"]);
    port = await freePort();
    gateway = await startGateway({ stateDir: stateDir(), credentials, port, vars });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
  });

  afterAll(async () => {
    await gateway?.stop();
  });

  it("loses and doubles nothing; a grade finished while it was down is delivered when the runner reconnects", async () => {
    const bob = credentials.students.bob!;
    const r = runner(gateway, credentials.runner, `gw${shards}`, { capacity: 1 });
    // The first job grades for a few seconds more, so it is certainly still running when the gateway stops.
    const names = ["full", "partial", "zero", "full"] as const;
    const paths = [await slowNotebook("full", 6), ...names.slice(1).map((n) => join(SUBMISSIONS, `${n}.ipynb`))];
    const submitted = [];
    for (const p of paths) submitted.push(await submitNotebook(gateway.url, bob, p));
    const first = await runningContainer(submitted[0]!.id);
    const stats = await adminCli<{ queue: { pending: number; leased: number } }>(gateway.url, credentials.admin, ["stats"]);
    // One queue is first in, first out; shards are served in turn, so others may be graded already.
    if (shards === 1) expect(stats.queue).toMatchObject({ pending: 3, leased: 1 });
    else expect(stats.queue.leased).toBe(1);

    const tStop = performance.now();
    await gateway.stop();
    // The runner finishes the leased job while the gateway is down: its result has nowhere to go yet.
    await waitFor(async () => /gateway away: the result is sent when the runner reconnects/.test(r.output()), 60_000, () => `no grade while the gateway was down:\n${r.output().slice(-3000)}`);
    const downFor = performance.now() - tStop;
    expect(await containerExists(first)).toBe(false);

    const tStart = performance.now();
    gateway = await startGateway({ stateDir: stateDir(), credentials, port, vars });
    const tUp = performance.now();
    const upAt = Date.now();
    const finals = await Promise.all(submitted.map((s) => waitForFinal(s.status_url, bob, 180_000)));
    const upToAllGraded = performance.now() - tUp;

    const attempts: number[] = [];
    for (const [i, s] of submitted.entries()) {
      const expected = EXPECTED[names[i]!];
      expect(finals[i]!.status, `${names[i]}: ${finals[i]!.message}`).toBe("graded");
      const row = await recorded(gateway, s.id);
      expect(row).toMatchObject({ status: "graded", score: expected.score, points: expected.points, graded: 1, passbacks: 1 });
      attempts.push(row.attempts);
    }
    // Attempts 1 everywhere: the first grade was delivered after the reconnect, not graded again.
    // Two causes of a second attempt were found and fixed. (1) 2026-12-05: the runner's reconnect
    // backoff grows while the gateway is down, so the restarted Dispatcher's alarm expired a lease
    // whose heartbeats had nowhere to go; such leases now get a lease TTL from the restart. (2)
    // 2026-12-06 (CI, 3 shards): the stopping gateway saw the runner's socket close (1006) and
    // requeued the lease before it exited, so the kept result was refused; a runner that reconnects
    // before the job is leased again now takes its lost lease back (gateway/test/dispatcher.test.ts).
    // Which of the two happened in a run is in the report (leasesTakenBack); on a failure the events say why.
    let eventsIfRetried: string[] | undefined;
    if (attempts.some((n) => n > 1)) {
      const events = await gateway.query<{ submission_id: string; at: string; state: string; detail: string }>("SELECT submission_id, at, state, detail FROM submission_events ORDER BY at, id");
      eventsIfRetried = events.map((e) => `${e.at} ${e.submission_id.slice(0, 8)} ${e.state} ${e.detail ?? ""}`);
    }
    expect(attempts, `graded again after the restart; events:\n${eventsIfRetried?.join("\n")}`).toEqual([1, 1, 1, 1]);
    await waitFor(async () => /sending a result again after reconnecting/.test(r.output()), 10_000, () => `no resend logged:\n${r.output().slice(-3000)}`);
    expect(r.process.exitCode).toBeNull();
    report[shards === 1 ? "gatewayRestarted" : `gatewayRestarted${shards}Shards`] = {
      jobs: names.length,
      attempts,
      gatewayDownSeconds: seconds(tStart - tStop),
      restartSeconds: seconds(tUp - tStart),
      runnerReconnectedAfterUpSeconds: seconds(
        Math.min(...r.output().split("\n").filter((l) => l.includes('"msg":"connected to gateway"')).map((l) => JSON.parse(l).time as number).filter((t) => t >= upAt - 5_000)) - upAt,
      ),
      restartToAllGradedSeconds: seconds(upToAllGraded),
      stopToAllGradedSeconds: seconds(performance.now() - tStop),
      firstGradeFinishedWhileDownAfterSeconds: seconds(downFor),
      leasesTakenBack: (await gateway.query<{ n: number }>("SELECT COUNT(*) AS n FROM submission_events WHERE detail LIKE '%taken back after reconnecting%'"))[0]?.n ?? 0,
    };
    await r.stop();
  });
});

// ---- the Docker engine --------------------------------------------------------------------------

async function dockerdPid(): Promise<number | null> {
  const out = await exec("pgrep", ["-x", "dockerd"]).then((r) => r.stdout.trim(), () => "");
  return out ? Number(out.split("\n")[0]) : null;
}

async function dockerInfoOk(): Promise<boolean> {
  return exec("docker", ["info"], { timeout: 10_000 }).then(
    () => true,
    () => false,
  );
}

/** Starts dockerd the way scripts/setup.sh does, unless one answers. */
async function ensureDockerd(): Promise<void> {
  if (await dockerInfoOk()) return;
  if ((await dockerdPid()) === null) {
    const child: ChildProcess = spawn("sh", ["-c", "nohup dockerd >/var/log/otter-edge-dockerd.log 2>&1 &"], { detached: true, stdio: "ignore" });
    await new Promise((r) => child.once("exit", r));
  }
  await waitFor(dockerInfoOk, 60_000, () => "dockerd did not come back; see /var/log/otter-edge-dockerd.log");
}

describe("the Docker engine stopped mid-job", () => {
  let credentials: Credentials;
  let gateway: Gateway;

  beforeAll(async () => {
    credentials = newCredentials(["carol"]);
    gateway = await startGateway({ stateDir: join(work, "state-engine"), credentials, vars: { MAX_ATTEMPTS: "10" } });
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
  });

  afterAll(async () => {
    await ensureDockerd(); // whatever happened above
    await gateway?.stop();
  });

  it("is an infrastructure error, retried until graded with the right score, never posted as 0", async () => {
    const carol = credentials.students.carol!;
    const r = runner(gateway, credentials.runner, "engine", { capacity: 1 });
    // dockerd stops a container on its way down after the container's stop timeout (10 s: the grader,
    // PID 1, ignores SIGTERM); a notebook that takes longer is the one caught mid-job.
    const { id, status_url } = await submitNotebook(gateway.url, carol, await slowNotebook("full", 18));
    await runningContainer(id);

    const pid = await dockerdPid();
    expect(pid).not.toBeNull();
    const tFault = performance.now();
    let tDown = 0;
    let tUp = 0;
    try {
      process.kill(pid!, "SIGTERM");
      await waitFor(
        async () => {
          try {
            process.kill(pid!, 0);
            return false;
          } catch {
            return true;
          }
        },
        60_000,
        () => "dockerd did not exit",
      );
      tDown = performance.now();
    } finally {
      await ensureDockerd();
      tUp = performance.now();
    }

    const final = await waitForFinal(status_url, carol, 180_000);
    const tGraded = performance.now();
    const faultToGraded = tGraded - tFault;
    const evs = await events(gateway, id);
    const requeues = evs.filter((e) => e.state === "requeued");
    expect(requeues.length, JSON.stringify(evs)).toBeGreaterThanOrEqual(1);
    expect(requeues[0]!.detail).toMatch(/infrastructure error on runner .*docker/i);
    expect(final.status, final.message).toBe("graded");
    expect(final.verdict).toBe("graded");
    expect(final.score).toBe(EXPECTED.full.score);
    const row = await recorded(gateway, id);
    expect(row).toMatchObject({ status: "graded", score: 1, points: 5, graded: 1, passbacks: 1 });
    expect(row.attempts).toBeGreaterThanOrEqual(2);
    expect(r.process.exitCode).toBeNull();
    // Nothing of this runner is left on the engine: a container whose removal failed while the engine was away is reaped.
    await waitFor(async () => (await docker("ps", "-a", "-q", "--filter", `label=${RUNNER_LABEL}=${NAME("engine")}`)).length === 0, 30_000, () => "containers left behind");
    expect(await docker("volume", "ls", "-q", "--filter", `label=${RUNNER_LABEL}=${NAME("engine")}`), "job volumes left behind").toEqual([]);

    report.dockerdStopped = {
      faultToGradedSeconds: seconds(faultToGraded),
      dockerdShutdownSeconds: seconds(tDown - tFault),
      engineBackAfterSeconds: seconds(tUp - tFault),
      engineBackToGradedSeconds: seconds(tGraded - tUp),
      attempts: row.attempts,
      requeueReasons: requeues.map((e) => e.detail),
    };
    await r.stop();
  });
});

// ---- a container that cannot be killed -------------------------------------------------------------

describe("a grading container that cannot be killed", () => {
  let credentials: Credentials;
  let gateway: Gateway;
  let loopNotebook: string;
  let shim: number | null = null;

  beforeAll(async () => {
    credentials = newCredentials(["dave"]);
    gateway = await startGateway({ stateDir: join(work, "state-stuck"), credentials });
    // Two assignments on the same autograder: the sample (generous time limit) and "loop" (10 s, the least the gateway allows), where
    // an infinite loop gets killed at the limit.
    const config = join(work, "course-config-stuck.json");
    await writeFile(config, JSON.stringify({ demo101: { "1": { course_id: "DemoX+Demo101+2026", assignments: { sample: "sample-lti-block", loop: "loop-lti-block" } } } }));
    await configureAssignment(gateway.url, credentials.admin, { configFile: config, course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
    await configureAssignment(gateway.url, credentials.admin, { configFile: config, course: "demo101", assignment: "loop", autograderZip: AUTOGRADER, timeoutSeconds: 10 });
    const nb = JSON.parse(await readFile(INFINITE_LOOP, "utf8"));
    nb.metadata.otter_service = { ...nb.metadata.otter_service, assignment: "loop" };
    loopNotebook = join(work, "infinite-loop-loop.ipynb");
    await writeFile(loopNotebook, JSON.stringify(nb));
  });

  afterAll(async () => {
    if (shim) {
      try {
        process.kill(shim, "SIGCONT");
      } catch {
        // gone
      }
    }
    await gateway?.stop();
  });

  it("is given up after the kill grace as an infrastructure error, left for an operator, and the runner keeps grading", async () => {
    const dave = credentials.students.dave!;
    const r = runner(gateway, credentials.runner, "stuck", { capacity: 1, env: { OTTER_EDGE_KILL_GRACE_MS: "3000" } });
    const loop = await submitNotebook(gateway.url, dave, loopNotebook);
    const container = await runningContainer(loop.id);
    // Freeze the container's shim: the runtime stops answering for this container, so the runner's
    // kill at the time limit never completes (and neither does `docker inspect`), as with a wedged runtime.
    const found = (await exec("pgrep", ["-f", `containerd-shim-runc-v2 .*-id ${container}`])).stdout.trim().split("\n");
    expect(found).toHaveLength(1);
    shim = Number(found[0]);
    const tFault = performance.now();
    process.kill(shim, "SIGSTOP");

    await waitFor(
      async () => (await fetch(loop.status_url, { headers: { authorization: `Bearer ${dave}` } }).then((res) => res.json() as Promise<Final>)).events.some((e: Event) => e.state === "requeued"),
      60_000,
      () => `no requeue:\n${r.output().slice(-3000)}`,
    );
    const tGivenUp = performance.now();
    // The runner still serves, with the stuck container still on the engine.
    const full = await submitNotebook(gateway.url, dave, join(SUBMISSIONS, "full.ipynb"));
    const [loopFinal, fullFinal] = await Promise.all([waitForFinal(loop.status_url, dave, 120_000), waitForFinal(full.status_url, dave, 120_000)]);
    const faultToFinal = performance.now() - tFault;
    expect(await containerExists(container), "the stuck container is left for an operator").toBe(true);
    expect(r.output()).toMatch(/grading container did not stop after kill: left for an operator/);

    const evs = await events(gateway, loop.id);
    expect(evs.map((e) => e.state)).toEqual(["queued", "leased", "requeued", "leased", "graded"]);
    expect(evs[2]!.detail).toMatch(/infrastructure error on runner .*container did not stop/);
    // The second attempt ran on a working runtime: the student's own verdict, once.
    expect(loopFinal).toMatchObject({ status: "graded", verdict: "timeout", score: 0 });
    expect(await recorded(gateway, loop.id)).toMatchObject({ attempts: 2, graded: 1 });
    expect(fullFinal).toMatchObject({ status: "graded", verdict: "graded", score: 1 });
    expect(await recorded(gateway, full.id)).toMatchObject({ attempts: 1, graded: 1 });

    // The runtime recovers: the pending kill lands and the runner removes the container it gave up on.
    process.kill(shim, "SIGCONT");
    shim = null;
    const tThaw = performance.now();
    // Both: the runner logs after the engine confirms the removal, and that line can arrive after `docker inspect` sees it gone.
    await waitFor(
      async () => /a stuck grading container stopped at last and was removed/.test(r.output()) && !(await containerExists(container)),
      30_000,
      () => `stuck container not removed (or not logged) after it stopped:\n${r.output().slice(-3000)}`,
    );
    report.unkillableContainer = {
      faultToGivenUpSeconds: seconds(tGivenUp - tFault),
      faultToBothFinalSeconds: seconds(faultToFinal),
      removedAfterThawSeconds: seconds(performance.now() - tThaw),
      requeueReason: evs[2]!.detail,
    };
    await r.stop();
  });
});
