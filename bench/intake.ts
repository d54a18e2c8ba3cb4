/**
 * Intake benchmark: how many submissions per second the gateway accepts (`POST /api/v1/submissions`
 * with the sample notebook), and at what latency, at concurrency 1, 50 and 200.
 *
 * A gateway under `wrangler dev` (its own temp state), the sample assignment configured, and a
 * protocol-level consumer that grades every lease at once with a fixed grade, so the queue stays
 * short and the Dispatcher does its real work (enqueue → lease → record) during the run. Loopback only.
 *
 *   npm run bench:intake
 *   BENCH_LEVELS=1:300,50:2000,200:4000   concurrency:requests, comma separated (default shown)
 *   BENCH_CONSUMER=0                      no consumer connected (jobs stay queued: intake cost alone)
 *   BENCH_STUDENTS=10                     students in DEV_USER_TOKENS, submitting round robin
 *   BENCH_GATEWAY_LOG=FILE                copy the gateway's (wrangler's) stdout and stderr to FILE
 *   BENCH_SPLIT=1000                      then, per build, the two halves of the Dispatcher's work apart:
 *                                         that many submissions with no consumer connected (enqueue
 *                                         only), then a consumer drains them (lease + result + record)
 *   BENCH_BASELINE=<git ref>              also run that commit's gateway (a temporary git worktree) and
 *                                         measure both builds level by level, alternating which goes first
 *   BENCH_SHARDS=1,2,4                    instead, run this build once per Dispatcher shard count
 *                                         (DISPATCHER_SHARDS), level by level, rotating which goes first
 */
import http from "node:http";
import { createWriteStream, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Gateway, ROOT, configureAssignment, newCredentials, startGateway } from "../scripts/local-stack.js";
import { StandInConsumer } from "./support.js";
import { diffCpu, fmt, getJson, groupCpuMs, machine, sleep, summarize, table, threadCpuMs, writeResults } from "./lib.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const LEVELS = (process.env.BENCH_LEVELS ?? "1:300,50:2000,200:4000").split(",").map((s) => {
  const [c, n] = s.split(":").map(Number);
  if (!c || !n) throw new Error(`BENCH_LEVELS entry "${s}" is not concurrency:requests`);
  return { concurrency: c, requests: n };
});
const WITH_CONSUMER = process.env.BENCH_CONSUMER !== "0";
const STUDENTS = Number(process.env.BENCH_STUDENTS ?? 10);
const REQUEST_TIMEOUT_MS = 30_000;
const BASELINE = process.env.BENCH_BASELINE;
const SPLIT = Number(process.env.BENCH_SPLIT ?? 0);
const SHARD_COUNTS = (process.env.BENCH_SHARDS ?? "").split(",").filter(Boolean).map(Number);
if (SHARD_COUNTS.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`BENCH_SHARDS must list shard counts ≥ 1, e.g. 1,2,4`);
if (SHARD_COUNTS.length > 0 && BASELINE) throw new Error("BENCH_SHARDS and BENCH_BASELINE compare different things; set one");

interface LevelResult {
  build: string;
  target: string;
  concurrency: number;
  requests: number;
  statuses: Record<string, number>;
  /** The first response body seen for each non-2xx status. */
  samples: Record<string, string>;
  accepted: number;
  refused: number;
  serverErrors: number;
  networkErrors: number;
  wallMs: number;
  throughput: number;
  acceptedPerSec: number;
  latencyMs: ReturnType<typeof summarize>;
  gatewayCpuMs: Record<string, number>;
  gatewayCpuMsPerRequest: number;
  /** Share of the level's wall time that workerd's busiest thread was on a CPU (1 = that thread is the ceiling). */
  workerdBusiestThread: number;
  benchCpuMs: number;
  drainMs: number | null;
}

