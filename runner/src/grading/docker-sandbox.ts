import { randomUUID } from "node:crypto";
import Docker from "dockerode";
import { InfrastructureError } from "./errors.js";
import { LOG_TAIL_BYTES, MAX_RESULTS_BYTES, type Sandbox, type SandboxInput, type SandboxRun } from "./sandbox.js";
import { packFiles, readSingleFile } from "./tar.js";

/** The label every grading image carries with the otter-grader version it holds (grading-image/Dockerfile). */
export const OTTER_VERSION_LABEL = "org.otter-edge.otter-version";
/** Every grading container carries the job it grades, the runner that started it, and the run (one per sandbox.run). */
export const JOB_LABEL = "org.otter-edge.job";
export const RUNNER_LABEL = "org.otter-edge.runner";
export const RUN_LABEL = "org.otter-edge.run";
/**
 * The container contract a grading image must declare (grading-image/Dockerfile): "uid-split-1" =
 * start as root with only CAP_SETUID, CAP_SETGID and CAP_SETPCAP and run /opt/otter-edge/grade, which drops to the
 * grader uid at once and runs the student's kernel as a second uid. Images without it are not used:
 * run with this command they would fail every job, and as plain `otter run` the notebook could
 * rewrite its own tests and results.
 */
export const SANDBOX_LABEL = "org.otter-edge.sandbox";
export const SANDBOX_CONTRACT = "uid-split-1";
const GRADER_UID = 10001;
/** grade.py's exit code when the container cannot keep the student's uid apart: the node's fault, checked before any student code runs. */
const EXIT_SANDBOX_MISCONFIGURED = 70;
/** Engine calls other than the wait for the container's exit must answer within this; a wedged engine is an infrastructure failure. */
const ENGINE_CALL_TIMEOUT_MS = 60_000;
/** Exit codes of a container stopped by a signal that neither we nor the memory cap sent: SIGKILL, SIGTERM. */
const KILLED_FROM_OUTSIDE = new Set([137, 143]);

export interface DockerLimits {
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  tmpfsBytes: number;
  /** Optional OCI runtime, e.g. "runsc" for gVisor. */
  runtime?: string;
}

export interface DockerSandboxOptions {
  /**
   * This runner's name, put on every container it starts (org.otter-edge.runner). Containers of this
   * name that this process did not start are orphans of an earlier process and are removed. It must
   * be unique per Docker engine (the default, the hostname, is when one runner owns a node's engine).
   */
  runnerName: string;
  /** After a kill, how long the container may take to exit before the job is given up as an infrastructure failure. */
  killGraceMs?: number;
  /** Where the sandbox reports what it does outside a job (reaping, stuck containers). */
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

/**
 * Grades in a fresh container per job: no network, capped memory/CPU/pids, read-only root, every
 * capability dropped but the three that switch uids, no privilege escalation; otter grades as one
 * non-root uid and the student's notebook runs as another (see SANDBOX_LABEL). The job's files travel on an anonymous volume:
 * copied in before start, results copied out after exit, and the volume removed with the container.
 * Nothing of the runner (token, gateway address, Docker socket) is passed in.
 */
export class DockerSandbox implements Sandbox {
  readonly description: string;
  /** Runs of this process whose container may exist: never reaped. */
  private readonly live = new Set<string>();
  /** Containers that did not stop after a kill, by id: left in place (and labelled) for an operator, not reaped by this process. */
  readonly stuck = new Map<string, { jobId: string; since: string }>();
  /** Set when removing a finished container failed (engine down): the next job first reaps orphans. */
  private reapPending = false;
  private readonly killGraceMs: number;

  constructor(
    private readonly docker: Docker,
    private readonly limits: DockerLimits,
    private readonly options: DockerSandboxOptions,
  ) {
    this.description = `docker (${limits.runtime ?? "default runtime"})`;
    this.killGraceMs = options.killGraceMs ?? 30_000;
  }

