/**
 * Runner throughput benchmark (issue #7, item 3): with N jobs queued, how many gradings per minute a
 * real runner (real Docker sandbox, real otter-grader) completes, against the limit
 * `cores × 60 / bare otter run seconds`, for several runner capacities.
 *
 * Per capacity setting: N submissions are queued while no runner is connected, then a fresh runner
 * process with that capacity starts and drains them. Rates come from D1's own timestamps:
 *   whole   N / (first leased_at → last finished_at)   — includes the ramp-up and the tail
 *   steady  (N − 1) / (first finished_at → last finished_at)
 * The bare `otter run` seconds are measured in the same run, interleaved before, between and after
 * the settings (these machines are noisy), two ways:
 *   container  `docker run` of the image the runner picks, with the runner's own command and sandbox
 *              flags (1 CPU, read-only root, …): otter run as the runner runs it, without otter-edge
 *   host       `otter run` from .otter-edge/venv on the bare host (no container)
 * The limit uses the faster of the two medians (the stricter target). As a second reference, every
 * interleave point also runs `cores` bare containers at once (2 waves): what the machine sustains in
 * parallel without otter-edge at that moment, which a loaded shared machine puts far below the limit.
 * Settings run in BENCH_ROUNDS rounds, the order reversed every other round (1,2,3 then 3,2,1), so a
 * load trend from the neighbours does not favour one capacity.
 *
 *   npm run bench:throughput
 *   BENCH_CAPACITIES=1,2,3   runner capacities to measure, in this order
 *   BENCH_JOBS=              jobs per setting (default max(12, 8 × capacity))
 *   BENCH_BARE_REPS=2        bare runs of each kind at each interleave point
 *   BENCH_ROUNDS=2           rounds over the capacities
 *   BENCH_NOTEBOOK=full      sample submission (full, partial, zero); BENCH_ASSIGNMENT=trivial grades
 *                            bench/trivial instead of assignments/sample
 */
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { type Gateway, ROOT, type Runner, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook } from "../scripts/local-stack.js";
import { fmt, machine, median, sleep, summarize, table, writeResults } from "./lib.js";
import { GRADER_UID, HOST_OTTER, buildTrivialAssignment, exec, jobDir, query, queueStats, runnerImage, runnerTimings } from "./support.js";

const CORES = cpus().length;
const CAPACITIES = (process.env.BENCH_CAPACITIES ?? "1,2,3").split(",").map(Number);
const JOBS = process.env.BENCH_JOBS ? Number(process.env.BENCH_JOBS) : undefined;
const BARE_REPS = Number(process.env.BENCH_BARE_REPS ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const PARALLEL_WAVES = 2;
const TRIVIAL = process.env.BENCH_ASSIGNMENT === "trivial";
const SETTING_TIMEOUT_MS = 30 * 60_000;

/** The runner's container, as `docker run` flags (runner/src/grading/docker-sandbox.ts and config.ts defaults). */
const SANDBOX_FLAGS = [
  "--network", "none",
  "--user", `${GRADER_UID}:${GRADER_UID}`,
  "--memory", "2g", "--memory-swap", "2g",
  "--cpus", "1",
  "--pids-limit", "512",
  "--read-only",
  "--tmpfs", "/tmp:rw,nosuid,nodev,size=268435456",
  "--tmpfs", "/home/grader:rw,nosuid,nodev,size=16m",
  "--cap-drop", "ALL",
  "--security-opt", "no-new-privileges",
  "--ulimit", "nofile=1024:1024",
];

let pycachePrefix = "";
/** Host Python with its own bytecode cache (see bench/e2e-overhead.ts): otherwise every host run recompiles otter's imports. */
function hostEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONPYCACHEPREFIX: pycachePrefix };
  delete env.PYTHONDONTWRITEBYTECODE;
  return env;
}

/**
 * One bare grading; setup and cleanup are not timed. The Docker engine here is shared and was seen
 * being restarted by someone else mid-run: a run the engine refused is retried (and reported), a
 * run that failed otherwise is not.
 */
let engineRetries = 0;
async function bare(kind: "container" | "host", image: string, notebook: string, autograder: string): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await bareOnce(kind, image, notebook, autograder);
    } catch (err) {
      if (attempt >= 5 || !/Cannot connect to the Docker daemon/.test(String((err as { stderr?: string }).stderr ?? err))) throw err;
      engineRetries += 1;
      console.warn(`docker engine unreachable (attempt ${attempt}); retrying in 10 s`);
      await sleep(10_000);
    }
  }
}

