/**
 * Pieces the throughput and burst benchmarks share: D1 reads that tolerate the running gateway's
 * lock, the Dispatcher's queue depth, the grading image a runner would pick, the trivial assignment
 * built with `otter assign`, and a protocol-level stand-in for a runner.
 *
 * (bench/intake.ts keeps its own copy of the stand-in consumer; this file is new so that the two
 * benchmarks did not have to edit it.)
 */
import { execFile } from "node:child_process";
import { chmod, chown, copyFile, mkdir, mkdtemp, readFile, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import Docker from "dockerode";
import WebSocket from "ws";
import { DockerSandbox } from "../runner/src/grading/docker-sandbox.js";
import { type Gateway, ROOT } from "../scripts/local-stack.js";
import { getJson, sleep } from "./lib.js";

export const exec = promisify(execFile);
export const HOST_OTTER = join(ROOT, ".otter-edge", "venv", "bin", "otter");
/** The grading image's grader uid. */
export const GRADER_UID = 10001;

/**
 * A job directory as the runner fills /job (submission.ipynb, autograder.zip, out/); for a container
 * owned by the grader uid, as test/support/direct-otter.ts prepares it. The caller removes it.
 */
export async function jobDir(notebook: string, autograder: string, forContainer: boolean): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "otter-edge-bench-job-"));
  await copyFile(notebook, join(dir, "submission.ipynb"));
  await copyFile(autograder, join(dir, "autograder.zip"));
  await mkdir(join(dir, "out"));
  if (forContainer) {
    for (const p of [dir, join(dir, "out"), join(dir, "submission.ipynb"), join(dir, "autograder.zip")]) await chown(p, GRADER_UID, GRADER_UID);
    await chmod(dir, 0o755);
  }
  return dir;
}

/** D1 through `wrangler d1 execute`; retried, since the running gateway may hold the SQLite lock for a moment. */
export async function query<T>(gateway: Gateway, sql: string): Promise<T[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await gateway.query<T>(sql);
    } catch (err) {
      if (attempt >= 6) throw err;
      await sleep(500 * attempt);
    }
  }
}

export interface QueueStats {
  pending: number;
  leased: number;
  runners: Array<{ capacity: number; [k: string]: unknown }>;
}

export async function queueStats(gatewayUrl: string, admin: string): Promise<QueueStats> {
  // Sent again when lost under `wrangler dev` (see getJson): this is polled while the Dispatcher drains.
  const body = await getJson<{ queue: { pending: number; leased: number }; runners: QueueStats["runners"] }>(`${gatewayUrl}/api/v1/admin/stats`, { authorization: `Bearer ${admin}` }, {
    onRetry: (attempt, err) => console.warn(`admin/stats: no answer (${String(err).slice(0, 120)}); sending it again (attempt ${attempt + 1})`),
  });
  return { ...body.queue, runners: body.runners };
}

/**
 * The image the runner grades `otterVersion` with, chosen by the runner's own code (DockerSandbox.images:
 * by the org.otter-edge.otter-version label, newest wins). Bare runs use the same image, so that a
 * second image carrying the label on a shared engine cannot make the comparison unfair.
 */
export async function runnerImage(otterVersion: string): Promise<{ image: string; candidates: string[] }> {
  const docker = new Docker();
  const sandbox = new DockerSandbox(docker, { memoryBytes: 2 ** 31, nanoCpus: 1e9, pidsLimit: 512, tmpfsBytes: 2 ** 28 }, { runnerName: "bench-probe" });
  const image = (await sandbox.images()).get(otterVersion);
  if (!image) throw new Error(`no image labelled org.otter-edge.otter-version=${otterVersion} on this engine`);
  const listed = await docker.listImages({ filters: { label: [`org.otter-edge.otter-version=${otterVersion}`] } });
  return { image, candidates: listed.flatMap((i) => i.RepoTags ?? [i.Id]) };
}

/** The runner's pino `graded` lines: submission id → {createMs, startMs, runMs, totalMs}. */
export function runnerTimings(output: string): Map<string, Record<string, number>> {
  const byId = new Map<string, Record<string, number>>();
  for (const line of output.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const entry = JSON.parse(line) as { msg?: string; submissionId?: string; timings?: Record<string, number> };
      if (entry.msg === "graded" && entry.submissionId && entry.timings) byId.set(entry.submissionId, entry.timings);
    } catch {
      // not a log line
    }
  }
  return byId;
}

export interface BuiltAssignment {
  dir: string;
  autograderZip: string;
  /** A correct student submission (score 1), routed to `routing`. */
  submission: string;
  configFile: string;
}

/**
 * Builds bench/trivial/trivial-master.ipynb with the host's `otter assign` (the grading image's
 * otter version, as assignments/sample/build.sh checks) and writes a correct submission and a course
 * config for it. Built at bench time so the zip always matches the otter in .otter-edge/venv.
 */