/** Issues `requests` requests with `concurrency` in flight, each on a keep-alive socket of its own. */
async function runLevel(
  gateway: Gateway,
  target: string,
  concurrency: number,
  requests: number,
  request: (agent: http.Agent, i: number) => http.RequestOptions,
  body: Buffer | null,
): Promise<Omit<LevelResult, "drainMs" | "build">> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const samples: Record<string, string> = {};
  let networkErrors = 0;
  let issued = 0;
  const one = (i: number) =>
    new Promise<number>((resolve) => {
      const req = http.request(request(agent, i), (res) => {
        const status = res.statusCode ?? 0;
        const keep = status >= 300 && samples[status] === undefined;
        let text = "";
        res.on("data", (d: Buffer) => {
          if (keep && text.length < 300) text += d.toString();
        });
        res.on("end", () => {
          if (keep) samples[status] = text.slice(0, 300);
          resolve(status);
        });
        res.on("error", () => resolve(-1));
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error("timeout")));
      req.on("error", () => resolve(-1));
      req.end(body ?? undefined);
    });
  const cpu0 = groupCpuMs(gateway.process.pid!);
  const threads0 = threadCpuMs(gateway.process.pid!, "workerd");
  const bench0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued < requests) {
        const i = issued++;
        const start = performance.now();
        const status = await one(i);
        latencies.push(performance.now() - start);
        if (status < 0) networkErrors += 1;
        else statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const benchCpu = process.cpuUsage(bench0);
  const gatewayCpuMs = diffCpu(groupCpuMs(gateway.process.pid!), cpu0);
  const busiestThreadMs = Math.max(0, ...Object.values(diffCpu(threadCpuMs(gateway.process.pid!, "workerd"), threads0)));
  agent.destroy();
  const ok = Object.entries(statuses).reduce((n, [s, c]) => n + (s === "202" || s === "200" ? c : 0), 0);
  const serverErrors = Object.entries(statuses).reduce((n, [s, c]) => n + (Number(s) >= 500 ? c : 0), 0);
  const cpuTotal = Object.values(gatewayCpuMs).reduce((a, b) => a + b, 0);
  return {
    target,
    concurrency,
    requests,
    statuses,
    samples,
    accepted: ok,
    refused: requests - ok - networkErrors,
    serverErrors,
    networkErrors,
    wallMs,
    throughput: (requests / wallMs) * 1000,
    acceptedPerSec: (ok / wallMs) * 1000,
    latencyMs: summarize(latencies),
    gatewayCpuMs,
    gatewayCpuMsPerRequest: cpuTotal / requests,
    workerdBusiestThread: busiestThreadMs / wallMs,
    benchCpuMs: (benchCpu.user + benchCpu.system) / 1000,
  };
}

/** Stats requests sent again after no answer (see getJson): a request lost under `wrangler dev`. */
let statsResent = 0;

async function adminStats(gateway: Gateway, admin: string) {
  return getJson<{ queue: { pending: number; leased: number }; runners: unknown[] }>(
    `${gateway.url}/api/v1/admin/stats`,
    { authorization: `Bearer ${admin}` },
    {
      onRetry: (attempt, err) => {
        statsResent += 1;
        console.warn(`admin/stats: no answer (${String(err).slice(0, 120)}); sending it again (attempt ${attempt + 1})`);
      },
    },
  );
}

async function stats(gateway: Gateway, admin: string) {
  return (await adminStats(gateway, admin)).queue;
}

/** Waits until the consumer has drained the queue; returns how long that took (null: not within 120 s). */
async function waitDrained(gateway: Gateway, admin: string): Promise<number | null> {
  const t0 = performance.now();
  while (performance.now() - t0 < 120_000) {
    const s = await stats(gateway, admin);
    if (s.pending === 0 && s.leased === 0) return performance.now() - t0;
    await sleep(100);
  }
  return null;
}

/** D1 through `wrangler d1 execute`; retried, since the running gateway may hold the SQLite lock for a moment. */
async function query<T>(gateway: Gateway, sql: string): Promise<T[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await gateway.query<T>(sql);
    } catch (err) {
      if (attempt >= 5) {
        console.warn(`D1 query failed: ${String(err).slice(0, 300)}`);
        return [];
      }
      await sleep(500 * attempt);
    }
  }
}

/** One gateway under test: a build (this checkout, or a baseline worktree) with its own state and consumer. */
interface Target {
  build: string;
  gateway: Gateway;
  admin: string;
  runnerToken: string;
  otterVersion: string;
  consumer?: StandInConsumer;
  submit: (agent: http.Agent, i: number) => http.RequestOptions;
  healthz: (agent: http.Agent) => http.RequestOptions;
}

