/**
 * Burst benchmark (issue #7, item 4): BENCH_BURST submissions (5,000 is the documented full run) of a
 * trivial assignment, sent as fast as the client can (keep-alive, BENCH_CONCURRENCY in flight), then
 * wait until the queue has drained. Counted from the client and from D1: accepted (202), refused (by
 * status and error code), network errors, graded, failed, graded more than once (must be 0), lost
 * (must be 0), stored without the client seeing a 202, and the time to drain.
 *
 * What grades, and what is real:
 * - gateway: real (wrangler dev → workerd, local D1/R2/Durable Objects), started by startGateway;
 * - assignment: bench/trivial/trivial-master.ipynb built with the real `otter assign` at bench time;
 *   every submission is a distinct notebook (a sequence number in its metadata), so R2 stores each;
 * - BENCH_RUNNER_CAPACITY (default 2) > 0: one real runner process (startRunner: Docker sandbox,
 *   otter-grader in the grading image) connected throughout;
 * - BENCH_STANDIN (default 16) > 0: a STAND-IN FOR GRADING connected beside it, a protocol-level
 *   consumer that answers each lease at once with a fixed full grade (bench/support.ts). It exists
 *   because 5,000 real Docker gradings take hours on 2 cores. The gateway does its full work for the
 *   stand-in's jobs too (lease, record once, passback outbox); D1's `runner` column says who graded what.
 *   BENCH_STANDIN=0 makes every grading real (then use a small BENCH_BURST).
 *
 *   npm run bench:burst
 *   BENCH_BURST=5000 BENCH_CONCURRENCY=200 BENCH_STUDENTS=50 BENCH_RUNNER_CAPACITY=2 BENCH_STANDIN=16
 *   BENCH_DRAIN_TIMEOUT_S=3600   give up waiting for the drain after this long (then the rest counts as not final)
 *   BENCH_GATEWAY_LOG=FILE       also copy wrangler's output to FILE
 *   BENCH_SHARDS=1               the gateway's DISPATCHER_SHARDS (runner and stand-in connect to every shard)
 */
import http from "node:http";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Gateway, type Runner, adminCli, configureAssignment, newCredentials, startGateway, startRunner } from "../scripts/local-stack.js";
import { fmt, machine, sleep, summarize, table, writeResults } from "./lib.js";
import { StandInConsumer, buildTrivialAssignment, query, queueStats, runnerImage, runnerTimings } from "./support.js";

const BURST = Number(process.env.BENCH_BURST ?? 5000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 200);
const STUDENTS = Number(process.env.BENCH_STUDENTS ?? 50);
const RUNNER_CAPACITY = Number(process.env.BENCH_RUNNER_CAPACITY ?? 2);
const STANDIN = Number(process.env.BENCH_STANDIN ?? 16);
const DRAIN_TIMEOUT_MS = Number(process.env.BENCH_DRAIN_TIMEOUT_S ?? 3600) * 1000;
const SHARDS = Number(process.env.BENCH_SHARDS ?? 1);
const REQUEST_TIMEOUT_MS = 60_000;
const STANDIN_NAME = "bench-standin";

interface Sent {
  status: number;
  /** The error code of a refusal (`{"error": …}`), or the start of a non-JSON body, or the network error's code. */
  code: string;
  id?: string;
  sentAt: number;
  ms: number;
}

