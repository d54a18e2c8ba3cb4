/**
 * End-to-end overhead benchmark: what otter-edge adds on top of grading the same notebook directly.
 *
 *   A  otter-edge: POST /api/v1/submissions → status `graded`, with a real runner (Docker, capacity 1).
 *      Measured by polling the status every 20 ms, and from the D1 timestamps created_at → finished_at
 *      (independent of polling); broken down with the runner's own per-job `timings` log lines.
 *   B  `docker run --rm --network none` of the grading image's default command on a bind-mounted job
 *      directory (as test/support/direct-otter.ts does): the same image with no otter-edge around it.
 *   C  `otter run` on the bare host (.otter-edge/venv), no container at all.
 *   D  the runner's container without the runner: its flags (1 CPU, 2 GiB, pids 512, read-only root,
 *      tmpfs, every capability dropped but SETUID/SETGID/SETPCAP, no-new-privileges) and its command
 *      (the uid-split driver /opt/otter-edge/grade): separates what the sandbox costs from what
 *      otter-edge's orchestration adds.
 *
 *   W  as A, but through a second gateway whose runner keeps a warm pool (--warm-pool 2: containers
 *      started ahead of time, each waiting with otter imported for one job). Set BENCH_IMAGE_CONTRACT
 *      to run both runners on a test build of the grading image (--image-contract).
 *   G  as A, but the assignment's isolation is `grader` (tests run in the grader through the bridge,
 *      falling back to the kernel for what it cannot carry; A is `kernel`, the default: plain otter's
 *      own flow): what the tamper-resistant isolation costs, side by side with A.
 *   S  as A, polled once a second (its D1 figure shows what 20 ms polling costs the machine).
 *   P  with BENCH_BASELINE_IMAGE=<image>: D on that image (e.g. a build of the grading image before a
 *      change to its driver), so the two drivers are compared side by side in one run.
 *
 * All run interleaved in rotating order (AWBCDS, WBCDSA, …) so drift on a shared machine hits
 * all alike. Afterwards a few component timings (empty container, Python import of otter,
 * kernel start) explain where B and C spend their time.
 *
 *   npm run bench:e2e
 *   BENCH_PAIRS=10      rounds of A/B/C (default 10, at least 10 recommended)
 *   BENCH_NOTEBOOK=full which sample submission to grade (full, partial, zero)
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type Gateway, ROOT, type Runner, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook } from "../scripts/local-stack.js";
import { jobDir, runnerTimings } from "./support.js";
import { fmt, getJson, machine, median, percentile, sleep, summarize, table, writeResults } from "./lib.js";

const exec = promisify(execFile);
const SAMPLE = join(ROOT, "assignments", "sample");
const AUTOGRADER = join(SAMPLE, "dist", "autograder.zip");
const NOTEBOOK = join(SAMPLE, "submissions", `${process.env.BENCH_NOTEBOOK ?? "full"}.ipynb`);
const ROUNDS = Math.max(1, Number(process.env.BENCH_PAIRS ?? 10));
const IMAGE = process.env.BENCH_IMAGE ?? "otter-edge/grading:otter-7.0.0";
const HOST_OTTER = join(ROOT, ".otter-edge", "venv", "bin", "otter");
const HOST_PYTHON = join(ROOT, ".otter-edge", "venv", "bin", "python");
const POLL_MS = 20;

type Kind = "A" | "G" | "W" | "B" | "C" | "D" | "S" | "P";
const BASELINE_IMAGE = process.env.BENCH_BASELINE_IMAGE;
const WARM_POOL = Number(process.env.BENCH_WARM_POOL ?? 2);
const IMAGE_CONTRACT = process.env.BENCH_IMAGE_CONTRACT;
const WARM_RUNNER = `bench-warm-runner-${process.pid}`;
const GRADER_ASSIGNMENT = "sample-grader";

/**
 * The runner's container as `docker run` flags (runner/src/config.ts defaults, docker-sandbox.ts
 * create options): root with only the three uid-switching capabilities, so that the image's driver
 * (/opt/otter-edge/grade, appended by runB) can grade as 10001 and run the notebook as 10002.
 */