async function startTarget(build: string, root: string, work: string, body: Buffer, shards?: number): Promise<Target> {
  const students = Array.from({ length: STUDENTS }, (_, i) => `student${i}`);
  const credentials = newCredentials(students);
  const tokens = students.map((s) => credentials.students[s]!);
  console.log(`starting gateway "${build}" (wrangler dev from ${root}, state in ${work}) …`);
  // EDX_URL on loopback: passback has no consumer secret configured, so it never posts; this makes
  // sure that even if it did, nothing leaves the machine.
  const gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { EDX_URL: "http://127.0.0.1:9", ...(shards ? { DISPATCHER_SHARDS: String(shards) } : {}) }, root });
  if (process.env.BENCH_GATEWAY_LOG) {
    const log = createWriteStream(`${process.env.BENCH_GATEWAY_LOG}.${build}`);
    gateway.process.stdout?.on("data", (d: Buffer) => log.write(d));
    gateway.process.stderr?.on("data", (d: Buffer) => log.write(d));
  }
  let uploaded: { otter_version: string };
  let consumer: StandInConsumer | undefined;
  try {
    uploaded = await configureAssignment(gateway.url, credentials.admin, {
      configFile: join(SAMPLE, "course-config.json"),
      course: "demo101",
      assignment: "sample",
      autograderZip: join(SAMPLE, "dist", "autograder.zip"),
      timeoutSeconds: 300,
    });
    consumer = WITH_CONSUMER ? await StandInConsumer.connect(gateway.url, credentials.runner, "bench-consumer", 64, uploaded.otter_version) : undefined;
  } catch (err) {
    // Not a target yet, so main's clean-up would not stop it: a stray wrangler would outlive the bench.
    await gateway.stop();
    throw err;
  }
  const { hostname, port } = new URL(gateway.url);
  return {
    build,
    gateway,
    admin: credentials.admin,
    runnerToken: credentials.runner,
    otterVersion: uploaded.otter_version,
    consumer,
    submit: (agent, i) => ({
      agent,
      host: hostname,
      port,
      path: "/api/v1/submissions",
      method: "POST",
      headers: { "content-type": "application/json", "content-length": body.length, authorization: `Bearer ${tokens[i % tokens.length]}` },
    }),
    healthz: (agent) => ({ agent, host: hostname, port, path: "/healthz", method: "GET" }),
  };
}

interface SplitResult {
  build: string;
  intake: Omit<LevelResult, "drainMs" | "build">;
  drainMs: number;
  drainPerSec: number;
  /** Stats requests sent again during the drain because no answer came (lost under `wrangler dev`). */
  statsResent: number;
  /** One stats request right after the drain: the staff view answers again. */
  statsAfterDrainMs: number;
}

/** Connected runners as the gateway sees them. */
async function runnersConnected(gateway: Gateway, admin: string): Promise<number> {
  return (await adminStats(gateway, admin)).runners.length;
}

/**
 * Enqueue and lease apart: with no runner connected every submission only goes into the queue; then
 * one consumer connects and the Dispatcher leases, takes results and records grades as fast as it can.
 */
async function splitRun(t: Target, body: Buffer): Promise<SplitResult> {
  t.consumer?.close();
  t.consumer = undefined;
  while ((await runnersConnected(t.gateway, t.admin)) > 0) await sleep(50);
  console.log(`${t.build}: ${SPLIT} submissions with no runner connected …`);
  const intake = await runLevel(t.gateway, "POST (enqueue only)", 50, SPLIT, t.submit, body);
  const resent0 = statsResent;
  const t0 = performance.now();
  t.consumer = await StandInConsumer.connect(t.gateway.url, t.runnerToken, "bench-consumer", 64, t.otterVersion);
  // Not drained within waitDrained's 120 s: no figure rather than a wrong one.
  const total = (await waitDrained(t.gateway, t.admin)) === null ? Number.NaN : performance.now() - t0;
  const resent = statsResent - resent0;
  const t1 = performance.now();
  await stats(t.gateway, t.admin);
  const statsAfterDrainMs = performance.now() - t1;
  return { build: t.build, intake, drainMs: total, drainPerSec: (intake.accepted / total) * 1000, statsResent: resent, statsAfterDrainMs };
}