export async function buildTrivialAssignment(work: string, routing = { course: "bench", section: "1", assignment: "trivial" }): Promise<BuiltAssignment> {
  const dir = join(work, "trivial");
  await mkdir(dir, { recursive: true });
  await copyFile(join(ROOT, "bench", "trivial", "trivial-master.ipynb"), join(dir, "trivial.ipynb"));
  await exec(HOST_OTTER, ["assign", "trivial.ipynb", join(dir, "dist")], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
  const zips = (await readdir(join(dir, "dist", "autograder"))).filter((f) => f.endsWith(".zip"));
  if (zips.length !== 1) throw new Error(`otter assign left ${zips.length} autograder zips`);
  const student = JSON.parse(await readFile(join(dir, "dist", "student", "trivial.ipynb"), "utf8")) as { cells: Array<{ cell_type: string; source: string | string[] }>; metadata: Record<string, unknown> };
  let answered = 0;
  for (const cell of student.cells) {
    const src = Array.isArray(cell.source) ? cell.source.join("") : cell.source;
    if (cell.cell_type === "code" && src.startsWith("x = ...")) {
      cell.source = "x = 1 + 1\nx";
      answered += 1;
    }
  }
  if (answered !== 1) throw new Error(`expected one answer cell "x = ..." in the trivial student notebook, found ${answered}`);
  student.metadata.otter_service = routing;
  const submission = join(dir, "submission.ipynb");
  await writeFile(submission, JSON.stringify(student));
  const configFile = join(dir, "course-config.json");
  await writeFile(configFile, JSON.stringify({ [routing.course]: { [routing.section]: { course_id: "BenchX+Trivial+2026", assignments: { [routing.assignment]: "trivial-lti-block" } } } }));
  return { dir, autograderZip: join(dir, "dist", "autograder", zips[0]!), submission, configFile };
}

/**
 * A STAND-IN FOR GRADING, not a runner: it speaks the runner protocol (hello, then answers every
 * lease at once with a fixed full grade), so the gateway and the Dispatcher do their real work —
 * lease, record the grade once, passback outbox — while no notebook is executed. Like a runner it
 * holds a socket to every Dispatcher shard the welcome names; as it grades instantly, it offers its
 * whole capacity on each.
 */
export class StandInConsumer {
  readonly counts = { leases: 0, accepted: 0, refused: 0, errors: 0 };
  /** Lease job ids in the order they came, to spot a job leased to the stand-in twice. */
  readonly leasedIds: string[] = [];
  private readonly sockets: WebSocket[] = [];

  private constructor(
    private readonly gatewayUrl: string,
    private readonly token: string,
    private readonly hello: string,
  ) {}

  static async connect(gatewayUrl: string, token: string, name: string, capacity: number, otterVersion: string): Promise<StandInConsumer> {
    const consumer = new StandInConsumer(gatewayUrl, token, JSON.stringify({ type: "hello", protocol: 1, runner: name, capacity, otterVersions: [otterVersion], holding: [] }));
    const shards = await consumer.open(0);
    for (let shard = 1; shard < shards; shard++) await consumer.open(shard);
    return consumer;
  }

  /** Opens one shard's socket; resolves with the shard count from its welcome. */
  private async open(shard: number): Promise<number> {
    const socket = new WebSocket(`${this.gatewayUrl.replace(/^http/, "ws")}/runner/v1/connect${shard > 0 ? `?shard=${shard}` : ""}`, { headers: { authorization: `Bearer ${this.token}` } });
    this.sockets.push(socket);
    const welcome = new Promise<number>((resolve, reject) => {
      socket.once("error", reject);
      socket.on("message", (data) => {
        const message = JSON.parse(data.toString()) as { type: string; shards?: number; lease?: { jobId: string; token: string }; accepted?: boolean };
        if (message.type === "welcome") resolve(message.shards ?? 1);
        else this.onMessage(socket, message);
      });
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    socket.send(this.hello);
    return welcome;
  }

  private onMessage(socket: WebSocket, message: { type: string; lease?: { jobId: string; token: string }; accepted?: boolean }): void {
    if (message.type === "lease") {
      this.counts.leases += 1;
      if (message.lease) this.leasedIds.push(message.lease.jobId);
      socket.send(
        JSON.stringify({
          type: "result",
          lease: message.lease,
          outcome: {
            kind: "graded",
            grade: { verdict: "graded", score: 1, points: 1, maxPoints: 1, message: "", tests: [{ name: "q1", score: 1, maxScore: 1, visibility: "visible", output: "stand-in" }] },
            timings: {},
          },
        }),
      );
    } else if (message.type === "ack") {
      if (message.accepted) this.counts.accepted += 1;
      else this.counts.refused += 1;
    } else if (message.type === "error") this.counts.errors += 1;
  }

  close(): void {
    for (const socket of this.sockets) socket.close();
  }
}
