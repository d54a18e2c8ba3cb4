import { randomUUID } from "node:crypto";
import type Docker from "dockerode";
import { type Environment, EnvironmentError, environmentOfZip } from "@otter-edge/shared";
import { ENVIRONMENT_LABEL, EnvironmentImages, type EnvironmentImagesOptions, type GradingImage } from "./environment-images.js";
import { InfrastructureError } from "./errors.js";
import { bounded, exitOf } from "./container-exit.js";
import { ContainerReaper } from "./container-reaper.js";
import {
  type DockerLimits,
  ENGINE_CALL_TIMEOUT_MS,
  GRADER_UID,
  HANDOVER_MARKER,
  JOB_LABEL,
  OTTER_VERSION_LABEL,
  RUNNER_LABEL,
  SANDBOX_CONTRACT,
  SANDBOX_LABEL,
  WARM_JOB,
  WARM_START_CONTRACT,
  WARM_START_LABEL,
  containerSpec,
  engineCall,
  logTail,
} from "./container-spec.js";
import { MAX_RESULTS_BYTES, type Sandbox, type SandboxInput, type SandboxRun } from "./sandbox.js";
import { packFiles, readSingleFile } from "./tar.js";
import { WarmPool, type WarmableImage } from "./warm-pool.js";

// The container's labels, contracts and limits are part of this module's interface to callers.
export { type DockerLimits, JOB_LABEL, OTTER_VERSION_LABEL, RUNNER_LABEL, RUN_LABEL, SANDBOX_CONTRACT, SANDBOX_LABEL, WARM_JOB, WARM_START_CONTRACT, WARM_START_LABEL } from "./container-spec.js";

/** grade.py's exit code when the container cannot keep the student's uid apart: the node's fault, checked before any student code runs. */
const EXIT_SANDBOX_MISCONFIGURED = 70;
/** grade.py's exit code when a warm container's wait for a job ran out: never a grade. */
const EXIT_NO_JOB = 71;
/** How often a running job's container is inspected, in case the engine's answer to wait is lost. */
const EXIT_POLL_MS = 5_000;
/** Exit codes of a container stopped by a signal that neither we nor the memory cap sent: SIGKILL, SIGTERM. */
const KILLED_FROM_OUTSIDE = new Set([137, 143]);

export interface DockerSandboxOptions {
  /**
   * This runner's name, put on every container it starts (org.otter-edge.runner). Containers of this
   * name that this process did not start are orphans of an earlier process and are removed. It must
   * be unique per Docker engine (the default, the hostname, is when one runner owns a node's engine).
   */
  runnerName: string;
  /** After a kill, how long the container may take to exit before the job is given up as an infrastructure failure. */
  killGraceMs?: number;
  /**
   * Warm pool: per otter-grader version, this many containers created and started ahead of time,
   * each waiting with otter imported until a job's files arrive on its /job volume; each grades
   * exactly one job and is removed. 0 or absent: every job starts a container (cold).
   */
  warmPool?: { size: number; maxAgeMs: number };
  /** The org.otter-edge.sandbox value images must carry (default SANDBOX_CONTRACT): to keep a runner on a test build of the image. */
  sandboxContract?: string;
  /** Assignment environments (requirements installed on top of the grading image): build settings. */
  environments?: EnvironmentImagesOptions;
  /** Where the sandbox reports what it does outside a job (reaping, stuck containers). */
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

/**
 * Grades in a fresh container per job: no network, capped memory/CPU/pids, read-only root, every
 * capability dropped but the three that switch uids, no privilege escalation; otter grades as one
 * non-root uid and the student's notebook runs as another (see SANDBOX_LABEL). The job's files travel on an anonymous volume:
 * copied in before start, results copied out after exit, and the volume removed with the container.
 * Nothing of the runner (token, gateway address, Docker socket) is passed in.
 *
 * With a warm pool, the container of a job may have been created and started before the job came
 * (same image, limits, labels and command, plus grade.py's --wait-for): it has then imported otter
 * and waits, with no job files and no student code, until the job's files are copied onto its
 * /job volume. The hand-over is that copy; the time limit starts when it is done. A warm container
 * is taken out of the pool for its job and never handed another: one container, one job.
 */
export class DockerSandbox implements Sandbox {
  readonly description: string;
  /** Per-assignment images with the autograder.zip's requirements installed. */
  readonly environments: EnvironmentImages;
  private readonly reaper: ContainerReaper;
  private readonly pool: WarmPool;
  private readonly killGraceMs: number;
  private readonly contract: string;

