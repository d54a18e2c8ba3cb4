/**
 * Intake benchmark: how many submissions per second the gateway accepts (`POST /api/v1/submissions`
 * with the sample notebook), and at what latency, at concurrency 1, 50 and 200.
 *
 * A gateway (its own temp state), the sample assignment configured, and a
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
 *   BENCH_HOSTS=workerd,wrangler          how each gateway runs (default both, side by side): `workerd`
 *                                         is the bundled Worker on Miniflare alone (what deployed Workers
 *                                         run, without wrangler's dev proxy and per-request logging);
 *                                         `wrangler` is `wrangler dev`, as developers run it
 *   BENCH_PROFILE=1                       V8 CPU profile of each workerd gateway over every POST level
 *                                         (bench/cpu-profile.ts): self time per submission by source
 *                                         file / package and by function, and the .cpuprofile files
 *
 * The issue's target, per gateway: accepted/s with the consumer draining ≥ 0.6 × the same gateway's
 * `GET /healthz`/s (the platform's floor), with zero 5xx.
 */
import http from "node:http";
import { createWriteStream, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Gateway, ROOT, configureAssignment, freePort, newCredentials, startGateway } from "../scripts/local-stack.js";
import { StandInConsumer } from "./support.js";
import { CpuProfiler, type ProfileSummary, saveProfile, summarizeProfile } from "./cpu-profile.js";
import { TraceMap, originalPositionFor } from "@jridgewell/trace-mapping";
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
const HOSTS = (process.env.BENCH_HOSTS ?? "workerd,wrangler").split(",").filter(Boolean) as Array<"workerd" | "wrangler">;
if (HOSTS.length === 0 || HOSTS.some((h) => h !== "workerd" && h !== "wrangler")) throw new Error("BENCH_HOSTS lists workerd and/or wrangler");
const TARGET_RATIO = 0.6;
const PROFILE = process.env.BENCH_PROFILE === "1";
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
  /** The same, counted until the queue and the passback outbox are drained (work the level caused but did not finish). */
  gatewayCpuMsPerRequestWithDrain?: number;
  /** Where the level's CPU count started: to count on through the drain. */
  cpuAtStart: Record<string, number>;
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
      const sent = performance.now();
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
      req.on("error", (err) => {
        samples["network error"] ??= `${String(err)} after ${fmt(performance.now() - sent, 0)} ms (request ${i})`;
        resolve(-1);
      });
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
    cpuAtStart: cpu0,
    workerdBusiestThread: busiestThreadMs / wallMs,
    benchCpuMs: (benchCpu.user + benchCpu.system) / 1000,
  };
}

/** Stats requests sent again after no answer (see getJson): a request lost under `wrangler dev`. */
let statsResent = 0;

