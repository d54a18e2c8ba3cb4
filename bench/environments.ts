/**
 * Assignment environments: what a per-assignment image costs.
 *
 *   cold   upload of an autograder.zip whose requirements the grading image lacks → the first
 *          submission graded, through the local stack (wrangler dev gateway, runner, Docker), with
 *          no image of that environment on the engine: the wait a course's first student sees
 *          (the runner's environmentMs is the build). Then a second submission, the image built.
 *   A/B    grading the same notebook in the environment image (E) and in the grading image it was
 *          built on (G), DockerSandbox directly, interleaved; target E/G = 1.00 ± noise.
 *   size   what the environment image adds on top of the grading image.
 *
 *   npm run bench:environments
 *   BENCH_ROUNDS=8          A/B rounds (default 8)
 *   BENCH_REQUIREMENTS      the environment (default "tabulate==0.9.0\nseaborn\n")
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { environmentHash, environmentOfZip } from "@otter-edge/shared";
import { DockerSandbox } from "../runner/src/grading/docker-sandbox.js";
import { ENVIRONMENT_LABEL } from "../runner/src/grading/environment-images.js";
import type { SandboxInput } from "../runner/src/grading/sandbox.js";
import { ROOT, configureAssignment, newCredentials, startGateway, startRunner, submitNotebook, waitForFinal } from "../scripts/local-stack.js";
import { sampleZipNeedingTabulate } from "../test/support/environment-zip.js";
import { fmt, machine, median, summarize, table, writeResults } from "./lib.js";
import { runnerTimings } from "./support.js";

const SAMPLE = join(ROOT, "assignments", "sample");
const FULL = join(SAMPLE, "submissions", "full.ipynb");
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 8));
const REQUIREMENTS = process.env.BENCH_REQUIREMENTS ?? "tabulate==0.9.0\nseaborn\n";
const HOST_CA = ["/etc/ssl/certs/ca-certificates.crt"].find((p) => existsSync(p));
const docker = new Docker();
const ENV_ZIP = sampleZipNeedingTabulate(REQUIREMENTS, "0.9.0");
// The same assignment without requirements: graded in the grading image (qenv fails there, which
// costs the same as passing: one import attempt).
const BASE_ZIP = sampleZipNeedingTabulate(null, "0.9.0");

async function environmentImages(): Promise<Docker.ImageInfo[]> {
  const hash = await environmentHash("7.0.0", environmentOfZip(ENV_ZIP).requirements);
  return docker.listImages({ filters: { label: [`${ENVIRONMENT_LABEL}=${hash}`] } });
}

async function forgetEnvironment(): Promise<void> {
  for (const image of await environmentImages()) await docker.getImage(image.Id).remove({ force: true });
}

async function cold(work: string) {
  await forgetEnvironment();
  const credentials = newCredentials(["alice"]);
  const gateway = await startGateway({ stateDir: join(work, "state"), credentials });
  const runner = startRunner({ gatewayUrl: gateway.url, token: credentials.runner, cacheDir: join(work, "cache"), capacity: 1 });
  try {
    await writeFile(join(work, "autograder.zip"), ENV_ZIP);
    const alice = credentials.students.alice!;
    const t0 = performance.now();
    await configureAssignment(gateway.url, credentials.admin, { configFile: join(SAMPLE, "course-config.json"), course: "demo101", assignment: "sample", autograderZip: join(work, "autograder.zip"), timeoutSeconds: 900 });
    const uploadedS = (performance.now() - t0) / 1000;
    const first = await submitNotebook(gateway.url, alice, FULL);
    const firstFinal = await waitForFinal(first.status_url, alice, 1_200_000);
    const firstS = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    const second = await submitNotebook(gateway.url, alice, FULL);
    const secondFinal = await waitForFinal(second.status_url, alice);
    const secondS = (performance.now() - t1) / 1000;
    const timings = runnerTimings(runner.output());
    if (firstFinal.score !== 1 || secondFinal.score !== 1) throw new Error(`the solution did not grade 1.0 in its environment: ${JSON.stringify([firstFinal, secondFinal]).slice(0, 2000)}`);
    return {
      uploadS: uploadedS,
      firstGradedS: firstS,
      firstEnvironmentS: (timings.get(first.id)?.environmentMs ?? Number.NaN) / 1000,
      secondGradedS: secondS,
      secondEnvironmentS: (timings.get(second.id)?.environmentMs ?? Number.NaN) / 1000,
    };
  } finally {
    await runner.stop();
    await gateway.stop();
  }
}

async function sideBySide() {
  const sandbox = new DockerSandbox(docker, { memoryBytes: 2 * 1024 ** 3, nanoCpus: 1e9, pidsLimit: 512, tmpfsBytes: 256 * 1024 ** 2 }, {
    runnerName: `bench-environments-${process.pid}`,
    environments: { caBundle: HOST_CA },
  });
  const notebook = readFileSync(FULL);
  const job = (autograder: Buffer): SandboxInput => ({
    jobId: `bench-${Math.random().toString(36).slice(2)}`,
    notebook,
    autograder,
    otterVersion: "7.0.0",
    timeoutMs: 600_000,
    isolation: "kernel",
    signal: new AbortController().signal,
  });
  const seconds: Record<"E" | "G", number[]> = { E: [], G: [] };
  // One untimed run of each first: the environment image exists (cold above), page cache warmed.
  for (const zip of [ENV_ZIP, BASE_ZIP]) await (await sandbox.run(job(zip))).cleanup;
  for (let round = 0; round < ROUNDS; round++) {
    for (const kind of round % 2 === 0 ? (["E", "G"] as const) : (["G", "E"] as const)) {
      const t0 = performance.now();
      const run = await sandbox.run(job(kind === "E" ? ENV_ZIP : BASE_ZIP));
      seconds[kind].push((performance.now() - t0) / 1000);
      await run.cleanup;
    }
  }
  await sandbox.close();
  return seconds;
}

async function sizes() {
  const [envInfo] = await environmentImages();
  if (!envInfo) throw new Error("no environment image after the runs");
  const image = await docker.getImage(envInfo.Id).inspect();
  const base = await docker.getImage(image.Config.Labels!["org.otter-edge.environment-base"]!).inspect();
  return { environmentBytes: image.Size, baseBytes: base.Size, addedBytes: image.Size - base.Size };
}

async function main() {
  const work = await mkdtemp(join(tmpdir(), "otter-edge-bench-env-"));
  try {
    console.log(`environment: ${REQUIREMENTS.trim().split("\n").join(", ")} (+ the sample zip's environment.yml)`);
    const c = await cold(work);
    const ab = await sideBySide();
    const size = await sizes();
    const e = median(ab.E);
    const g = median(ab.G);
    console.log("\nUpload → graded, through the local stack (no image of the environment on the engine at upload):");
    console.log(
      table(
        ["step", "seconds"],
        [
          ["upload (admin CLI, index checked)", fmt(c.uploadS)],
          ["upload → first submission graded", fmt(c.firstGradedS)],
          ["  of which the runner's environment (build)", fmt(c.firstEnvironmentS)],
          ["second submission: submit → graded", fmt(c.secondGradedS)],
          ["  of which the runner's environment (found)", fmt(c.secondEnvironmentS, 3)],
        ],
      ),
    );
    console.log(`\nGrading the full sample notebook, DockerSandbox.run wall time, ${ROUNDS} interleaved rounds:`);
    const s = { E: summarize(ab.E), G: summarize(ab.G) };
    console.log(
      table(
        ["image", "n", "min", "p50", "max"],
        [
          ["E environment image", s.E.n, fmt(s.E.min, 2), fmt(s.E.p50, 2), fmt(s.E.max, 2)],
          ["G grading image", s.G.n, fmt(s.G.min, 2), fmt(s.G.p50, 2), fmt(s.G.max, 2)],
        ],
      ),
    );
    console.log(`E/G at the median: ${fmt(e / g, 2)}`);
    console.log(`\nImage size: environment ${fmt(size.environmentBytes / 1e6, 0)} MB, grading image ${fmt(size.baseBytes / 1e6, 0)} MB, added ${fmt(size.addedBytes / 1e6, 1)} MB`);
    const file = await writeResults("environments", { machine: machine(), requirements: REQUIREMENTS, cold: c, sideBySide: ab, ratio: e / g, size });
    console.log(`\nwritten ${file}`);
  } finally {
    await forgetEnvironment();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