  constructor(
    private readonly docker: Docker,
    private readonly limits: DockerLimits,
    private readonly options: DockerSandboxOptions,
  ) {
    const pool = options.warmPool && options.warmPool.size > 0 ? `, warm pool ${options.warmPool.size}` : "";
    this.description = `docker (${limits.runtime ?? "default runtime"}${pool})`;
    this.killGraceMs = options.killGraceMs ?? 30_000;
    this.contract = options.sandboxContract ?? SANDBOX_CONTRACT;
    this.environments = new EnvironmentImages(docker, { ...options.environments, log: options.environments?.log ?? options.log });
    this.reaper = new ContainerReaper(docker, options.runnerName, options.log);
    this.pool = new WarmPool(docker, this.reaper, {
      size: options.warmPool?.size ?? 0,
      maxAgeMs: options.warmPool?.maxAgeMs ?? 0,
      runnerName: options.runnerName,
      limits,
      images: () => engineCall(() => this.imageRefs()),
      log: options.log,
    });
  }

  /** Containers that did not stop after a kill, by id: left in place (and labelled) for an operator. */
  get stuck(): ReadonlyMap<string, { jobId: string; since: string }> {
    return this.reaper.stuck;
  }

  /** The warm pool's counters, for tests and logs. */
  get poolStats() {
    return this.pool.stats;
  }

  /** Removes this runner's containers (and job volumes) that no run of this process owns (ContainerReaper). */
  reapOrphans(): Promise<{ removed: string[]; failed: string[] }> {
    return this.reaper.reapOrphans();
  }

  /** Fills the warm pool (no-op without one); called at start-up and after every job taken from it. */
  fillPool(): void {
    this.pool.fill();
  }

  /** The newest grading image per otter-grader version: its reference, id and whether it can start warm. */
  private async imageRefs(): Promise<Map<string, WarmableImage>> {
    const images = await this.docker.listImages({ filters: { label: [OTTER_VERSION_LABEL, `${SANDBOX_LABEL}=${this.contract}`] } });
    const byVersion = new Map<string, WarmableImage>();
    for (const image of images.sort((a, b) => a.Created - b.Created)) {
      // Environment images inherit the grading image's labels; they are chosen per assignment, below.
      if (image.Labels?.[ENVIRONMENT_LABEL]) continue;
      const version = image.Labels?.[OTTER_VERSION_LABEL];
      if (version)
        byVersion.set(version, { ref: image.RepoTags?.find((t) => t !== "<none>:<none>") ?? image.Id, id: image.Id, warm: image.Labels?.[WARM_START_LABEL] === WARM_START_CONTRACT });
    }
    return byVersion;
  }

  /** The environment an autograder.zip asks for; the gateway checked it at upload. */
  private environmentOf(autograder: Buffer): Environment {
    try {
      return environmentOfZip(autograder);
    } catch (err) {
      if (err instanceof EnvironmentError) throw new InfrastructureError(`the autograder.zip's environment cannot be installed: ${err.message}`);
      throw new InfrastructureError(`the autograder.zip cannot be read: ${String(err)}`);
    }
  }

  /**
   * The image an autograder.zip's jobs grade in: the grading image of its otter version, or its
   * environment image, built (or pulled) now if needed. Also `otter-edge autograder build`.
   */
  async prepareEnvironment(autograder: Buffer, otterVersion: string, onPreparing?: () => void): Promise<GradingImage> {
    const gradingImage = (await engineCall(() => this.imageRefs())).get(otterVersion);
    if (!gradingImage) throw new InfrastructureError(`no grading image for otter-grader ${otterVersion} on this node`);
    return this.environments.imageFor(gradingImage, otterVersion, this.environmentOf(autograder), onPreparing);
  }