  /**
   * Removes the containers of this runner's name that no run of this process owns: left by a runner
   * process that was killed (a killed runner leaves its container running), or by a removal that
   * failed while the engine was away. Containers of other runners sharing the engine are not touched.
   */
  async reapOrphans(): Promise<{ removed: string[]; failed: string[] }> {
    const removed: string[] = [];
    const failed: string[] = [];
    const containers = await this.engine(() => this.docker.listContainers({ all: true, filters: { label: [`${RUNNER_LABEL}=${this.options.runnerName}`] } }));
    await Promise.all(
      containers.map(async (c) => {
        const run = c.Labels?.[RUN_LABEL];
        if ((run && this.live.has(run)) || this.stuck.has(c.Id)) return;
        try {
          await bounded(this.docker.getContainer(c.Id).remove({ v: true, force: true }), ENGINE_CALL_TIMEOUT_MS, "removing an orphan container");
          removed.push(c.Id);
          this.options.log?.info({ container: c.Id.slice(0, 12), submissionId: c.Labels?.[JOB_LABEL], state: c.State }, "removed an orphan grading container");
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode === 404) return; // gone meanwhile
          failed.push(c.Id);
          this.options.log?.error({ container: c.Id.slice(0, 12), submissionId: c.Labels?.[JOB_LABEL], err: String(err) }, "could not remove an orphan grading container");
        }
      }),
    );
    // Job volumes no container uses any more (the engine removed a container but not its volume, e.g. while shutting down).
    const volumes = await this.engine(() => this.docker.listVolumes({ filters: { label: [`${RUNNER_LABEL}=${this.options.runnerName}`], dangling: ["true"] } }));
    for (const v of volumes.Volumes ?? []) {
      await bounded(this.docker.getVolume(v.Name).remove(), ENGINE_CALL_TIMEOUT_MS, "removing an orphan volume").then(
        () => this.options.log?.info({ volume: v.Name.slice(0, 12), submissionId: v.Labels?.[JOB_LABEL] }, "removed an orphan job volume"),
        (err) => this.options.log?.warn({ volume: v.Name.slice(0, 12), err: String(err) }, "could not remove an orphan job volume"),
      );
    }
    return { removed, failed };
  }

  /** Grading images present on this engine, by otter-grader version. */
  async images(): Promise<Map<string, string>> {
    const images = await this.docker.listImages({ filters: { label: [OTTER_VERSION_LABEL, `${SANDBOX_LABEL}=${SANDBOX_CONTRACT}`] } });
    const byVersion = new Map<string, string>();
    for (const image of images.sort((a, b) => a.Created - b.Created)) {
      const version = image.Labels?.[OTTER_VERSION_LABEL];
      if (version) byVersion.set(version, image.RepoTags?.find((t) => t !== "<none>:<none>") ?? image.Id);
    }
    return byVersion;
  }

  async otterVersions(): Promise<string[]> {
    return [...(await this.images()).keys()];
  }

  async run(input: SandboxInput): Promise<SandboxRun> {
    if (this.reapPending) {
      this.reapPending = false;
      await this.reapOrphans().catch(() => (this.reapPending = true));
    }
    const runId = randomUUID();
    this.live.add(runId);
    try {
      return await this.runOnce(input, runId);
    } catch (err) {
      this.reapPending = true; // something went wrong on the engine's side: look for leftovers before the next job
      throw err;
    } finally {
      this.live.delete(runId);
    }
  }

