/**
 * Intake side by side: otter-edge's gateway and otter-service 2.2.8 (data-8's service, from PyPI,
 * running its real handler), the same notebook posted to each at the same concurrency levels, by the
 * same client, many students round robin. Loopback only.
 *
 * - otter-edge: the gateway on Miniflare/workerd alone (default) or under `wrangler dev`
 *   (BENCH_HOST; startGateway, as bench/intake.ts), the sample
 *   assignment configured, its production rate limits on (30 submissions a minute per student, 6,000
 *   per course), and a protocol-level stand-in consumer (bench/support.ts) that grades every lease at
 *   once, so the Dispatcher does its per-submission work (enqueue → lease → record) during the run.
 *   POST /api/v1/submissions {"nb": …} with a student's bearer token; accepted = 202.
 * - otter-service: `otter_service.otter_nb:main` from the pinned venv bench/otter-service/setup.sh
 *   makes, started by bench/otter-service/launch.py (its one patch: Tornado's listen on 127.0.0.1 at a
 *   free port instead of every interface at 10101). JupyterHub's API and Cloud Firestore are stand-ins on loopback
 *   (bench/otter-service/standins.py); grading fails at its first step (no GitHub App credentials), in
 *   the background task the handler spawns, which logs that failure to the stand-in Firestore.
 *   POST /services/otter_grade/ {"nb": …} with `Authorization: token <student's hub token>`;
 *   accepted = 200 with the "Your submission is being graded" text (otter-service answers 200 with an
 *   empty body when its handler fails, so the status alone does not tell).
 *   See bench/otter-service/README.md.
 *
 *   npm run bench:intake-vs-otter-service
 *   BENCH_LEVELS=1:200,50:1000       concurrency:requests, comma separated (default shown)
 *   BENCH_WARMUP=10:100              concurrency:requests sent to each service before the levels
 *   BENCH_STUDENTS=N                 students, round robin (default: enough that none sends more than
 *                                    25 of the whole run, under otter-edge's 30/min per-student limit)
 *   BENCH_RATE_LIMITS=off            otter-edge without its submission rate limits (default on)
 *   BENCH_HOST=wrangler              otter-edge under `wrangler dev` (its dev proxy relays and logs every
 *                                    request) instead of workerd alone (default `workerd`, like a
 *                                    deployed Worker: no proxy in front, as otter-service has none)
 *   BENCH_OTTER_SERVICE_AUTH=header  otter-service identifies the student by X-Otter-User instead of a
 *                                    hub token (what its code says production does; default token)
 *   BENCH_OTTER_SERVICE_VERBOSE=1    VERBOSE_LOGGING=True: otter-service also writes its info log lines
 *                                    to Firestore, 3–4 more writes a submission (default off)
 *   BENCH_LOGS=DIR                   keep wrangler's, otter-service's and the stand-ins' output there
 *   OTTER_SERVICE_VENV=DIR           the otter-service venv (default .otter-edge/otter-service-venv)
 */
import http from "node:http";
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync, readdirSync, rmSync, type WriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { ROOT, configureAssignment, freePort, newCredentials, run, startGateway, stopProcess, waitFor } from "../scripts/local-stack.js";
import { StandInConsumer } from "./support.js";
import { fmt, getJson, groupCpuMs, machine, sleep, summarize, table, writeResults } from "./lib.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const OS_DIR = join(ROOT, "bench", "otter-service");
const OS_VENV = process.env.OTTER_SERVICE_VENV ?? join(ROOT, ".otter-edge", "otter-service-venv");
const OS_PYTHON = join(OS_VENV, "bin", "python");
const OS_PREFIX = "/services/otter_grade/";
const OS_ENVIRONMENT = "otter-service-bench";
const OS_ACCEPTED_TEXT = "Your submission is being graded";