async function bareOnce(kind: "container" | "host", image: string, notebook: string, autograder: string): Promise<number> {
  const dir = await jobDir(notebook, autograder, kind === "container");
  try {
    const t0 = performance.now();
    if (kind === "container") {
      await exec("docker", ["run", "--rm", ...SANDBOX_FLAGS, "-v", `${dir}:/job`, "-w", "/job", image, "otter", "run", "--no-logo", "-a", "/job/autograder.zip", "-o", "/job/out", "/job/submission.ipynb"], { maxBuffer: 16 * 1024 * 1024 });
    } else {
      await exec(HOST_OTTER, ["run", "-a", "autograder.zip", "-o", "out", "submission.ipynb"], { cwd: dir, env: hostEnv(), maxBuffer: 16 * 1024 * 1024 });
    }
    return performance.now() - t0;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface Setting {
  capacity: number;
  round: number;
  jobs: number;
  image: string;
  loadBefore: string;
  loadAfter: string;
  wholeMs: number;
  steadyMs: number;
  perMinWhole: number;
  perMinSteady: number;
  verdicts: Record<string, number>;
  attemptsMax: number;
  /** Runner's own per-job sandbox timings (ms), medians. */
  runnerRunMs: number;
  runnerTotalMs: number;
}

async function main() {
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-throughput-"));
  pycachePrefix = join(work, "pycache");
  const students = ["alice", "bob", "carol", "dave"];
  const credentials = newCredentials(students);
  let gateway: Gateway | undefined;
  let runner: Runner | undefined;
  try {
    const built = TRIVIAL ? await buildTrivialAssignment(work) : null;
    const notebook = built?.submission ?? join(ROOT, "assignments", "sample", "submissions", `${process.env.BENCH_NOTEBOOK ?? "full"}.ipynb`);
    const autograder = built?.autograderZip ?? join(ROOT, "assignments", "sample", "dist", "autograder.zip");
    console.log(`starting gateway in ${work} …`);
    gateway = await startGateway({ stateDir: join(work, "state"), credentials, vars: { EDX_URL: "http://127.0.0.1:9" } });
    const uploaded = await configureAssignment(gateway.url, credentials.admin, {
      configFile: built?.configFile ?? join(ROOT, "assignments", "sample", "course-config.json"),
      course: TRIVIAL ? "bench" : "demo101",
      assignment: TRIVIAL ? "trivial" : "sample",
      autograderZip: autograder,
      timeoutSeconds: 600,
    });
    const { image: startImage, candidates } = await runnerImage(uploaded.otter_version);
    console.log(`grading image (the runner's choice): ${startImage}; labelled for otter ${uploaded.otter_version}: ${candidates.join(", ")}`);

    const bareMs: Record<"container" | "host", number[]> = { container: [], host: [] };
    const bareLog: Array<{ at: string; kind: string; ms: number; load: string; image: string }> = [];
    const parallel: Array<{ at: string; perMin: number; load: string; image: string }> = [];
    // The runner picks its image at every job (newest image labelled for the otter version), and
    // neighbours on this shared engine build labelled images of their own: re-resolve at every point
    // so bare runs use what the runner would use now, and record the image with every figure.
    let image = startImage;
    const barePoint = async (label: string) => {
      image = (await runnerImage(uploaded.otter_version)).image;
      for (let i = 0; i < BARE_REPS; i++) {
        // Alternate which kind goes first.
        for (const kind of i % 2 === 0 ? (["container", "host"] as const) : (["host", "container"] as const)) {
          const ms = await bare(kind, image, notebook, autograder);
          bareMs[kind].push(ms);
          bareLog.push({ at: label, kind, ms, load: machine().loadavg, image });
        }
      }
      // `cores` bare containers at once: what the machine sustains in parallel right now, without otter-edge.
      const tPar = performance.now();
      for (let wave = 0; wave < PARALLEL_WAVES; wave++) await Promise.all(Array.from({ length: CORES }, () => bare("container", image, notebook, autograder)));
      const perMin = ((CORES * PARALLEL_WAVES) / (performance.now() - tPar)) * 60_000;
      parallel.push({ at: label, perMin, load: machine().loadavg, image });
      console.log(`bare runs (${label}): container ${bareMs.container.slice(-BARE_REPS).map((x) => fmt(x / 1000, 2)).join(", ")} s; host ${bareMs.host.slice(-BARE_REPS).map((x) => fmt(x / 1000, 2)).join(", ")} s; ${CORES} containers at once ${fmt(perMin, 1)}/min; load ${machine().loadavg}`);
    };

    console.log("warm-up: one bare run of each kind (not counted) …");
    await bare("container", startImage, notebook, autograder);
    await bare("host", startImage, notebook, autograder);
    await barePoint("before");


    const settings: Setting[] = [];
    let seq = 0;
    const order = Array.from({ length: ROUNDS }, (_, r) => (r % 2 === 0 ? CAPACITIES : [...CAPACITIES].reverse())).flat();
    for (const [index, capacity] of order.entries()) {
      const jobs = JOBS ?? Math.max(12, 8 * capacity);
      // Queue first, with no runner connected: the runner then starts against a full queue.
      const ids: string[] = [];
      for (let i = 0; i < jobs; i++) ids.push((await submitNotebook(gateway.url, credentials.students[students[seq++ % students.length]!]!, notebook)).id);
      const s0 = await queueStats(gateway.url, credentials.admin);
      if (s0.runners.length !== 0 || s0.pending < jobs) throw new Error(`expected ${jobs} pending and no runner, got ${JSON.stringify(s0)}`);
      const loadBefore = machine().loadavg;
      const imageNow = (await runnerImage(uploaded.otter_version)).image;
      console.log(`capacity ${capacity}: ${jobs} jobs queued; starting the runner (image ${imageNow}); load ${loadBefore} …`);
      runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity });
      const t0 = Date.now();
      for (;;) {
        const s = await queueStats(gateway.url, credentials.admin);
        if (s.pending === 0 && s.leased === 0) break;
        if (Date.now() - t0 > SETTING_TIMEOUT_MS) throw new Error(`capacity ${capacity}: not drained in ${SETTING_TIMEOUT_MS / 60000} min: ${JSON.stringify(s)}\n${runner.output().slice(-3000)}`);
        if (runner.process.exitCode !== null) throw new Error(`runner exited:\n${runner.output().slice(-3000)}`);
        await sleep(1000);
      }
      const loadAfter = machine().loadavg;
      const imageAfter = (await runnerImage(uploaded.otter_version)).image;
      const output = runner.output();
      await runner.stop();
      runner = undefined;
      const rows = await query<{ id: string; status: string; verdict: string | null; attempts: number; leased_at: string | null; finished_at: string | null }>(
        gateway,
        `SELECT id, status, verdict, attempts, leased_at, finished_at FROM submissions WHERE id IN (${ids.map((id) => `'${id}'`).join(",")})`,
      );
      if (rows.length !== jobs) throw new Error(`capacity ${capacity}: ${rows.length} of ${jobs} rows in D1`);
      const firstLease = Math.min(...rows.map((r) => Date.parse(r.leased_at!)));
      const finished = rows.map((r) => Date.parse(r.finished_at!)).sort((a, b) => a - b);
      const verdicts: Record<string, number> = {};
      for (const r of rows) verdicts[`${r.status}/${r.verdict}`] = (verdicts[`${r.status}/${r.verdict}`] ?? 0) + 1;
      const wholeMs = finished[finished.length - 1]! - firstLease;
      const steadyMs = finished[finished.length - 1]! - finished[0]!;
      const timings = [...runnerTimings(output).values()];
      const setting: Setting = {
        capacity,
        round: Math.floor(index / CAPACITIES.length) + 1,
        jobs,
        image: imageNow === imageAfter ? imageNow : `${imageNow} → ${imageAfter}`,
        loadBefore,
        loadAfter,
        wholeMs,
        steadyMs,
        perMinWhole: (jobs / wholeMs) * 60_000,
        perMinSteady: ((jobs - 1) / steadyMs) * 60_000,
        verdicts,
        attemptsMax: Math.max(...rows.map((r) => r.attempts)),
        runnerRunMs: median(timings.map((t) => t.runMs ?? Number.NaN).filter(Number.isFinite)),
        runnerTotalMs: median(timings.map((t) => t.totalMs ?? Number.NaN).filter(Number.isFinite)),
      };
      settings.push(setting);
      console.log(`capacity ${capacity}: ${fmt(setting.perMinWhole, 1)} gradings/min (steady ${fmt(setting.perMinSteady, 1)}); ${JSON.stringify(verdicts)}; runner run median ${fmt(setting.runnerRunMs / 1000, 2)} s; load ${loadAfter}`);
      await barePoint(`after setting ${index + 1} (capacity ${capacity})`);
    }

    // lib's median is nearest-rank (the lower of two); with two rounds the mean of the middle pair is the honest middle.
    const middle = (xs: number[]) => {
      const v = [...xs].sort((a, b) => a - b);
      return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
    };
    const bareContainer = summarize(bareMs.container);
    const bareHost = summarize(bareMs.host);
    const bareS = Math.min(bareContainer.p50, bareHost.p50) / 1000;
    const limit = (CORES * 60) / bareS;
    const limitContainer = (CORES * 60) / (bareContainer.p50 / 1000);
    const limitHost = (CORES * 60) / (bareHost.p50 / 1000);

    const images = [...new Set([...bareLog.map((b) => b.image), ...settings.map((s) => s.image)])];
    console.log(`\nRunner throughput (${new Date().toISOString()}), ${CORES} cores, Node ${process.version}; ${TRIVIAL ? "bench/trivial" : `assignments/sample ${process.env.BENCH_NOTEBOOK ?? "full"}`}; image${images.length > 1 ? "s (CHANGED during the run: compare with care)" : ""} ${images.join(", ")}`);
    console.log("Figures are noisy on a shared 2-core machine. Every figure below comes from this one run.\n");
    console.log(
      table(
        ["bare otter run", "n", "median s", "min s", "max s", `limit/min = ${CORES}×60/median`],
        [
          ["container (runner's image, command and flags)", bareContainer.n, fmt(bareContainer.p50 / 1000, 2), fmt(bareContainer.min / 1000, 2), fmt(bareContainer.max / 1000, 2), fmt(limitContainer, 1)],
          ["host (.otter-edge/venv)", bareHost.n, fmt(bareHost.p50 / 1000, 2), fmt(bareHost.min / 1000, 2), fmt(bareHost.max / 1000, 2), fmt(limitHost, 1)],
        ],
      ),
    );
    const parallelPerMin = middle(parallel.map((p) => p.perMin));
    console.log(`\nlimit used: ${fmt(limit, 1)} gradings/min (the faster bare median, ${fmt(bareS, 2)} s); reference: ${CORES} bare containers at once sustained ${parallel.map((p) => fmt(p.perMin, 1)).join(", ")}/min (median ${fmt(parallelPerMin, 1)})\n`);
    console.log(
      table(
        ["capacity", "round", "image", "jobs", "gradings/min", "% of limit", "% of bare parallel", "steady/min", "steady %", "runner run s (median)", "runner total s", "outcomes", "max attempts", "load before", "load after"],
        settings.map((s) => [
          s.capacity,
          s.round,
          s.image,
          s.jobs,
          fmt(s.perMinWhole, 1),
          fmt((100 * s.perMinWhole) / limit, 0),
          fmt((100 * s.perMinWhole) / parallelPerMin, 0),
          fmt(s.perMinSteady, 1),
          fmt((100 * s.perMinSteady) / limit, 0),
          fmt(s.runnerRunMs / 1000, 2),
          fmt(s.runnerTotalMs / 1000, 2),
          Object.entries(s.verdicts).map(([k, v]) => `${k} ${v}`).join(", "),
          s.attemptsMax,
          s.loadBefore.split(" ").slice(0, 3).join(" "),
          s.loadAfter.split(" ").slice(0, 3).join(" "),
        ]),
      ),
    );
    console.log("\nby capacity, median over rounds (settings whose jobs needed a second attempt left out, see `max attempts`):");
    console.log(
      table(
        ["capacity", "gradings/min", "% of limit", "% of bare parallel"],
        CAPACITIES.map((c) => {
          const m = middle(settings.filter((s) => s.capacity === c && s.attemptsMax === 1).map((s) => s.perMinWhole));
          return [c, fmt(m, 1), fmt((100 * m) / limit, 0), fmt((100 * m) / parallelPerMin, 0)];
        }),
      ),
    );
    const best = Math.max(...settings.filter((s) => s.attemptsMax === 1).map((s) => s.perMinWhole));
    console.log(`\ntarget (≥ 90 % of the limit): ${best >= 0.9 * limit ? "met" : "NOT met"} by the best single setting: ${fmt(best, 1)}/min = ${fmt((100 * best) / limit, 0)} % of ${fmt(limit, 1)}/min (one setting; read the per-capacity medians and the load columns before believing it)`);
    const file = await writeResults("throughput", { at: new Date().toISOString(), machine: machine(), images, candidates, notebook, cores: CORES, bare: { container: bareContainer, host: bareHost, log: bareLog }, limit, limitContainer, limitHost, parallelPerMin, parallel, settings, engineRetries });
    if (engineRetries) console.log(`bare runs retried because the Docker engine was unreachable: ${engineRetries}`);
    console.log(`results: ${file}`);
  } finally {
    if (runner) await runner.stop();
    if (gateway) await gateway.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