const SANDBOX_FLAGS = [
  "--user", "0:0",
  "--memory", "2g", "--memory-swap", "2g",
  "--cpus", "1",
  "--pids-limit", "512",
  "--read-only",
  "--tmpfs", "/tmp:rw,nosuid,nodev,size=268435456",
  "--tmpfs", `/home/grader:rw,nosuid,nodev,size=16m,uid=${10001},gid=${10001},mode=0700`,
  "--cap-drop", "ALL",
  "--cap-add", "SETUID", "--cap-add", "SETGID", "--cap-add", "SETPCAP",
  "--security-opt", "no-new-privileges",
  "--ulimit", "nofile=1024:1024",
  "--log-opt", "max-size=1m", "--log-opt", "max-file=1",
];
/** The runner's command (docker-sandbox.ts): the uid-split driver, not the image's default `otter run`. */
const DRIVER = ["/opt/otter-edge/grade", "-a", "/job/autograder.zip", "-o", "/job/out", "/job/submission.ipynb"];

interface ARun {
  id: string;
  pollMs: number;
  status: string;
  points: number | null;
}

/** A: through otter-edge, timed from the POST to the first poll that sees `graded`. */
async function runA(gateway: Gateway, token: string, pollEveryMs = POLL_MS, notebook = NOTEBOOK): Promise<ARun> {
  const t0 = performance.now();
  const { id, status_url } = await submitNotebook(gateway.url, token, notebook);
  for (;;) {
    const res = await fetch(status_url, { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json()) as { status: string; points: number | null; message?: string };
    if (body.status === "graded" || body.status === "failed") {
      const pollMs = performance.now() - t0;
      if (body.status !== "graded") throw new Error(`A: submission ${id} ${body.status}: ${body.message}`);
      return { id, pollMs, status: body.status, points: body.points };
    }
    if (performance.now() - t0 > 300_000) throw new Error(`A: submission ${id} not graded within 300 s`);
    await sleep(pollEveryMs);
  }
}

/**
 * Waits (untimed) until the warm runner's pool is full again and its containers have finished
 * starting (their CPU use, read from the engine's cgroup v1 accounting, has fallen to the idle
 * wait's): otherwise whichever path runs after W pays for the refill, and always the same one.
 */
async function settleWarmPool(runnerName: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  const cpu = async (id: string) => {
    for (const dir of ["/sys/fs/cgroup/cpuacct/docker", "/sys/fs/cgroup/cpu,cpuacct/docker"]) {
      const v = await readFile(join(dir, id, "cpuacct.usage"), "utf8").catch(() => null);
      if (v !== null) return Number(v);
    }
    return Number.NaN;
  };
  for (;;) {
    const { stdout } = await exec("docker", ["ps", "-q", "--no-trunc", "--filter", `label=org.otter-edge.runner=${runnerName}`, "--filter", "label=org.otter-edge.job=(warm)"]);
    const ids = stdout.split("\n").filter(Boolean);
    if (ids.length >= WARM_POOL) {
      const before = await Promise.all(ids.map(cpu));
      await sleep(250);
      const after = await Promise.all(ids.map(cpu));
      // The idle wait costs ~2 ms of CPU per 250 ms; starting Python and importing otter ~250.
      if (after.every((a, i) => Number.isFinite(a) && a - before[i]! < 25e6)) return;
      if (after.some((a) => !Number.isNaN(a)) === false) return void (await sleep(3000)); // no cgroup v1 accounting: a fixed pause
    } else await sleep(100);
    if (Date.now() > deadline) throw new Error(`the warm pool of ${runnerName} did not settle within 60 s`);
  }
}

async function pointsIn(dir: string): Promise<number> {
  const results = JSON.parse(await readFile(join(dir, "out", "results.json"), "utf8")) as { score?: number; tests: Array<{ score?: number }> };
  return results.score ?? results.tests.reduce((s, t) => s + (t.score ?? 0), 0);
}

/** B (D with the sandbox flags): the grading image's default command, bind-mounted job directory, no network. Setup is not timed. */
async function runB(extraFlags: string[] = [], command: string[] = [], image = IMAGE): Promise<{ ms: number; points: number }> {
  const dir = await jobDir(NOTEBOOK, AUTOGRADER, true);
  try {
    const t0 = performance.now();
    await exec("docker", ["run", "--rm", "--network", "none", ...extraFlags, "-v", `${dir}:/job`, image, ...command], { maxBuffer: 16 * 1024 * 1024 });
    const ms = performance.now() - t0;
    return { ms, points: await pointsIn(dir) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** C: `otter run` on the host, in a temp directory. Setup is not timed. */
async function runC(): Promise<{ ms: number; points: number }> {
  const dir = await jobDir(NOTEBOOK, AUTOGRADER, false);
  try {
    const t0 = performance.now();
    await exec(HOST_OTTER, ["run", "-a", "autograder.zip", "-o", "out", "submission.ipynb"], { cwd: dir, env: hostPythonEnv(), maxBuffer: 16 * 1024 * 1024 });
    const ms = performance.now() - t0;
    return { ms, points: await pointsIn(dir) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The host's Python with a bytecode cache of its own: the grading image ships compiled .pyc files,
 * but a host venv may have none (a fresh `pip install`, and PYTHONDONTWRITEBYTECODE=1 in the
 * environment), and compiling otter's imports on every run would make C look slow for the wrong
 * reason. The cache lives in the bench's temp directory and is filled by the warm-up run.
 */
let pycachePrefix = "";
function hostPythonEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONPYCACHEPREFIX: pycachePrefix };
  delete env.PYTHONDONTWRITEBYTECODE;
  return env;
}

async function timeCommand(cmd: string, args: string[], reps: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await exec(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
    out.push(performance.now() - t0);
  }
  return out;
}

/** Seconds → ms for Python's perf_counter figures printed as JSON by the snippet below. */
const PY_COMPONENTS = `
import json, time
t0 = time.perf_counter(); import otter; t1 = time.perf_counter()
from jupyter_client.manager import start_new_kernel
t2 = time.perf_counter(); km, kc = start_new_kernel(); t3 = time.perf_counter()
kc.stop_channels(); km.shutdown_kernel(now=False); t4 = time.perf_counter()
print(json.dumps({"importOtterMs": (t1 - t0) * 1000, "kernelStartMs": (t3 - t2) * 1000, "kernelShutdownMs": (t4 - t3) * 1000}))
`;

async function pyComponents(inContainer: boolean, reps: number): Promise<Array<Record<string, number>>> {
  const out: Array<Record<string, number>> = [];
  for (let i = 0; i < reps; i++) {
    const { stdout } = inContainer
      ? await exec("docker", ["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", IMAGE, "python", "-c", PY_COMPONENTS])
      : await exec(HOST_PYTHON, ["-c", PY_COMPONENTS], { cwd: tmpdir(), env: hostPythonEnv() });
    out.push(JSON.parse(stdout.trim().split("\n").pop()!) as Record<string, number>);
  }
  return out;
}

const ms = (iso: string | null | undefined) => (iso ? Date.parse(iso) : Number.NaN);

async function main() {
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-e2e-"));
  pycachePrefix = join(work, "pycache");
  const credentials = newCredentials(["alice"]);
  const alice = credentials.students.alice!;
  const credentialsW = newCredentials(["alice"]);
  const aliceW = credentialsW.students.alice!;
  let gateway: Gateway | undefined;
  let runner: Runner | undefined;
  let gatewayW: Gateway | undefined;
  let runnerW: Runner | undefined;
  try {
    console.log(`starting two gateways, a runner (capacity 1) and a runner with a warm pool of ${WARM_POOL} (capacity 1) in ${work} …`);
    const contractEnv: Record<string, string> = IMAGE_CONTRACT ? { OTTER_EDGE_IMAGE_CONTRACT: IMAGE_CONTRACT } : {};
    gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { EDX_URL: "http://127.0.0.1:9" } });
    // Its own credentials: startGateway mints the runner token of its gateway into them.
    gatewayW = await startGateway({ stateDir: join(work, "state-w"), credentials: credentialsW, vars: { EDX_URL: "http://127.0.0.1:9" } });
    for (const [g, creds] of [[gateway, credentials], [gatewayW, credentialsW]] as const)
      await configureAssignment(g.url, creds.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: AUTOGRADER, timeoutSeconds: 300 });
    // G: the same zip as a second assignment of the same course, graded under `grader` isolation.
    const graderConfig = join(work, "course-config-grader.json");
    await writeFile(graderConfig, JSON.stringify({ demo101: { "1": { course_id: "DemoX+Demo101+2026", assignments: { sample: "sample-lti-block", [GRADER_ASSIGNMENT]: "sample-grader-lti-block" } } } }));
    await configureAssignment(gateway.url, credentials.admin, { configFile: graderConfig, course: "demo101", assignment: GRADER_ASSIGNMENT, autograderZip: AUTOGRADER, timeoutSeconds: 300, isolation: "grader" });
    const graderNotebook = join(work, "submission-grader.ipynb");
    const nb = JSON.parse(await readFile(NOTEBOOK, "utf8"));
    nb.metadata.otter_service = { ...nb.metadata.otter_service, assignment: GRADER_ASSIGNMENT };
    await writeFile(graderNotebook, JSON.stringify(nb));
    runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 1, env: { ...contractEnv, OTTER_EDGE_WARM_POOL: "0" } });
    runnerW = startRunner({ gatewayUrl: gatewayW.url, token: credentialsW.runner, cacheDir: join(work, "cache-w"), capacity: 1, env: { ...contractEnv, OTTER_EDGE_WARM_POOL: String(WARM_POOL), OTTER_EDGE_RUNNER_NAME: WARM_RUNNER } });
    const gw = gateway;
    const gwW = gatewayW;
    for (const [g, r, creds] of [[gw, runner, credentials], [gwW, runnerW, credentialsW]] as const) {
      for (let i = 0; ; i++) {
        const stats = await getJson<{ runners: Array<{ capacity: number }> }>(`${g.url}/api/v1/admin/stats`, { authorization: `Bearer ${creds.admin}` });
        if (stats.runners.some((x) => x.capacity > 0)) break;
        if (i > 600) throw new Error(`runner did not connect:\n${r.output().slice(-3000)}`);
        await sleep(100);
      }
    }

    console.log("warm-up: one of each (not counted) …");
    await settleWarmPool(WARM_RUNNER);
    await runA(gw, alice);
    await runA(gw, alice, POLL_MS, graderNotebook);
    await runA(gwW, aliceW);
    await settleWarmPool(WARM_RUNNER);
    await runB();
    await runC();
    await runB(SANDBOX_FLAGS, DRIVER);
    if (BASELINE_IMAGE) await runB(SANDBOX_FLAGS, DRIVER, BASELINE_IMAGE);

    const a: ARun[] = [];
    const g: ARun[] = [];
    const w: ARun[] = [];
    // A again, but polled once a second: its D1 figure shows what 20 ms polling itself costs the machine.
    const slow: ARun[] = [];
    const b: number[] = [];
    const c: number[] = [];
    const d: number[] = [];
    const p: number[] = [];
    const points = new Set<number>();
    const kinds: Kind[] = ["A", "G", "W", "B", "C", "D", "S", ...(BASELINE_IMAGE ? (["P"] as const) : [])];
    for (let round = 0; round < ROUNDS; round++) {
      const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]!);
      for (const kind of order) {
        if (kind === "A" || kind === "W") {
          const r = kind === "A" ? await runA(gw, alice) : await runA(gwW, aliceW);
          (kind === "A" ? a : w).push(r);
          if (kind === "W") await settleWarmPool(WARM_RUNNER);
          if (r.points !== null) points.add(r.points);
        } else if (kind === "G") {
          const r = await runA(gw, alice, POLL_MS, graderNotebook);
          g.push(r);
          if (r.points !== null) points.add(r.points);
        } else if (kind === "S") {
          slow.push(await runA(gw, alice, 1000));
        } else if (kind === "P") {
          const r = await runB(SANDBOX_FLAGS, DRIVER, BASELINE_IMAGE);
          p.push(r.ms);
          points.add(r.points);
        } else {
          const r = kind === "B" ? await runB() : kind === "D" ? await runB(SANDBOX_FLAGS, DRIVER) : await runC();
          (kind === "B" ? b : kind === "D" ? d : c).push(r.ms);
          points.add(r.points);
        }
      }
      console.log(
        `round ${round + 1}/${ROUNDS} (${order.join("")}, load ${loadavg()[0]!.toFixed(1)}): A ${fmt(a.at(-1)!.pollMs, 0)} ms, G ${fmt(g.at(-1)!.pollMs, 0)} ms, W ${fmt(w.at(-1)!.pollMs, 0)} ms, B ${fmt(b.at(-1)!, 0)} ms, C ${fmt(c.at(-1)!, 0)} ms, D ${fmt(d.at(-1)!, 0)} ms${p.length ? `, P ${fmt(p.at(-1)!, 0)} ms` : ""}`,
      );
    }

    // D1's own timestamps for the A/W runs: created (row inserted) → leased → finished (grade recorded).
    const d1Rows = async (g: Gateway, runs: ARun[]) => {
      // gateway.query itself waits out the local file's transient lock; a bench reports what it could not read.
      const rows = await g
        .query<{ id: string; created_at: string; leased_at: string | null; finished_at: string | null }>(`SELECT id, created_at, leased_at, finished_at FROM submissions WHERE id IN (${runs.map((r) => `'${r.id}'`).join(",")})`)
        .catch((err) => {
          console.warn(`D1 query failed: ${String(err).slice(0, 300)}`);
          return [];
        });
      return new Map(rows.map((r) => [r.id, r]));
    };
    const d1 = await d1Rows(gw, [...a, ...g, ...slow]);
    const d1W = await d1Rows(gwW, w);
    const breakdownOf = (runs: ARun[], rows: typeof d1, timings: Map<string, Record<string, number>>) =>
      runs.map((r) => {
        const row = rows.get(r.id);
        const t = timings.get(r.id) ?? {};
        const createdToFinished = ms(row?.finished_at) - ms(row?.created_at);
        const createdToLeased = ms(row?.leased_at) - ms(row?.created_at);
        const leasedToFinished = ms(row?.finished_at) - ms(row?.leased_at);
        const totalMs = t.totalMs ?? Number.NaN;
        return {
          id: r.id,
          pollMs: r.pollMs,
          createdToFinished,
          createdToLeased,
          leasedToFinished,
          warm: t.warm ?? 0,
          // Cold: image lookup + create. Warm: image lookup + taking a started container from the pool.
          createMs: t.createMs ?? Number.NaN,
          // Cold: the start call. Warm: the hand-over (copying the job's files into the waiting container).
          startMs: t.startMs ?? Number.NaN,
          // runMs counts from the start call (cold: from the copy in) to the container's exit, so it includes startMs.
          runAfterStartMs: (t.runMs ?? Number.NaN) - (t.startMs ?? Number.NaN),
          // Cold: putArchive before the start; both: inspect, then results and log tail read in parallel.
          copyAndInspectMs: totalMs - (t.createMs ?? Number.NaN) - (t.runMs ?? Number.NaN),
          sandboxTotalMs: totalMs,
          // Lease → grade recorded, outside the sandbox's timed part: blob fetch, result message, D1
          // write (the container is now removed after the result is sent).
          outsideSandboxMs: leasedToFinished - totalMs,
          // POST → row exists, plus last recorded → poll saw it.
          gatewayAndPollMs: r.pollMs - createdToFinished,
        };
      });
    const breakdown = breakdownOf(a, d1, runnerTimings(runner.output()));
    const breakdownW = breakdownOf(w, d1W, runnerTimings(runnerW.output()));

    console.log("components (5 runs each) …");
    const emptyContainer = await timeCommand("docker", ["run", "--rm", "--network", "none", IMAGE, "true"], 5);
    const emptySandboxed = await timeCommand("docker", ["run", "--rm", "--network", "none", ...SANDBOX_FLAGS, IMAGE, "true"], 5);
    // B with only the CPU cap: how much of D − B is the single CPU.
    const cpus1: number[] = [];
    for (let i = 0; i < 3; i++) cpus1.push((await runB(["--cpus", "1"])).ms);
    const pyContainer = await pyComponents(true, 3);
    const pyHost = await pyComponents(false, 3);
    const pythonStartHost = await timeCommand(HOST_PYTHON, ["-c", "pass"], 5);

    const aPoll = a.map((r) => r.pollMs);
    const wPoll = w.map((r) => r.pollMs);
    const aD1 = breakdown.map((r) => r.createdToFinished).filter(Number.isFinite);
    const wD1 = breakdownW.map((r) => r.createdToFinished).filter(Number.isFinite);
    const slowD1 = slow.map((r) => ms(d1.get(r.id)?.finished_at) - ms(d1.get(r.id)?.created_at)).filter(Number.isFinite);
    const mA = median(aPoll);
    const mW = median(wPoll);
    const mAd1 = median(aD1);
    const mWd1 = median(wD1);
    const mB = median(b);
    const mC = median(c);
    const mD = median(d);
    const line = (name: string, v: number[]) => {
      const s = summarize(v);
      return [name, s.n, fmt(s.p50, 0), fmt(s.p90, 0), fmt(s.min, 0), fmt(s.max, 0)];
    };
    console.log(`\nEnd-to-end overhead (${new Date().toISOString()}), notebook ${NOTEBOOK.split("/").pop()}, ${ROUNDS} rounds, ${machine().cores} cores, Node ${process.version}, load average now ${loadavg().map((x) => x.toFixed(1)).join(" ")}; points seen: ${[...points].join(", ")}`);
    console.log("Figures are noisy on a shared 2-core machine (other tests may be running): repeat a run when a figure looks off.\n");
    console.log(
      table(
        ["path", "n", "median ms", "p90 ms", "min ms", "max ms"],
        [
          line("A otter-edge, POST → graded (poll 20 ms)", aPoll),
          line("A otter-edge, D1 created_at → finished_at", aD1),
          line("G as A, isolation grader, POST → graded (poll 20 ms)", g.map((r) => r.pollMs)),
          line("G as A, isolation grader, D1 created_at → finished_at", g.map((r) => ms(d1.get(r.id)?.finished_at) - ms(d1.get(r.id)?.created_at)).filter(Number.isFinite)),
          line(`W otter-edge + warm pool ${WARM_POOL}, POST → graded (poll 20 ms)`, wPoll),
          line("W otter-edge + warm pool, D1 created_at → finished_at", wD1),
          line("S (A polled every 1 s), D1 created_at → finished_at", slowD1),
          line("B docker run (image default command)", b),
          line("C otter run on the host", c),
          line("D docker run, the runner's flags and driver", d),
          ...(p.length ? [line(`P as D, on ${BASELINE_IMAGE}`, p)] : []),
        ],
      ),
    );
    const warmShare = breakdownW.filter((r) => r.warm === 1).length;
    console.log(`\nW jobs graded in a warm container: ${warmShare} of ${breakdownW.length}`);
    console.log(`G/A at the median (grader isolation against kernel): ${fmt(median(g.map((r) => r.pollMs)) / mA, 2)}`);
    console.log(`A/B at the median: ${fmt(mA / mB, 2)} (D1 figure: ${fmt(mAd1 / mB, 2)});  W/B: ${fmt(mW / mB, 2)} (D1 figure: ${fmt(mWd1 / mB, 2)})`);
    console.log(`A/C at the median: ${fmt(mA / mC, 2)} (D1 figure: ${fmt(mAd1 / mC, 2)});  W/C: ${fmt(mW / mC, 2)} (D1 figure: ${fmt(mWd1 / mC, 2)}); target ≤ 1.10`);
    console.log(`A/D at the median: ${fmt(mA / mD, 2)};  W/D: ${fmt(mW / mD, 2)} (what otter-edge adds around the same container)`);
    console.log(`B/C at the median: ${fmt(mB / mC, 2)} (what the container alone costs); D/B: ${fmt(mD / mB, 2)} (what the sandbox flags and driver cost)`);
    if (p.length) console.log(`D/P at the median: ${fmt(mD / median(p), 2)} (this image's driver against ${BASELINE_IMAGE})`);

    const med = (rows: typeof breakdown, k: keyof (typeof breakdown)[number]) => median(rows.map((r) => r[k] as number).filter(Number.isFinite));
    console.log("\nA and W broken down (medians over their runs, ms; runner timings from its pino `graded` lines):");
    const parts: Array<[string, keyof (typeof breakdown)[number]]> = [
      ["POST → row in D1, and last write → poll saw it (gateway + polling)", "gatewayAndPollMs"],
      ["D1 created_at → leased_at (enqueue, dispatch, lease write)", "createdToLeased"],
      ["  runner: blob fetch + result + D1 grade write", "outsideSandboxMs"],
      ["  sandbox: image lookup + container create (W: take a warm one)", "createMs"],
      ["  sandbox: copy in/out + inspect + logs (W: copy out only)", "copyAndInspectMs"],
      ["  sandbox: container start call (W: hand-over, the copy in)", "startMs"],
      ["  sandbox: start → exit (otter in the container)", "runAfterStartMs"],
      ["D1 leased_at → finished_at (all of the runner's work)", "leasedToFinished"],
    ];
    console.log(
      table(
        ["part", "A median ms", "W median ms"],
        [...parts.map(([label, k]) => [label, fmt(med(breakdown, k), 0), fmt(med(breakdownW, k), 0)]), ["total (poll)", fmt(mA, 0), fmt(mW, 0)]],
      ),
    );
    const pyMed = (rows: Array<Record<string, number>>, k: string) => median(rows.map((r) => r[k]!).filter((x) => x !== undefined));
    console.log("\nComponents (medians, ms):");
    console.log(
      table(
        ["component", "container", "host"],
        [
          ["docker run --rm --network none IMAGE true (empty container)", fmt(median(emptyContainer), 0), "-"],
          ["the same with the runner's sandbox flags", fmt(median(emptySandboxed), 0), "-"],
          ["B with only --cpus 1 (grading the notebook, 3 runs)", fmt(median(cpus1), 0), "-"],
          ["python -c pass", "-", fmt(median(pythonStartHost), 0)],
          ["import otter", fmt(pyMed(pyContainer, "importOtterMs"), 0), fmt(pyMed(pyHost, "importOtterMs"), 0)],
          ["Jupyter kernel start (start_new_kernel)", fmt(pyMed(pyContainer, "kernelStartMs"), 0), fmt(pyMed(pyHost, "kernelStartMs"), 0)],
          ["Jupyter kernel shutdown", fmt(pyMed(pyContainer, "kernelShutdownMs"), 0), fmt(pyMed(pyHost, "kernelShutdownMs"), 0)],
        ],
      ),
    );

    const file = await writeResults("e2e-overhead", {
      at: new Date().toISOString(),
      machine: machine(),
      notebook: NOTEBOOK,
      rounds: ROUNDS,
      pollMs: POLL_MS,
      points: [...points],
      A: { poll: summarize(aPoll), d1: summarize(aD1), runs: breakdown },
      G: { isolation: "grader", poll: summarize(g.map((r) => r.pollMs)), runs: g },
      W: { warmPool: WARM_POOL, poll: summarize(wPoll), d1: summarize(wD1), runs: breakdownW },
      Aslow: { pollEveryMs: 1000, d1: summarize(slowD1), runs: slowD1 },
      B: { ...summarize(b), runs: b },
      C: { ...summarize(c), runs: c },
      D: { ...summarize(d), runs: d, flags: SANDBOX_FLAGS },
      loadavg: loadavg(),
      ratios: { WoverB: mW / mB, WoverC: mW / mC, WoverD: mW / mD, Wd1overB: mWd1 / mB, AoverB: mA / mB, AoverC: mA / mC, AoverD: mA / mD, Ad1overB: mAd1 / mB, Ad1overC: mAd1 / mC, BoverC: mB / mC, DoverB: mD / mB },
      components: { emptyContainer, emptySandboxed, cpus1, pythonStartHost, pyContainer, pyHost },
      p90: { A: percentile([...aPoll].sort((x, y) => x - y), 90) },
    });
    console.log(`\nresults: ${file}`);
  } finally {
    await runner?.stop();
    await runnerW?.stop();
    await gateway?.stop();
    await gatewayW?.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