async function adminStats(gateway: Gateway, admin: string) {
  return getJson<{ queue: { pending: number; leased: number }; runners: unknown[]; passback_backlog: Record<string, number> }>(
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

/**
 * Waits until the consumer has drained the queue and the passback outbox has settled every grade
 * (its work belongs to the submissions too); returns how long that took (null: not within 120 s).
 */
async function waitDrained(gateway: Gateway, admin: string): Promise<number | null> {
  const t0 = performance.now();
  while (performance.now() - t0 < 120_000) {
    const s = await adminStats(gateway, admin);
    const outbox = (s.passback_backlog.pending ?? 0) + (s.passback_backlog.retrying ?? 0);
    if (s.queue.pending === 0 && s.queue.leased === 0 && outbox === 0) return performance.now() - t0;
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

/** Accepted per second counted until the queue and outbox were drained: what the gateway keeps up with. */
function sustainedPerSec(r: LevelResult): number {
  return r.drainMs === null ? r.acceptedPerSec : (r.accepted / (r.wallMs + r.drainMs)) * 1000;
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
  /** Set for a profiled workerd gateway: its inspector and the bundle the profile's frames point into. */
  profiling?: { inspectorPort: number; bundle: string };
}

async function startTarget(build: string, root: string, work: string, body: Buffer, host: "workerd" | "wrangler", shards?: number): Promise<Target> {
  const students = Array.from({ length: STUDENTS }, (_, i) => `student${i}`);
  const credentials = newCredentials(students);
  const tokens = students.map((s) => credentials.students[s]!);
  console.log(`starting gateway "${build}" (${host === "wrangler" ? "wrangler dev" : "Miniflare/workerd"} from ${root}, state in ${work}) …`);
  // EDX_URL on loopback: passback has no consumer secret configured, so it never posts; this makes
  // sure that even if it did, nothing leaves the machine.
  const inspectorPort = PROFILE && host === "workerd" ? await freePort() : undefined;
  const gateway = await startGateway({ stateDir: join(work, "state"), credentials, inspectorPort, vars: { EDX_URL: "http://127.0.0.1:9", ...(shards ? { DISPATCHER_SHARDS: String(shards) } : {}) }, root, host });
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
    profiling: inspectorPort ? { inspectorPort, bundle: join(work, "state", "bundle", "index.js") } : undefined,
  };
}

/** Maps a profile's frames in the bundle back to the gateway's source files and function names. */
async function sourceResolver(bundle: string) {
  const map = new TraceMap(await readFile(`${bundle}.map`, "utf8"));
  return (frame: { functionName: string; url: string; lineNumber: number; columnNumber?: number }) => {
    if (!frame.url.endsWith("index.js")) return { url: frame.url, name: frame.functionName };
    const pos = originalPositionFor(map, { line: frame.lineNumber + 1, column: frame.columnNumber ?? 0 });
    return { url: pos.source ?? frame.url, name: frame.functionName || pos.name || "" };
  };
}

interface ProfiledLevel {
  build: string;
  concurrency: number;
  accepted: number;
  summary: ProfileSummary;
}

function printProfile(p: ProfiledLevel) {
  const per = (ms: number) => fmt(ms / p.accepted, 3);
  console.log(`\nCPU profile of ${p.build}, c=${p.concurrency}: ${fmt(p.summary.totalMs, 0)} ms of JavaScript-thread samples (idle excluded) = ${per(p.summary.totalMs)} ms per accepted submission`);
  console.log(table(["self time by place", "ms/submission", "share"], p.summary.byPlace.slice(0, 18).map((x) => [x.place, per(x.ms), `${fmt((x.ms / p.summary.totalMs) * 100, 1)} %`])));
  console.log(table(["self time by function", "ms/submission", "share"], p.summary.byFunction.slice(0, 30).map((x) => [x.fn, per(x.ms), `${fmt((x.ms / p.summary.totalMs) * 100, 1)} %`])));
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
    if (BASELINE) baselineDir = await baselineCheckout(BASELINE, work);
    for (const host of HOSTS) {
      const label = (build: string) => (HOSTS.length > 1 ? `${build} @${host}` : build);
      if (SHARD_COUNTS.length > 0) {
        for (const n of SHARD_COUNTS) targets.push(await startTarget(label(`${currentBuild()} ${n} shard${n > 1 ? "s" : ""}`), ROOT, join(work, `${host}-shards-${n}`), body, host, n));
      } else targets.push(await startTarget(label(currentBuild()), ROOT, join(work, `${host}-current`), body, host));
      if (baselineDir) {
        const ref = execFileSync("git", ["rev-parse", "--short", BASELINE!], { cwd: ROOT }).toString().trim();
        targets.push(await startTarget(label(`baseline ${ref}`), baselineDir, join(work, `${host}-baseline-state`), body, host));
      }
    }

    // Warm up: the first requests compile the Worker's code paths and open D1/R2/DO.
    for (const t of targets) {
      await runLevel(t.gateway, "warmup", 10, 200, t.submit, body);
      if (t.consumer) await waitDrained(t.gateway, t.admin);
    }

    const results: LevelResult[] = [];
    const profiles: ProfiledLevel[] = [];
    // The platform's floor: the same HTTP stack (wrangler's proxy → workerd → Hono) with no work.
    for (const t of targets) results.push({ build: t.build, ...(await runLevel(t.gateway, "GET /healthz", 50, 2000, t.healthz, null)), drainMs: null });
    for (const [index, { concurrency, requests }] of LEVELS.entries()) {
      // Rotate which target goes first, so none always meets the machine warmer or busier.
      const order = targets.map((_, i) => targets[(i + index) % targets.length]!);
      for (const t of order) {
        console.log(`${t.build}: POST /api/v1/submissions: concurrency ${concurrency}, ${requests} requests …`);
        const profiler = t.profiling ? await CpuProfiler.attach(t.profiling.inspectorPort, "otter-edge") : undefined;
        await profiler?.start();
        const r = await runLevel(t.gateway, "POST /api/v1/submissions", concurrency, requests, t.submit, body);
        const drainMs = t.consumer ? await waitDrained(t.gateway, t.admin) : null;
        r.gatewayCpuMsPerRequestWithDrain = Object.values(diffCpu(groupCpuMs(t.gateway.process.pid!), r.cpuAtStart)).reduce((a, b) => a + b, 0) / requests;
        if (profiler) {
          const profile = await profiler.stop();
          profiler.close();
          const file = join(ROOT, "bench", "results", `intake-${t.build.replace(/\W+/g, "_")}-c${concurrency}.cpuprofile`);
          await saveProfile(file, profile);
          // The bundle's source map goes with it: the gateway's state directory is removed at the end.
          await copyFile(`${t.profiling!.bundle}.map`, `${file}.map`);
          profiles.push({ build: t.build, concurrency, accepted: r.accepted, summary: summarizeProfile(profile, await sourceResolver(t.profiling!.bundle)) });
          console.log(`  profile: ${file}`);
        }
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
        ["build", "target", "conc", "requests", "accepted", "refused", "5xx", "net err", "req/s", "accepted/s", "sustained/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "gw CPU ms/req", "… with drain", "workerd top thread", "drain ms"],
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
          r.drainMs === null ? "-" : fmt(sustainedPerSec(r), 0),
          fmt(r.latencyMs.p50),
          fmt(r.latencyMs.p90),
          fmt(r.latencyMs.p99),
          fmt(r.latencyMs.max),
          fmt(r.gatewayCpuMsPerRequest, 2),
          r.gatewayCpuMsPerRequestWithDrain === undefined ? "-" : fmt(r.gatewayCpuMsPerRequestWithDrain, 2),
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
    for (const p of profiles) printProfile(p);
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
    console.log(`\ntarget: accepted/s${WITH_CONSUMER ? " with the consumer draining (sustained: counted until queue and outbox are drained)" : " (NO consumer: not the target's condition)"} ≥ ${TARGET_RATIO} × the same gateway's GET /healthz/s, zero 5xx`);
    for (const t of targets) {
      const floor = results.find((r) => r.build === t.build && r.target === "GET /healthz")!;
      for (const r of results.filter((x) => x.build === t.build && x.target.startsWith("POST") && x.concurrency > 1)) {
        const ratio = sustainedPerSec(r) / floor.acceptedPerSec;
        const met = WITH_CONSUMER && ratio >= TARGET_RATIO && r.serverErrors === 0;
        console.log(`  ${t.build} c=${r.concurrency}: ${fmt(sustainedPerSec(r), 0)} / ${fmt(floor.acceptedPerSec, 0)} = ${fmt(ratio, 2)}, 5xx ${r.serverErrors}, connections dropped ${r.networkErrors}: ${met ? "met" : "NOT met"}`);
      }
    }
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