/** Sends BURST POSTs with CONCURRENCY in flight on keep-alive sockets; every request's outcome is kept. */
async function burst(gateway: Gateway, tokens: string[], bodyFor: (i: number) => Buffer): Promise<{ sent: Sent[]; wallMs: number; t0: number; cpuMs: number }> {
  const { hostname, port } = new URL(gateway.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY, maxFreeSockets: CONCURRENCY });
  const sent: Sent[] = new Array(BURST);
  let next = 0;
  const one = (i: number) =>
    new Promise<Sent>((resolve) => {
      const body = bodyFor(i);
      const sentAt = Date.now();
      const start = performance.now();
      const done = (status: number, code: string, id?: string) => resolve({ status, code, id, sentAt, ms: performance.now() - start });
      const req = http.request(
        { agent, host: hostname, port, path: "/api/v1/submissions", method: "POST", headers: { "content-type": "application/json", "content-length": body.length, authorization: `Bearer ${tokens[i % tokens.length]}` } },
        (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d.toString()));
          res.on("end", () => {
            const status = res.statusCode ?? 0;
            try {
              const json = JSON.parse(text) as { id?: string; error?: string };
              done(status, status === 202 ? "" : (json.error ?? "?"), json.id);
            } catch {
              done(status, `non-JSON: ${text.replace(/\s+/g, " ").slice(0, 80)}`);
            }
          });
          res.on("error", (err: NodeJS.ErrnoException) => done(-1, err.code ?? err.message));
        },
      );
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(Object.assign(new Error("timeout"), { code: "client timeout" })));
      req.on("error", (err: NodeJS.ErrnoException) => done(-1, err.code ?? err.message));
      req.end(body);
    });
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  const p0 = performance.now();
  let lastReport = p0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < BURST) {
        const i = next++;
        sent[i] = await one(i);
        if (performance.now() - lastReport > 10_000) {
          lastReport = performance.now();
          console.log(`  ${sent.filter(Boolean).length}/${BURST} answered; load ${machine().loadavg}`);
        }
      }
    }),
  );
  const wallMs = performance.now() - p0;
  const cpu = process.cpuUsage(cpu0);
  agent.destroy();
  return { sent, wallMs, t0, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function main() {
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-burst-"));
  const students = Array.from({ length: STUDENTS }, (_, i) => `student${i}`);
  const credentials = newCredentials(students);
  const tokens = students.map((s) => credentials.students[s]!);
  let gateway: Gateway | undefined;
  let runner: Runner | undefined;
  let standin: StandInConsumer | undefined;
  const gatewayLines: string[] = [];
  try {
    console.log(`building the trivial assignment with otter assign in ${work} …`);
    const built = await buildTrivialAssignment(work);
    console.log("starting gateway …");
    gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { EDX_URL: "http://127.0.0.1:9", DISPATCHER_SHARDS: String(SHARDS) } });
    const copy = process.env.BENCH_GATEWAY_LOG ? createWriteStream(process.env.BENCH_GATEWAY_LOG) : null;
    const keep = (d: Buffer) => {
      copy?.write(d);
      for (const line of d.toString().split("\n")) if (/error|exception|restarted|uncaught|\b5\d\d\b/i.test(line)) gatewayLines.push(line.slice(0, 400));
    };
    gateway.process.stdout?.on("data", keep);
    gateway.process.stderr?.on("data", keep);
    const uploaded = await configureAssignment(gateway.url, credentials.admin, { configFile: built.configFile, course: "bench", assignment: "trivial", autograderZip: built.autograderZip, timeoutSeconds: 300 });
    const { image, candidates } = await runnerImage(uploaded.otter_version);

    let runnerName: string | null = null;
    if (RUNNER_CAPACITY > 0) {
      runnerName = `bench-burst-runner-${process.pid}`;
      runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: RUNNER_CAPACITY, env: { OTTER_EDGE_RUNNER_NAME: runnerName } });
      for (let i = 0; ; i++) {
        if ((await queueStats(gateway.url, credentials.admin)).runners.some((r) => r.capacity > 0)) break;
        if (i > 600 || runner.process.exitCode !== null) throw new Error(`runner did not connect:\n${runner.output().slice(-3000)}`);
        await sleep(100);
      }
    }
    // D1 records the name of the runner *token* a grade came over (not the hello name), so the stand-in
    // gets a token of its own: then D1 alone tells real gradings from stand-in ones.
    if (STANDIN > 0) {
      const standinToken = (await adminCli<{ token: string }>(gateway.url, credentials.admin, ["tokens", "create", "runner", STANDIN_NAME])).token;
      standin = await StandInConsumer.connect(gateway.url, standinToken, STANDIN_NAME, STANDIN, uploaded.otter_version);
    }
    console.log(`grading: ${RUNNER_CAPACITY > 0 ? `real runner "${runnerName}" capacity ${RUNNER_CAPACITY} (image ${image})` : "no real runner"}${STANDIN > 0 ? ` + stand-in "${STANDIN_NAME}" capacity ${STANDIN} (answers at once, executes nothing)` : ""}`);

    // One body per submission, distinct by a sequence number in the notebook's metadata; built from a
    // template by string splicing so the client spends its CPU on sending, not on JSON.stringify.
    const nb = JSON.parse(await readFile(built.submission, "utf8")) as { metadata: Record<string, unknown> };
    nb.metadata.bench_seq = "@@SEQ@@";
    const [head, tail] = JSON.stringify({ nb }).split('"@@SEQ@@"') as [string, string];
    const bodyFor = (i: number) => Buffer.from(`${head}${i}${tail}`);

    const loadStart = machine().loadavg;
    console.log(`burst: ${BURST} POSTs, ${CONCURRENCY} in flight, ${STUDENTS} students; load ${loadStart} …`);
    const { sent, wallMs, t0, cpuMs } = await burst(gateway, tokens, bodyFor);
    const loadAfterBurst = machine().loadavg;
    const lastAnswer = Date.now();
    console.log(`burst sent in ${fmt(wallMs / 1000, 1)} s; waiting for the drain …`);

    let drained = false;
    let lastStats = await queueStats(gateway.url, credentials.admin);
    for (let lastLog = Date.now(); Date.now() - lastAnswer < DRAIN_TIMEOUT_MS; ) {
      lastStats = await queueStats(gateway.url, credentials.admin);
      if (lastStats.pending === 0 && lastStats.leased === 0) {
        drained = true;
        break;
      }
      if (Date.now() - lastLog > 15_000) {
        lastLog = Date.now();
        console.log(`  queue: ${lastStats.pending} pending, ${lastStats.leased} leased; load ${machine().loadavg}`);
      }
      await sleep(500);
    }
    const drainedAt = Date.now();
    const loadDrained = machine().loadavg;
    // Give the last grade writes (awaited by the Dispatcher before it drops the job) a moment, then read D1.
    await sleep(1000);

    const rows = await query<{ id: string; status: string; verdict: string | null; score: number | null; attempts: number; runner: string | null; created_at: string; finished_at: string | null }>(
      gateway,
      "SELECT id, status, verdict, score, attempts, runner, created_at, finished_at FROM submissions",
    );
    const eventCounts = await query<{ state: string; n: number }>(gateway, "SELECT state, COUNT(*) AS n FROM submission_events GROUP BY state ORDER BY state");
    // Graded more than once: more than one `graded` event, or a graded submission that also has a `failed` event.
    const doubled = await query<{ submission_id: string; graded: number; failed: number }>(
      gateway,
      `SELECT submission_id, SUM(state = 'graded') AS graded, SUM(state = 'failed') AS failed FROM submission_events
       GROUP BY submission_id HAVING SUM(state = 'graded') > 1 OR (SUM(state = 'graded') >= 1 AND SUM(state = 'failed') >= 1)`,
    );
    const multiLeased = await query<{ n: number }>(gateway, "SELECT COUNT(*) AS n FROM (SELECT submission_id FROM submission_events WHERE state = 'leased' GROUP BY submission_id HAVING COUNT(*) > 1)");
    const failures = await query<{ detail: string; n: number }>(gateway, "SELECT substr(detail, 1, 200) AS detail, COUNT(*) AS n FROM submission_events WHERE state IN ('failed', 'requeued') GROUP BY 1 ORDER BY 2 DESC LIMIT 8");
    const passbacks = await query<{ n: number; distinct_n: number }>(gateway, "SELECT COUNT(*) AS n, COUNT(DISTINCT submission_id) AS distinct_n FROM passbacks");
    const testRows = await query<{ n: number }>(gateway, "SELECT COUNT(*) AS n FROM test_results");

    // Client side.
    const accepted = sent.filter((s) => s.status === 202);
    const acceptedIds = new Set(accepted.map((s) => s.id!));
    const refused: Record<string, number> = {};
    for (const s of sent) if (s.status !== 202) refused[`${s.status < 0 ? "network" : s.status} ${s.code}`] = (refused[`${s.status < 0 ? "network" : s.status} ${s.code}`] ?? 0) + 1;
    const latency = summarize(sent.map((s) => s.ms));
    // D1 side.
    const byId = new Map(rows.map((r) => [r.id, r]));
    const final = (r: { status: string }) => r.status === "graded" || r.status === "failed";
    const missingInD1 = [...acceptedIds].filter((id) => !byId.has(id));
    const notFinal = [...acceptedIds].filter((id) => byId.has(id) && !final(byId.get(id)!));
    const lost = missingInD1.length + notFinal.length;
    const withoutA202 = rows.filter((r) => !acceptedIds.has(r.id));
    const statusCounts: Record<string, number> = {};
    for (const r of rows) statusCounts[r.status] = (statusCounts[r.status] ?? 0) + 1;
    const byRunner: Record<string, { graded: number; wrongScore: number }> = {};
    for (const r of rows) {
      if (r.status !== "graded") continue;
      const who = r.runner === STANDIN_NAME ? `stand-in (${STANDIN_NAME})` : `real runner (token ${r.runner})`;
      byRunner[who] ??= { graded: 0, wrongScore: 0 };
      byRunner[who].graded += 1;
      if (r.score !== 1) byRunner[who].wrongScore += 1;
    }
    const lastFinished = Math.max(...rows.filter((r) => r.finished_at).map((r) => Date.parse(r.finished_at!)));
    const realTimings = runner ? [...runnerTimings(runner.output()).values()] : [];
    const runnerErrors = runner ? runner.output().split("\n").filter((l) => /"level":(50|60)/.test(l)).slice(0, 10) : [];

    console.log(`\nBurst (${new Date().toISOString()}), ${machine().cores} cores, Node ${process.version}; trivial assignment; ${BURST} POSTs, ${CONCURRENCY} in flight, ${STUDENTS} students; ${SHARDS} Dispatcher shard${SHARDS > 1 ? "s" : ""}`);
    console.log(`grading: ${RUNNER_CAPACITY > 0 ? `real runner capacity ${RUNNER_CAPACITY} (${image})` : "no real runner"}${STANDIN > 0 ? ` + STAND-IN consumer capacity ${STANDIN} (answers at once, executes nothing)` : ""}`);
    console.log(`load: at start ${loadStart}; after the burst ${loadAfterBurst}; at drain ${loadDrained}\n`);
    console.log(
      table(
        ["figure", "value"],
        [
          ["POSTs sent", BURST],
          ["accepted (202)", accepted.length],
          ...Object.entries(refused).map(([k, v]) => [`refused: ${k}`, v] as [string, number]),
          ["send time s", fmt(wallMs / 1000, 1)],
          ["accepted/s", fmt((accepted.length / wallMs) * 1000, 1)],
          ["POST latency p50 / p99 / max ms", `${fmt(latency.p50, 0)} / ${fmt(latency.p99, 0)} / ${fmt(latency.max, 0)}`],
          ["D1 rows", rows.length],
          ...Object.entries(statusCounts).map(([k, v]) => [`D1 status ${k}`, v] as [string, number]),
          ...Object.entries(byRunner).map(([k, v]) => [`graded by ${k}`, `${v.graded}${v.wrongScore ? ` (${v.wrongScore} with score ≠ 1)` : ""}`] as [string, string]),
          ["graded more than once (must be 0)", doubled.length],
          ["leased more than once", multiLeased[0]?.n ?? "-"],
          ["lost: 202 but not in D1 (must be 0)", missingInD1.length],
          ["lost: 202 but not final after the drain (must be 0)", notFinal.length],
          ["in D1 without a 202 seen by the client", withoutA202.length],
          ["passback outbox rows (distinct)", `${passbacks[0]?.n ?? "-"} (${passbacks[0]?.distinct_n ?? "-"})`],
          ["queue drained", drained ? "yes" : `NO after ${DRAIN_TIMEOUT_MS / 1000} s: ${lastStats.pending} pending, ${lastStats.leased} leased`],
          ["drain after the last answer s", fmt((drainedAt - lastAnswer) / 1000, 1)],
          ["first POST → last finished_at s", fmt((lastFinished - t0) / 1000, 1)],
          ["real runner: sandbox run median s", realTimings.length ? fmt(summarize(realTimings.map((t) => t.runMs ?? Number.NaN).filter(Number.isFinite)).p50 / 1000, 2) : "-"],
          ["stand-in: leases / results acked / refused", standin ? `${standin.counts.leases} / ${standin.counts.accepted} / ${standin.counts.refused}` : "-"],
          ["bench client CPU s", fmt(cpuMs / 1000, 1)],
        ],
      ),
    );
    console.log(`\nD1 events by state: ${eventCounts.map((e) => `${e.state} ${e.n}`).join(", ")}; test_results rows ${testRows[0]?.n ?? "-"}`);
    for (const f of failures) console.log(`  failed/requeued ×${f.n}: ${f.detail}`);
    if (doubled.length) console.log(`graded more than once, first ids: ${doubled.slice(0, 5).map((d) => `${d.submission_id} (graded ${d.graded}, failed ${d.failed})`).join(", ")}`);
    if (missingInD1.length || notFinal.length) console.log(`LOST ids (first): ${[...missingInD1, ...notFinal].slice(0, 5).join(", ")}`);
    if (gatewayLines.length) console.log(`gateway output lines mentioning errors/5xx: ${gatewayLines.length}; first: ${gatewayLines.slice(0, 3).join(" | ")}`);
    for (const l of runnerErrors) console.log(`runner error: ${l.slice(0, 300)}`);
    const lostOk = lost === 0 && doubled.length === 0;
    console.log(`\nmust-be-zero figures: ${lostOk ? "all 0" : "NOT all 0"}`);

    const file = await writeResults("burst", {
      at: new Date().toISOString(),
      machine: machine(),
      config: { burst: BURST, concurrency: CONCURRENCY, students: STUDENTS, shards: SHARDS, runnerCapacity: RUNNER_CAPACITY, standin: STANDIN, image, candidates },
      load: { start: loadStart, afterBurst: loadAfterBurst, drained: loadDrained },
      client: { accepted: accepted.length, refused, wallMs, latency, cpuMs },
      d1: { rows: rows.length, statusCounts, byRunner, eventCounts, doubled, multiLeased: multiLeased[0]?.n, failures, passbacks: passbacks[0], testRows: testRows[0]?.n },
      lost: { missingInD1, notFinal, withoutA202: withoutA202.map((r) => r.id) },
      drain: { drained, afterLastAnswerMs: drainedAt - lastAnswer, firstPostToLastFinishedMs: lastFinished - t0, lastStats },
      standin: standin?.counts ?? null,
      realRunner: { graded: realTimings.length, errors: runnerErrors },
      gatewayErrorLines: gatewayLines.slice(0, 50),
      gatewayErrorLineCount: gatewayLines.length,
    });
    console.log(`results: ${file}`);
  } finally {
    standin?.close();
    if (runner) await runner.stop();
    if (gateway) await gateway.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