function levels(spec: string, name: string) {
  return spec.split(",").map((s) => {
    const [c, n] = s.split(":").map(Number);
    if (!c || !n) throw new Error(`${name} entry "${s}" is not concurrency:requests`);
    return { concurrency: c, requests: n };
  });
}
const LEVELS = levels(process.env.BENCH_LEVELS ?? "1:200,50:1000", "BENCH_LEVELS");
const WARMUP = levels(process.env.BENCH_WARMUP ?? "10:100", "BENCH_WARMUP")[0]!;
const RATE_LIMITS = process.env.BENCH_RATE_LIMITS === "off" ? "off" : "on";
const HOST = process.env.BENCH_HOST === "wrangler" ? "wrangler" : "workerd";
const PER_SERVICE = WARMUP.requests + LEVELS.reduce((n, l) => n + l.requests, 0);
/** Per student over the whole run, under the gateway's 30 a minute (wrangler.toml SUBMIT_LIMIT_USER). */
const PER_STUDENT_BUDGET = 25;
const STUDENTS = Number(process.env.BENCH_STUDENTS ?? Math.max(100, Math.ceil(PER_SERVICE / PER_STUDENT_BUDGET)));
const OS_AUTH = process.env.BENCH_OTTER_SERVICE_AUTH === "header" ? "header" : "token";
const OS_VERBOSE = process.env.BENCH_OTTER_SERVICE_VERBOSE === "1";
const REQUEST_TIMEOUT_MS = 30_000;
const DRAIN_TIMEOUT_MS = 120_000;

/** One service under test, as the level runner sees it. */
interface Service {
  name: "otter-edge" | "otter-service";
  /** Process group whose CPU is the service's: wrangler + workerd, or otter-service's Python. */
  pgid: number;
  /** Process group of the helpers that only exist for the bench on the service's side (stand-ins), if any. */
  helperPgid?: number;
  request: (agent: http.Agent, i: number) => http.RequestOptions;
  accepted: (status: number, body: string) => boolean;
  /** Waits until the service's work behind the submissions accepted so far is done; ms, or null past the deadline. */
  drain: (acceptedSoFar: number) => Promise<number | null>;
  acceptedSoFar: number;
}

interface LevelResult {
  service: Service["name"];
  concurrency: number;
  requests: number;
  accepted: number;
  /** Answers that were not an acceptance, by status ("200 empty": otter-service's silent failure). */
  refused: Record<string, number>;
  samples: Record<string, string>;
  serverErrors: number;
  networkErrors: number;
  wallMs: number;
  acceptedPerSec: number;
  latencyMs: ReturnType<typeof summarize>;
  serviceCpuMsPerRequest: number;
  helperCpuMsPerRequest: number | null;
  benchCpuMsPerRequest: number;
  drainMs: number | null;
}

const cpuOf = (pgid: number) => Object.values(groupCpuMs(pgid)).reduce((a, b) => a + b, 0);