/** A detached git worktree of `ref` sharing this checkout's node_modules (same wrangler, same libraries). */
async function baselineCheckout(ref: string, work: string): Promise<string> {
  const dir = join(work, "baseline");
  execFileSync("git", ["worktree", "add", "--detach", dir, ref], { cwd: ROOT, stdio: "ignore" });
  // Workspaces may hold their own node_modules (npm nests a version that differs from the root's).
  for (const sub of ["", "gateway", "shared", "runner"]) {
    if (existsSync(join(ROOT, sub, "node_modules"))) await symlink(join(ROOT, sub, "node_modules"), join(dir, sub, "node_modules"));
  }
  return dir;
}

function currentBuild(): string {
  const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT }).toString().trim();
  const dirty = execFileSync("git", ["status", "--porcelain", "--", "gateway", "shared"], { cwd: ROOT }).toString().trim() !== "";
  return `${head}${dirty ? "+changes" : ""}`;
}

async function main() {
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-intake-"));
  const targets: Target[] = [];
  let baselineDir: string | undefined;
  try {
    const nb = JSON.parse(await readFile(join(SAMPLE, "submissions", "full.ipynb"), "utf8"));
    const body = Buffer.from(JSON.stringify({ nb }));
    if (SHARD_COUNTS.length > 0) {
      for (const n of SHARD_COUNTS) targets.push(await startTarget(`${currentBuild()} ${n} shard${n > 1 ? "s" : ""}`, ROOT, join(work, `shards-${n}`), body, n));
    } else targets.push(await startTarget(currentBuild(), ROOT, join(work, "current"), body));
    if (BASELINE) {
      baselineDir = await baselineCheckout(BASELINE, work);
      const ref = execFileSync("git", ["rev-parse", "--short", BASELINE], { cwd: ROOT }).toString().trim();
      targets.push(await startTarget(`baseline ${ref}`, baselineDir, join(work, "baseline-state"), body));
    }

    // Warm up: the first requests compile the Worker's code paths and open D1/R2/DO.
    for (const t of targets) {
      await runLevel(t.gateway, "warmup", 10, 200, t.submit, body);
      if (t.consumer) await waitDrained(t.gateway, t.admin);
    }

    const results: LevelResult[] = [];
    // The platform's floor: the same HTTP stack (wrangler's proxy → workerd → Hono) with no work.
    for (const t of targets) results.push({ build: t.build, ...(await runLevel(t.gateway, "GET /healthz", 50, 2000, t.healthz, null)), drainMs: null });
    for (const [index, { concurrency, requests }] of LEVELS.entries()) {
      // Rotate which target goes first, so none always meets the machine warmer or busier.
      const order = targets.map((_, i) => targets[(i + index) % targets.length]!);
      for (const t of order) {
        console.log(`${t.build}: POST /api/v1/submissions: concurrency ${concurrency}, ${requests} requests …`);
        const r = await runLevel(t.gateway, "POST /api/v1/submissions", concurrency, requests, t.submit, body);
        const drainMs = t.consumer ? await waitDrained(t.gateway, t.admin) : null;
        results.push({ build: t.build, ...r, drainMs });
      }
    }
    const splits: SplitResult[] = [];
    if (SPLIT > 0) for (const t of targets) splits.push(await splitRun(t, body));
    results.sort((a, b) => a.concurrency - b.concurrency || a.target.localeCompare(b.target) || targets.findIndex((t) => t.build === a.build) - targets.findIndex((t) => t.build === b.build));

    console.log(`\nIntake benchmark (${new Date().toISOString()}), ${machine().cores} cores, load ${machine().loadavg}, Node ${process.version}; body ${body.length} B; ${STUDENTS} students; consumer ${WITH_CONSUMER ? "on (capacity 64, grades at once)" : "off"}`);
    console.log("Figures are noisy on a shared 2-core machine: the load generator, wrangler and workerd share the cores. Repeat a run when a figure looks off.\n");
    console.log(
      table(
        ["build", "target", "conc", "requests", "accepted", "refused", "5xx", "net err", "req/s", "accepted/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "gw CPU ms/req", "workerd top thread", "drain ms"],
        results.map((r) => [
          r.build,
          r.target,
          r.concurrency,
          r.requests,
          r.accepted,
          r.refused === 0 ? 0 : `${r.refused} (${Object.entries(r.statuses).filter(([s]) => s !== "202" && s !== "200").map(([s, n]) => `${s}:${n}`).join(" ")})`,
          r.serverErrors,
          r.networkErrors,
          fmt(r.throughput, 0),
          fmt(r.acceptedPerSec, 0),
          fmt(r.latencyMs.p50),
          fmt(r.latencyMs.p90),
          fmt(r.latencyMs.p99),
          fmt(r.latencyMs.max),
          fmt(r.gatewayCpuMsPerRequest, 2),
          `${fmt(r.workerdBusiestThread * 100, 0)} %`,
          r.drainMs === null ? "-" : fmt(r.drainMs, 0),
        ]),
      ),
    );
    if (splits.length) {
      console.log(`\nThe Dispatcher's two halves apart (${SPLIT} submissions, concurrency 50): enqueue with no runner connected, then one consumer (capacity 64) drains the queue:`);
      console.log(
        table(
          ["build", "enqueue-only accepted/s", "p50 ms", "p99 ms", "gw CPU ms/req", "workerd top thread", "drain jobs/s", "drain s", "stats re-sent", "stats after drain ms"],
          splits.map((x) => [x.build, fmt(x.intake.acceptedPerSec, 0), fmt(x.intake.latencyMs.p50), fmt(x.intake.latencyMs.p99), fmt(x.intake.gatewayCpuMsPerRequest, 2), `${fmt(x.intake.workerdBusiestThread * 100, 0)} %`, fmt(x.drainPerSec, 0), fmt(x.drainMs / 1000, 1), x.statsResent, fmt(x.statsAfterDrainMs, 0)]),
        ),
      );
    }
    console.log("\ngateway CPU by process over each level (ms):");
    for (const r of results) console.log(`  ${r.build} ${r.target} c=${r.concurrency}: ${Object.entries(r.gatewayCpuMs).map(([k, v]) => `${k} ${v}`).join(", ")}; bench client ${fmt(r.benchCpuMs, 0)}`);
    const perBuild = [];
    for (const t of targets) {
      const d1 = await query<{ status: string; n: number }>(t.gateway, "SELECT status, COUNT(*) AS n FROM submissions GROUP BY status");
      const events = await query<{ state: string; n: number }>(t.gateway, "SELECT state, COUNT(*) AS n FROM submission_events GROUP BY state");
      // Why refused submissions failed (the gateway writes the enqueue error into the event's detail).
      const failures = await query<{ detail: string; n: number }>(t.gateway, "SELECT substr(detail, 1, 300) AS detail, COUNT(*) AS n FROM submission_events WHERE state = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 5");
      console.log(`\n${t.build}: D1 submissions by status: ${d1.map((r) => `${r.status} ${r.n}`).join(", ")}; events: ${events.map((r) => `${r.state} ${r.n}`).join(", ")}`);
      for (const f of failures) console.log(`  failed ×${f.n}: ${f.detail}`);
      if (t.consumer) console.log(`  consumer: ${JSON.stringify(t.consumer.counts)}`);
      perBuild.push({ build: t.build, d1, events, failures, consumer: t.consumer?.counts ?? null });
    }
    for (const r of results) for (const [status, text] of Object.entries(r.samples)) console.log(`${r.build} c=${r.concurrency} first ${status} body: ${text.replace(/\s+/g, " ")}`);
    const best = results.filter((r) => r.build === targets[0]!.build && r.target.startsWith("POST") && r.concurrency > 1);
    const meets = best.some((r) => r.acceptedPerSec >= 1000 && r.latencyMs.p99 < 100 && r.serverErrors === 0);
    console.log(`\ntarget (≥ 1,000 accepted/s with p99 < 100 ms and zero 5xx): ${meets ? "met" : "NOT met"} by ${targets[0]!.build} at concurrency ${best.map((r) => r.concurrency).join("/")}`);

    const file = await writeResults("intake", { at: new Date().toISOString(), machine: machine(), bodyBytes: body.length, students: STUDENTS, levels: results, splits, builds: perBuild });
    console.log(`results: ${file}`);
  } finally {
    for (const t of targets) {
      t.consumer?.close();
      await t.gateway.stop();
    }
    if (baselineDir) execFileSync("git", ["worktree", "remove", "--force", baselineDir], { cwd: ROOT, stdio: "ignore" });
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