  private async runOnce(input: SandboxInput, runId: string): Promise<SandboxRun> {
    const timings: Record<string, number> = {};
    const t0 = performance.now();
    const image = (await this.engine(() => this.images())).get(input.otterVersion);
    if (!image) throw new InfrastructureError(`no grading image for otter-grader ${input.otterVersion} on this node`);
    const labels = { [JOB_LABEL]: input.jobId, [RUNNER_LABEL]: this.options.runnerName, [RUN_LABEL]: runId };

    const container = await this.engine(() =>
      this.docker.createContainer({
        Image: image,
        // Root only for the exec of setpriv: /opt/otter-edge/grade drops to the grader uid (10001) at once,
        // keeping CAP_SETUID/SETGID/SETPCAP so it can start the notebook's kernel as the student uid (10002),
        // which cannot write the tests, the results or /job/out, nor signal or trace the grader.
        User: "0:0",
        WorkingDir: "/job",
        Cmd: ["/opt/otter-edge/grade", "-a", "/job/autograder.zip", "-o", "/job/out", "/job/submission.ipynb"],
        Labels: labels,
        HostConfig: {
          // The job's directory: an anonymous volume (removed with the container), labelled like the
          // container so that one orphaned by a removal the engine left half done is found and reaped.
          Mounts: [{ Type: "volume", Source: "", Target: "/job", VolumeOptions: { Labels: labels, NoCopy: false, DriverConfig: { Name: "local", Options: {} } } }],
          // Only loopback: the kernel and otter talk over it. (NetworkDisabled would also drop
          // /etc/hosts, and otter then fails to resolve "localhost".)
          NetworkMode: "none",
          Memory: this.limits.memoryBytes,
          MemorySwap: this.limits.memoryBytes,
          NanoCpus: this.limits.nanoCpus,
          PidsLimit: this.limits.pidsLimit,
          ReadonlyRootfs: true,
          Tmpfs: {
            "/tmp": `rw,nosuid,nodev,size=${this.limits.tmpfsBytes}`,
            // The grader's private state (Jupyter runtime with the kernel's connection file, caches): 0700.
            "/home/grader": `rw,nosuid,nodev,size=16m,uid=${GRADER_UID},gid=${GRADER_UID},mode=0700`,
          },
          CapDrop: ["ALL"],
          // The only capabilities: SETUID/SETGID switch to the grader and the student uids, SETPCAP empties
          // the student kernel's bounding set. no-new-privileges stays (setpriv needs no setuid binary);
          // the student's process holds no capability and can never gain one.
          CapAdd: ["SETUID", "SETGID", "SETPCAP"],
          SecurityOpt: ["no-new-privileges"],
          Ulimits: [{ Name: "nofile", Soft: 1024, Hard: 1024 }],
          // The engine keeps everything the container writes to stdout/stderr in a log file on the
          // host's disk, uncapped by default: a notebook writing to /proc/1/fd/1 fills it at tens of
          // MB/s. We only ever read the last lines: 1 MiB per file (the engine may keep one rotated file).
          LogConfig: { Type: "json-file", Config: { "max-size": "1m", "max-file": "1" } },
          ...(this.limits.runtime ? { Runtime: this.limits.runtime } : {}),
        },
      }),
    );
    timings.createMs = performance.now() - t0;
    let stuck = false;
    try {
      await this.engine(() =>
        container.putArchive(
          packFiles(
            [
              { name: "submission.ipynb", content: input.notebook },
              { name: "autograder.zip", content: input.autograder },
              { name: "out", directory: true },
            ],
            GRADER_UID,
          ),
          { path: "/job" },
        ),
      );
      const tStart = performance.now();
      await this.engine(() => container.start());
      timings.startMs = performance.now() - tStart;

      const ended = await this.waitOrKill(container, input);
      if (ended === "stuck") {
        stuck = true;
        this.stuck.set(container.id, { jobId: input.jobId, since: new Date().toISOString() });
        this.options.log?.error(
          { container: container.id.slice(0, 12), submissionId: input.jobId, labels: { [JOB_LABEL]: input.jobId, [RUNNER_LABEL]: this.options.runnerName } },
          "grading container did not stop after kill: left for an operator",
        );
        throw new InfrastructureError(
          `container did not stop within ${Math.round(this.killGraceMs / 1000)} s of being killed (container ${container.id.slice(0, 12)}, label ${JOB_LABEL}=${input.jobId}, left for an operator)`,
        );
      }
      const timedOut = ended === "timeout";
      timings.runMs = performance.now() - tStart;

      const state = (await this.engine(() => container.inspect())).State;
      const exitCode = state.ExitCode ?? null;
      // A container stopped by a signal that neither the time limit, the job's abort nor the memory cap
      // sent was stopped from outside (the engine shutting down, an operator): not the student's doing.
      // The student cannot send it: the grader is the container's PID 1, which ignores signals from inside.
      if (ended === "exited" && !state.OOMKilled && exitCode !== null && KILLED_FROM_OUTSIDE.has(exitCode)) {
        throw new InfrastructureError(`docker engine: the grading container was stopped from outside the runner (exit code ${exitCode}; engine shutting down?)`);
      }
      if (ended === "exited" && exitCode === EXIT_SANDBOX_MISCONFIGURED) {
        throw new InfrastructureError(`grading image ${image}: the container could not run the notebook as a separate uid (exit ${exitCode}): ${(await this.logTail(container)).slice(-500)}`);
      }
      const { content, tooLarge } = await bounded(
        container.getArchive({ path: "/job/out/results.json" }).then((stream) => readSingleFile(stream, MAX_RESULTS_BYTES)),
        ENGINE_CALL_TIMEOUT_MS,
        "reading results.json",
      ).catch(() => ({ content: null, tooLarge: false })); // no results.json: the notebook did not finish
      const logTail = await this.logTail(container);
      timings.totalMs = performance.now() - t0;
      return { exitCode, timedOut, oomKilled: Boolean(state.OOMKilled), results: content, resultsTooLarge: tooLarge, logTail, timings };
    } finally {
      if (stuck) this.cleanUpWhenStopped(container, input.jobId);
      else
        await bounded(container.remove({ v: true, force: true }), ENGINE_CALL_TIMEOUT_MS, "removing the container").catch(() => {
          this.reapPending = true; // engine away: removed by the next job's reaping, or at the next start
        });
    }
  }