/** `requests` POSTs of `body`, `concurrency` in flight, each worker on a keep-alive socket of its own. */
async function runLevel(s: Service, concurrency: number, requests: number, body: Buffer): Promise<LevelResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const latencies: number[] = [];
  const refused: Record<string, number> = {};
  const samples: Record<string, string> = {};
  let accepted = 0;
  let serverErrors = 0;
  let networkErrors = 0;
  let issued = 0;
  const one = (i: number) =>
    new Promise<{ status: number; text: string }>((resolve) => {
      const req = http.request(s.request(agent, i), (res) => {
        let text = "";
        res.on("data", (d: Buffer) => {
          if (text.length < 300) text += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
        res.on("error", () => resolve({ status: -1, text: "" }));
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error("timeout")));
      req.on("error", () => resolve({ status: -1, text: "" }));
      req.end(body);
    });
  const cpu0 = cpuOf(s.pgid);
  const helper0 = s.helperPgid ? cpuOf(s.helperPgid) : 0;
  const bench0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued < requests) {
        const i = issued++;
        const start = performance.now();
        const { status, text } = await one(i);
        latencies.push(performance.now() - start);
        if (status < 0) networkErrors += 1;
        else if (s.accepted(status, text)) accepted += 1;
        else {
          const key = status === 200 && text === "" ? "200 empty" : String(status);
          refused[key] = (refused[key] ?? 0) + 1;
          if (status >= 500) serverErrors += 1;
          samples[key] ??= text.slice(0, 300);
        }
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const bench = process.cpuUsage(bench0);
  const serviceCpu = cpuOf(s.pgid) - cpu0;
  const helperCpu = s.helperPgid ? cpuOf(s.helperPgid) - helper0 : null;
  agent.destroy();
  s.acceptedSoFar += accepted;
  const drainMs = await s.drain(s.acceptedSoFar);
  return {
    service: s.name,
    concurrency,
    requests,
    accepted,
    refused,
    samples,
    serverErrors,
    networkErrors,
    wallMs,
    acceptedPerSec: (accepted / wallMs) * 1000,
    latencyMs: summarize(latencies),
    serviceCpuMsPerRequest: serviceCpu / requests,
    helperCpuMsPerRequest: helperCpu === null ? null : helperCpu / requests,
    benchCpuMsPerRequest: (bench.user + bench.system) / 1000 / requests,
    drainMs,
  };
}

/** A child's output copied to a file (when BENCH_LOGS is set), its last lines kept for error messages, and lines counted by pattern. */
class Output {
  private tail: string[] = [];
  readonly counts: Record<string, number> = {};
  readonly first: Record<string, string> = {};
  private file?: WriteStream;

  constructor(
    private readonly child: ChildProcess,
    name: string,
    private readonly patterns: Record<string, RegExp> = {},
  ) {
    if (process.env.BENCH_LOGS) this.file = createWriteStream(join(process.env.BENCH_LOGS, `${name}.log`));
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      if (this.file) stream.on("data", (d: Buffer) => this.file!.write(d));
      createInterface({ input: stream }).on("line", (line) => this.line(line));
    }
  }

  private waiters: Array<(line: string) => boolean> = [];

  /** The first line from now on that matches `re`, parsed as JSON; rejects when the child exits first or after `timeoutMs`. */
  json<T>(re: RegExp, what: string, timeoutMs = 60_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: no line matching ${re} within ${timeoutMs / 1000} s\n${this.last()}`)), timeoutMs);
      this.child.once("exit", (code) => {
        clearTimeout(timer);
        // The child's last lines may still be on their way.
        setTimeout(() => reject(new Error(`${what} exited (${code})\n${this.last()}`)), 200);
      });
      this.waiters.push((line) => {
        if (!re.test(line)) return false;
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line) as T);
        } catch {
          reject(new Error(`${what}: expected a JSON line, got ${line}`));
        }
        return true;
      });
    });
  }

  private line(line: string) {
    this.waiters = this.waiters.filter((w) => !w(line));
    this.tail.push(line);
    if (this.tail.length > 50) this.tail.shift();
    for (const [key, re] of Object.entries(this.patterns)) {
      if (!re.test(line)) continue;
      this.counts[key] = (this.counts[key] ?? 0) + 1;
      this.first[key] ??= line.slice(0, 400);
    }
  }

  last(): string {
    return this.tail.join("\n");
  }
}

// ---------------------------------------------------------------- otter-edge

async function startOtterEdge(work: string, students: string[]) {
  const credentials = newCredentials(students);
  console.log(`starting otter-edge (${HOST === "wrangler" ? "wrangler dev" : "Miniflare/workerd"}, rate limits ${RATE_LIMITS}) …`);
  // EDX_URL on loopback: passback has no consumer secret configured, so it never posts; even if it did, nothing leaves the machine.
  const gateway = await startGateway({ stateDir: join(work, "edge-state"), credentials, vars: { EDX_URL: "http://127.0.0.1:9", SUBMIT_RATE_LIMITS: RATE_LIMITS }, host: HOST });
  if (process.env.BENCH_LOGS) new Output(gateway.process, "wrangler");
  let consumer: StandInConsumer;
  try {
    const uploaded = await configureAssignment(gateway.url, credentials.admin, {
      configFile: join(SAMPLE, "course-config.json"),
      course: "demo101",
      assignment: "sample",
      autograderZip: join(SAMPLE, "dist", "autograder.zip"),
      timeoutSeconds: 300,
    });
    consumer = await StandInConsumer.connect(gateway.url, credentials.runner, "bench-consumer", 64, uploaded.otter_version);
  } catch (err) {
    await gateway.stop();
    throw err;
  }
  const { hostname, port } = new URL(gateway.url);
  const tokens = students.map((s) => credentials.students[s]!);
  const stats = () => getJson<{ queue: { pending: number; leased: number } }>(`${gateway.url}/api/v1/admin/stats`, { authorization: `Bearer ${credentials.admin}` });
  const service = (body: Buffer): Service => ({
    name: "otter-edge",
    pgid: gateway.process.pid!,
    request: (agent, i) => ({
      agent,
      host: hostname,
      port,
      path: "/api/v1/submissions",
      method: "POST",
      headers: { "content-type": "application/json", "content-length": body.length, authorization: `Bearer ${tokens[i % tokens.length]}` },
    }),
    accepted: (status) => status === 202,
    // Every accepted submission leased and its grade recorded: the queue is empty again.
    drain: async () => {
      const t0 = performance.now();
      while (performance.now() - t0 < DRAIN_TIMEOUT_MS) {
        const { queue } = await stats();
        if (queue.pending === 0 && queue.leased === 0) return performance.now() - t0;
        await sleep(100);
      }
      return null;
    },
    acceptedSoFar: 0,
  });
  return { gateway, consumer, service };
}

// ---------------------------------------------------------------- otter-service

interface StandInStats {
  hubUserLookups: number;
  hubUserUnknownToken: number;
  hubAuthStateLookups: number;
  hubAuthStateRefused: number;
  firestoreCommits: number;
  firestoreWrites: Record<string, number>;
  firestoreErrorDocuments: number;
  firestoreFirstErrorMessage: string | null;
  firestoreFirstMessage: Record<string, string>;
}

async function startOtterService(work: string, students: string[]) {
  console.log("otter-service venv: bash bench/otter-service/setup.sh …");
  await run("bash", [join(OS_DIR, "setup.sh")]);
  // The stand-in hub's tokens, one per student, in student order.
  const tokens = students.map((_, i) => `hub-${i}-${randomBytes(12).toString("base64url")}`);
  const hubTokens = Object.fromEntries(tokens.map((t, i) => [t, students[i]!]));
  const tokensFile = join(work, "hub-tokens.json");
  await writeFile(tokensFile, JSON.stringify(hubTokens), { mode: 0o600 });
  const serviceToken = `svc-${randomBytes(18).toString("base64url")}`;

  const standIns = spawn(OS_PYTHON, [join(OS_DIR, "standins.py"), "--tokens", tokensFile, "--service-token", serviceToken], {
    cwd: work,
    env: { PATH: process.env.PATH, HOME: work, LANG: "C.UTF-8" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const standInsOut = new Output(standIns, "standins");
  const children: ChildProcess[] = [standIns];
  const stopAll = async () => {
    // otter-service first: its shutdown writes four log entries to the (stand-in) Firestore, and with
    // nothing listening the client would retry each for a minute.
    for (const c of [...children].reverse()) await stopProcess(c);
  };
  try {
    const ports = await standInsOut.json<{ hub: number; firestore: number }>(/^\{"hub"/, "stand-ins");
    const port = await freePort();
    const hubApi = `http://127.0.0.1:${ports.hub}/hub/api`;
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: work,
      LANG: "C.UTF-8",
      OTTER_SERVICE_PORT: String(port),
      ENVIRONMENT: OS_ENVIRONMENT,
      GCP_PROJECT_ID: "otter-service-bench",
      POST_GRADE: "false",
      EDX_URL: "127.0.0.1:9",
      // As JupyterHub sets them for a managed service named otter_grade.
      JUPYTERHUB_API_URL: hubApi,
      JUPYTERHUB_API_TOKEN: serviceToken,
      JUPYTERHUB_CLIENT_ID: "service-otter_grade",
      JUPYTERHUB_SERVICE_NAME: "otter_grade",
      JUPYTERHUB_SERVICE_PREFIX: OS_PREFIX,
      JUPYTERHUB_BASE_URL: "/",
      JUPYTERHUB_HOST: "",
      JUPYTERHUB_OAUTH_ACCESS_SCOPES: JSON.stringify(["access:services!service=otter_grade"]),
      JUPYTERHUB_OAUTH_CALLBACK_URL: `${OS_PREFIX}oauth_callback`,
      FIRESTORE_EMULATOR_HOST: `127.0.0.1:${ports.firestore}`,
      ...(OS_VERBOSE ? { VERBOSE_LOGGING: "True" } : {}),
    };
    console.log(`starting otter-service 2.2.8 on 127.0.0.1:${port} (stand-in hub :${ports.hub}, stand-in Firestore :${ports.firestore}) …`);
    const child = spawn(OS_PYTHON, [join(OS_DIR, "launch.py")], { cwd: work, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    children.push(child);
    const out = new Output(child, "otter-service", {
      // Its own fallbacks when a Firestore write fails, Tornado's errors, and tracebacks.
      firestoreWriteFailed: /^\[otter-service:(error|warning)\]/,
      tornadoError: /^\[E /,
      traceback: /^Traceback/,
      noHubUser: /No Hub user identified/,
    });
    const started = await out.json<{ listening: string; module: string; versions: Record<string, string> }>(/^\{"listening"/, "otter-service");
    const url = `http://127.0.0.1:${port}${OS_PREFIX}`;
    await waitFor(async () => (await fetch(url).catch(() => null))?.ok === true, 60_000, () => `otter-service did not answer GET ${url}:\n${out.last()}`, () => child.exitCode !== null);
    const stats = () => getJson<StandInStats>(`http://127.0.0.1:${ports.hub}/bench/stats`, {});
    const service = (body: Buffer): Service => ({
      name: "otter-service",
      pgid: child.pid!,
      helperPgid: standIns.pid!,
      request: (agent, i) => {
        const student = students[i % students.length]!;
        const auth = OS_AUTH === "token" ? { authorization: `token ${tokens[i % tokens.length]}` } : { "x-otter-user": student };
        return {
          agent,
          host: "127.0.0.1",
          port,
          path: OS_PREFIX,
          method: "POST",
          headers: { "content-type": "application/json", "content-length": body.length, "x-otter-notebook-path": "sample/sample.ipynb", ...auth },
        };
      },
      accepted: (status, text) => status === 200 && text.startsWith(OS_ACCEPTED_TEXT),
      // Every accepted submission's spawned grading task has run and logged its failure (one error document each).
      drain: async (acceptedSoFar) => {
        const t0 = performance.now();
        while (performance.now() - t0 < DRAIN_TIMEOUT_MS) {
          if ((await stats()).firestoreErrorDocuments >= acceptedSoFar) return performance.now() - t0;
          await sleep(100);
        }
        return null;
      },
      acceptedSoFar: 0,
    });
    return { started, service, stats, out, standInsOut, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Notebooks otter-service wrote to /tmp for these students and did not remove (it removes each when grading ends). */
function leftoverSubmissions(students: Set<string>): string[] {
  return readdirSync("/tmp").filter((f) => f.endsWith(".ipynb") && students.has(f.split("_demo101_")[0]!));
}

// ---------------------------------------------------------------- main

async function main() {
  if (!existsSync(join(SAMPLE, "dist", "autograder.zip"))) throw new Error("assignments/sample/dist/autograder.zip is missing: run `bash scripts/setup.sh` (or `npm start`) once");
  if (RATE_LIMITS === "on" && PER_SERVICE > 6000) console.warn(`warning: ${PER_SERVICE} submissions to one course with rate limits on: the gateway's 6,000/min per-course limit may refuse some (BENCH_RATE_LIMITS=off)`);
  if (RATE_LIMITS === "on" && PER_SERVICE / STUDENTS > 30) console.warn(`warning: ${STUDENTS} students for ${PER_SERVICE} submissions: more than 30 each, the per-student limit will refuse some`);
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-vs-otter-service-"));
  if (process.env.BENCH_LOGS) await mkdir(process.env.BENCH_LOGS, { recursive: true });
  const students = Array.from({ length: STUDENTS }, (_, i) => `bench-student${i}`);
  let edge: Awaited<ReturnType<typeof startOtterEdge>> | undefined;
  let os: Awaited<ReturnType<typeof startOtterService>> | undefined;
  try {
    const nb = JSON.parse(await readFile(join(SAMPLE, "submissions", "full.ipynb"), "utf8"));
    const body = Buffer.from(JSON.stringify({ nb }));
    os = await startOtterService(work, students);
    edge = await startOtterEdge(work, students);
    const services = [edge.service(body), os.service(body)];
    console.log(`otter-service: ${JSON.stringify(os.started.versions)}`);

    for (const s of services) {
      console.log(`${s.name}: warm-up, concurrency ${WARMUP.concurrency}, ${WARMUP.requests} requests …`);
      const w = await runLevel(s, WARMUP.concurrency, WARMUP.requests, body);
      if (w.accepted === 0) throw new Error(`${s.name} accepted none of the warm-up submissions: ${JSON.stringify(w.refused)} ${JSON.stringify(w.samples)}`);
    }
    const results: LevelResult[] = [];
    for (const [index, { concurrency, requests }] of LEVELS.entries()) {
      // Alternate which service goes first, so neither always meets the machine warmer or busier.
      for (const s of index % 2 === 0 ? services : [...services].reverse()) {
        console.log(`${s.name}: concurrency ${concurrency}, ${requests} requests …`);
        results.push(await runLevel(s, concurrency, requests, body));
      }
    }

    const m = machine();
    console.log(`\nIntake, otter-edge vs otter-service 2.2.8 (${new Date().toISOString()}), ${m.cores} cores, load ${m.loadavg}, Node ${process.version}`);
    console.log(`same notebook (assignments/sample/submissions/full.ipynb, body ${body.length} B), same client (node:http keep-alive), ${STUDENTS} students round robin (both)`);
    console.log(`otter-edge: ${HOST === "wrangler" ? "wrangler dev" : "Miniflare/workerd (no dev proxy)"}, rate limits ${RATE_LIMITS}, stand-in consumer grading every lease at once. otter-service: its real handler, hub auth by ${OS_AUTH === "token" ? "token (HubAuth asks the stand-in hub, caches 5 min)" : "X-Otter-User header"}, VERBOSE_LOGGING ${OS_VERBOSE ? "True" : "off"}, stand-in hub and Firestore, grading fails at its first step.`);
    console.log("The load generator, both services and the stand-ins share the machine's cores: figures are noisy, repeat a run when one looks off.\n");
    const byLevel = LEVELS.map(({ concurrency, requests }) => {
      const pick = (name: Service["name"]) => results.find((r) => r.service === name && r.concurrency === concurrency && r.requests === requests)!;
      return { concurrency, requests, e: pick("otter-edge"), o: pick("otter-service") };
    });
    console.log(
      table(
        ["conc", "requests", "otter-edge accepted/s", "p50 ms", "p99 ms", "5xx", "otter-service accepted/s", "p50 ms", "p99 ms", "5xx", "accepted/s ratio (edge ÷ service)", "p99 ratio (service ÷ edge)"],
        byLevel.map(({ concurrency, requests, e, o }) => [
          concurrency,
          requests,
          fmt(e.acceptedPerSec, 0),
          fmt(e.latencyMs.p50),
          fmt(e.latencyMs.p99),
          e.serverErrors,
          fmt(o.acceptedPerSec, 0),
          fmt(o.latencyMs.p50),
          fmt(o.latencyMs.p99),
          o.serverErrors,
          `${fmt(e.acceptedPerSec / o.acceptedPerSec, 2)}×`,
          `${fmt(o.latencyMs.p99 / e.latencyMs.p99, 2)}×`,
        ]),
      ),
    );
    console.log("Ratios above 1 favour otter-edge.");
    console.log("\nDetails (CPU from /proc: the service's processes; helpers = the otter-service stand-ins, while otter-edge's stand-in consumer runs in the bench client):");
    console.log(
      table(
        ["service", "conc", "requests", "accepted", "refused", "net err", "wall s", "p90 ms", "max ms", "service CPU ms/req", "helpers CPU ms/req", "bench CPU ms/req", "drain ms"],
        results.map((r) => [
          r.service,
          r.concurrency,
          r.requests,
          r.accepted,
          Object.keys(r.refused).length === 0 ? 0 : Object.entries(r.refused).map(([k, n]) => `${k}:${n}`).join(" "),
          r.networkErrors,
          fmt(r.wallMs / 1000, 2),
          fmt(r.latencyMs.p90),
          fmt(r.latencyMs.max),
          fmt(r.serviceCpuMsPerRequest, 2),
          r.helperCpuMsPerRequest === null ? "-" : fmt(r.helperCpuMsPerRequest, 2),
          fmt(r.benchCpuMsPerRequest, 2),
          r.drainMs === null ? "not drained" : fmt(r.drainMs, 0),
        ]),
      ),
    );
    for (const r of results) for (const [k, text] of Object.entries(r.samples)) console.log(`${r.service} c=${r.concurrency} first "${k}" body: ${text.replace(/\s+/g, " ")}`);

    const standIn = await os.stats();
    const osAccepted = services[1]!.acceptedSoFar;
    console.log(`\notter-service's per-submission work, as the stand-ins saw it (warm-up included, ${osAccepted} accepted):`);
    console.log(`  hub: ${standIn.hubUserLookups} token lookups (${standIn.hubUserUnknownToken} unknown), ${standIn.hubAuthStateLookups} auth_state lookups (${standIn.hubAuthStateRefused} refused)`);
    console.log(`  Firestore: ${standIn.firestoreCommits} commits; documents by collection: ${Object.entries(standIn.firestoreWrites).map(([c, n]) => `${c} ${n}`).join(", ")}; error documents ${standIn.firestoreErrorDocuments}`);
    console.log(`  first error document's message (why grading stopped): ${JSON.stringify(standIn.firestoreFirstErrorMessage)}`);
    const logCounts = Object.entries(os.out.counts);
    console.log(`  its log: ${logCounts.length === 0 ? "no Firestore-write fallbacks, Tornado errors or tracebacks" : logCounts.map(([k, n]) => `${k} ×${n}`).join(", ")}`);
    for (const [k, line] of Object.entries(os.out.first)) console.log(`    first ${k}: ${line}`);
    console.log(`otter-edge stand-in consumer: ${JSON.stringify(edge.consumer.counts)}`);

    const file = await writeResults("intake-vs-otter-service", {
      at: new Date().toISOString(),
      machine: m,
      bodyBytes: body.length,
      students: STUDENTS,
      otterEdge: { rateLimits: RATE_LIMITS, consumer: edge.consumer.counts },
      otterService: { versions: os.started.versions, auth: OS_AUTH, verboseLogging: OS_VERBOSE, standIns: standIn, log: os.out.counts },
      levels: results,
    });
    console.log(`results: ${file}`);
  } finally {
    edge?.consumer.close();
    await edge?.gateway.stop();
    await os?.stop();
    const left = leftoverSubmissions(new Set(students));
    if (left.length > 0) console.warn(`removing ${left.length} notebooks otter-service left in /tmp`);
    for (const f of left) rmSync(join("/tmp", f), { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