  /** Grading images present on this engine, by otter-grader version. */
  async images(): Promise<Map<string, string>> {
    return new Map([...(await this.imageRefs())].map(([version, { ref }]) => [version, ref]));
  }

  async otterVersions(): Promise<string[]> {
    return [...(await this.images()).keys()];
  }

  /** Stops filling the pool and removes its containers, then waits for every removal under way (runner shutting down). */
  async close(): Promise<void> {
    await this.pool.close();
    await this.reaper.settle();
  }

  async run(input: SandboxInput): Promise<SandboxRun> {
    await this.reaper.reapIfPending();
    try {
      return await this.runOnce(input);
    } catch (err) {
      this.reaper.reapBeforeNextJob(); // something went wrong on the engine's side: look for leftovers before the next job
      throw err;
    }
  }

  private async runOnce(input: SandboxInput): Promise<SandboxRun> {
    const timings: Record<string, number> = {};
    const t0 = performance.now();
    const tEnv = performance.now();
    const image = await this.prepareEnvironment(input.autograder, input.otterVersion, () => input.onProgress?.("preparing_environment"));
    timings.environmentMs = performance.now() - tEnv;
    // Warm containers are of grading images proper; an assignment with its own environment starts cold.
    const warm = this.pool.size > 0 && image.warm ? this.pool.take(input.otterVersion, image.id) : undefined;
    // The pool is refilled once this job's container is gone (below), so that starting its
    // replacement does not compete with the job for CPU; an empty pool (or a newly built image) is
    // filled now.
    if (!warm) this.pool.fill();

    let container: Docker.Container;
    let runId: string;
    if (warm) {
      ({ container, runId } = warm);
      timings.warm = 1;
      timings.waitedMs = Date.now() - warm.bornAt; // how long it waited: a check that it was started ahead
    } else {
      runId = randomUUID();
      this.reaper.track(runId);
      try {
        container = await engineCall(() => this.docker.createContainer(containerSpec({ image: image.ref, jobId: input.jobId, runId, runnerName: this.options.runnerName, limits: this.limits })));
      } catch (err) {
        this.reaper.untrack(runId);
        throw err;
      }
    }
    timings.createMs = performance.now() - t0;
    let stuck = false;
    try {
      const files = [
        { name: "submission.ipynb", content: input.notebook },
        // The grader's alone (uid 10001, 0600): it holds the hidden tests, which the student's kernel must not read.
        { name: "autograder.zip", content: input.autograder, mode: 0o600 },
        // The job's settings for grade.py (job_settings), the grader's alone like the zip.
        { name: "job.json", content: Buffer.from(JSON.stringify({ isolation: input.isolation })), mode: 0o600 },
        { name: "out", directory: true },
        // Last, so that a waiting grade.py sees it only once the files before it are complete.
        ...(warm ? [{ name: HANDOVER_MARKER, content: Buffer.alloc(0) }] : []),
      ];
      const tStart = performance.now();
      // Where runMs counts from: cold, the start call (as before the pool); warm, the hand-over copy.
      let tRun = tStart;
      if (warm) {
        // A warm container that exited while waiting is never handed the job (its wait() noticed
        // first, or the job's wait below sees an exit it did not cause: handled as below).
        if (warm.exited) throw new InfrastructureError("docker engine: the warm grading container exited before the hand-over");
        await engineCall(() => container.putArchive(packFiles(files, GRADER_UID), { path: "/job" }));
        timings.startMs = performance.now() - tStart; // the hand-over: the time limit starts now
      } else {
        await engineCall(() => container.putArchive(packFiles(files, GRADER_UID), { path: "/job" }));
        timings.putMs = performance.now() - tStart;
        tRun = performance.now();
        await engineCall(() => container.start());
        timings.startMs = performance.now() - tRun;
      }
      this.options.log?.info({ container: container.id.slice(0, 12), submissionId: input.jobId, warm: Boolean(warm) }, "grading container has the job");

      const ended = await this.waitOrKill(container, input);
      if (ended === "stuck") {
        stuck = true;
        this.reaper.leaveStuck(container, runId, input.jobId);
        this.options.log?.error(
          { container: container.id.slice(0, 12), submissionId: input.jobId, labels: { [JOB_LABEL]: warm ? WARM_JOB : input.jobId, [RUNNER_LABEL]: this.options.runnerName } },
          "grading container did not stop after kill: left for an operator",
        );
        throw new InfrastructureError(
          `container did not stop within ${Math.round(this.killGraceMs / 1000)} s of being killed (container ${container.id.slice(0, 12)}, label ${JOB_LABEL}=${warm ? WARM_JOB : input.jobId}, left for an operator)`,
        );
      }
      const timedOut = ended === "timeout";
      timings.runMs = performance.now() - tRun;

      const state = (await engineCall(() => container.inspect())).State;
      const exitCode = state.ExitCode ?? null;
      // A container stopped by a signal that neither the time limit, the job's abort nor the memory cap
      // sent was stopped from outside (the engine shutting down, an operator): not the student's doing.
      // The student cannot send it: the grader is the container's PID 1, which ignores signals from inside.
      if (ended === "exited" && !state.OOMKilled && exitCode !== null && KILLED_FROM_OUTSIDE.has(exitCode)) {
        throw new InfrastructureError(`docker engine: the grading container was stopped from outside the runner (exit code ${exitCode}; engine shutting down?)`);
      }
      if (ended === "exited" && exitCode === EXIT_SANDBOX_MISCONFIGURED) {
        throw new InfrastructureError(`grading image ${image.ref}: the container could not run the notebook as a separate uid (exit ${exitCode}): ${(await logTail(container)).slice(-500)}`);
      }
      // Only grade.py's wait sends it, before any of the job's files are read: the job never started.
      if (warm && ended === "exited" && exitCode === EXIT_NO_JOB) {
        throw new InfrastructureError(`the warm grading container stopped waiting before its job arrived (exit ${exitCode}): ${(await logTail(container)).slice(-500)}`);
      }
      const tOut = performance.now();
      // Results and log tail in parallel: both only read the stopped container.
      const [{ content, tooLarge }, tail] = await Promise.all([
        bounded(
          container.getArchive({ path: "/job/out/results.json" }).then((stream) => readSingleFile(stream, MAX_RESULTS_BYTES)),
          ENGINE_CALL_TIMEOUT_MS,
          "reading results.json",
        ).catch(() => ({ content: null, tooLarge: false })), // no results.json: the notebook did not finish
        logTail(container),
      ]);
      timings.outMs = performance.now() - tOut;
      timings.totalMs = performance.now() - t0;
      // Removed after the result is returned: the caller reports the grade while the engine removes
      // the container, and waits for `cleanup` before it counts the slot free.
      const cleanup = this.reaper.removeLater(container, runId).then(() => this.pool.fill());
      return { exitCode, timedOut, oomKilled: Boolean(state.OOMKilled), results: content, resultsTooLarge: tooLarge, logTail: tail, timings, container: container.id, cleanup, environment: image.prepared };
    } catch (err) {
      if (!stuck) {
        await this.reaper.removeLater(container, runId); // as before the pool: gone before the failure is reported
        this.pool.fill();
      }
      throw err;
    }
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
    // Bounded by the time limit and the kill grace; also notices an exit whose wait answer was lost.
    const exit = exitOf(container, EXIT_POLL_MS);
    let ended: "exited" | "stuck";
    try {
      ended = await Promise.race([
        exit.exited.then(
          () => "exited" as const,
          (err: Error) => Promise.reject(new InfrastructureError(`docker engine: ${err.message ?? String(err)}`)),
        ),
        gaveUp,
      ]);
    } finally {
      exit.stop();
      clearTimeout(timer);
      clearTimeout(graceTimer);
      input.signal.removeEventListener("abort", onAbort);
    }
    if (ended === "stuck") return "stuck";
    if (input.signal.aborted) throw new InfrastructureError("grading aborted: the lease was revoked or the runner is stopping");
    return timedOut ? "timeout" : "exited";
  }
}