  /** A stuck container that exits after all (the runtime came back) is removed then. */
  private cleanUpWhenStopped(container: Docker.Container, jobId: string): void {
    void container
      .wait()
      .then(() => container.remove({ v: true, force: true }))
      .then(
        () => {
          this.stuck.delete(container.id);
          this.options.log?.info({ container: container.id.slice(0, 12), submissionId: jobId }, "a stuck grading container stopped at last and was removed");
        },
        () => undefined, // still stuck, or the engine is gone: the next start's reaping tries again
      );
  }

  /**
   * Waits for the container to exit; kills it at the time limit or when the job is aborted. A killed
   * container that has not exited `killGraceMs` later (a wedged runtime: the kill itself hangs) is
   * "stuck": the job gives up on it so the slot is freed. The wait is never left unbounded after a kill.
   */
  private async waitOrKill(container: Docker.Container, input: SandboxInput): Promise<"exited" | "timeout" | "stuck"> {
    let timedOut = false;
    let killed = false;
    let graceTimer: NodeJS.Timeout | undefined;
    let giveUp: () => void = () => undefined;
    const gaveUp = new Promise<"stuck">((resolve) => (giveUp = () => resolve("stuck")));
    const kill = () => {
      if (killed) return;
      killed = true;
      void container.kill().catch(() => undefined);
      graceTimer = setTimeout(giveUp, this.killGraceMs);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, input.timeoutMs);
    const onAbort = () => kill();
    if (input.signal.aborted) kill();
    else input.signal.addEventListener("abort", onAbort);
    const waited = this.engine(() => container.wait(), 0); // bounded by the time limit and the kill grace
    waited.catch(() => undefined); // when the job gave up on a stuck container, nobody awaits this any more
    let ended: "exited" | "stuck";
    try {
      ended = await Promise.race([waited.then(() => "exited" as const), gaveUp]);
    } finally {
      clearTimeout(timer);
      clearTimeout(graceTimer);
      input.signal.removeEventListener("abort", onAbort);
    }
    if (ended === "stuck") return "stuck";
    if (input.signal.aborted) throw new InfrastructureError("grading aborted: the lease was revoked or the runner is stopping");
    return timedOut ? "timeout" : "exited";
  }

  private async logTail(container: Docker.Container): Promise<string> {
    try {
      const raw = (await bounded(container.logs({ stdout: true, stderr: true, tail: 50 }), ENGINE_CALL_TIMEOUT_MS, "reading the container log")) as unknown as Buffer;
      return demuxToText(raw).slice(-LOG_TAIL_BYTES);
    } catch {
      return "";
    }
  }

  /** Any failure talking to the engine is the node's problem, not the student's; so is a call that never answers (timeoutMs 0: no bound). */
  private async engine<T>(call: () => Promise<T>, timeoutMs = ENGINE_CALL_TIMEOUT_MS): Promise<T> {
    try {
      return timeoutMs > 0 ? await bounded(call(), timeoutMs, "a call") : await call();
    } catch (err) {
      if (err instanceof InfrastructureError) throw err;
      throw new InfrastructureError(`docker engine: ${(err as Error).message ?? String(err)}`);
    }
  }
}

/** Rejects when `promise` has not settled within `ms`; the engine can hang a call forever (a wedged runtime). */
function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new InfrastructureError(`docker engine: ${what} did not answer within ${ms / 1000} s`)), ms)));
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Docker multiplexes stdout/stderr in 8-byte-header frames when there is no TTY. */
function demuxToText(raw: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= raw.length) {
    const size = raw.readUInt32BE(offset + 4);
    parts.push(raw.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString("utf8");
}
