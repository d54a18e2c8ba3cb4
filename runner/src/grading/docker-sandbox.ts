import { randomUUID } from "node:crypto";
import Docker from "dockerode";
import { type Environment, EnvironmentError, environmentOfZip } from "@otter-edge/shared";
import { ENVIRONMENT_LABEL, EnvironmentImages, type EnvironmentImagesOptions, type GradingImage } from "./environment-images.js";
import { InfrastructureError } from "./errors.js";
import { bounded, exitOf } from "./container-exit.js";
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
/**
 * Images whose driver can start before its job (grade.py --wait-for): the runner may keep such
 * containers started and waiting (the warm pool). An image without it is always started cold.
 */
export const WARM_START_LABEL = "org.otter-edge.warm-start";
export const WARM_START_CONTRACT = "wait-for-1";
/** The job label of a warm container: it is created before it has a job (labels cannot change later). */
export const WARM_JOB = "(warm)";
/** The last entry of a warm container's job archive: when grade.py sees it, the files before it are complete. */
const HANDOVER_MARKER = ".otter-edge-job";
const GRADER_UID = 10001;
/** grade.py's exit code when the container cannot keep the student's uid apart: the node's fault, checked before any student code runs. */
const EXIT_SANDBOX_MISCONFIGURED = 70;
/** Engine calls other than the wait for the container's exit must answer within this; a wedged engine is an infrastructure failure. */
const ENGINE_CALL_TIMEOUT_MS = 60_000;
/** grade.py's exit code when a warm container's wait for a job ran out: never a grade. */
const EXIT_NO_JOB = 71;
/** How often a running job's container is inspected, in case the engine's answer to wait is lost. */
const EXIT_POLL_MS = 5_000;
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

interface WarmContainer {
  container: Docker.Container;
  /** The run label it was created with: kept in `live` from its creation until its removal. */
  runId: string;
  version: string;
  imageId: string;
  bornAt: number;
  /** Set when it exited while waiting (it is then useless: discarded, never handed a job). */
  exited: boolean;
  retire: NodeJS.Timeout;
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
  /** Runs of this process whose container may exist (jobs and warm containers): never reaped. */
  private readonly live = new Set<string>();
  /** Containers that did not stop after a kill, by id: left in place (and labelled) for an operator, not reaped by this process. */
  readonly stuck = new Map<string, { jobId: string; since: string }>();
  /** Set when removing a finished container failed (engine down): the next job first reaps orphans. */
  private reapPending = false;
  private readonly killGraceMs: number;
  private readonly contract: string;
  /** Started containers waiting for a job, oldest first. */
  private readonly warm: WarmContainer[] = [];
  /** Warm containers being created and started, by otter version. */
  private readonly warming = new Map<string, number>();
  /** Container removals still under way (a job's container is removed after its result is returned). */
  private readonly removals = new Set<Promise<void>>();
  private closed = false;
  /** Counters for tests and logs. */
  readonly poolStats = { started: 0, handedOver: 0, retired: 0, diedWaiting: 0 };

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
  }

  private get poolSize(): number {
    return this.closed ? 0 : (this.options.warmPool?.size ?? 0);
  }

  /**
   * Removes the containers of this runner's name that no run of this process owns: left by a runner
   * process that was killed (a killed runner leaves its container running, and its warm containers
   * waiting), or by a removal that failed while the engine was away. Containers of other runners
   * sharing the engine are not touched.
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

  /** The newest grading image per otter-grader version: its reference, id and whether it can start warm. */
  private async imageRefs(): Promise<Map<string, { ref: string; id: string; warm: boolean }>> {
    const images = await this.docker.listImages({ filters: { label: [OTTER_VERSION_LABEL, `${SANDBOX_LABEL}=${this.contract}`] } });
    const byVersion = new Map<string, { ref: string; id: string; warm: boolean }>();
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
    const gradingImage = (await this.engine(() => this.imageRefs())).get(otterVersion);
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

  /** Fills the warm pool (no-op without one); called at start-up and after every job taken from it. */
  fillPool(): void {
    if (this.poolSize === 0) return;
    void this.fillPoolOnce().catch((err) => this.options.log?.warn({ err: String(err) }, "could not fill the warm pool"));
  }

  private async fillPoolOnce(): Promise<void> {
    const images = await this.engine(() => this.imageRefs());
    for (const [version, image] of images) {
      if (!image.warm) continue; // an image whose driver cannot wait for its job: its jobs start cold
      // Counted after the await, synchronously with the increments below: concurrent fills never overshoot.
      let have = this.warm.filter((w) => w.version === version && w.imageId === image.id && !w.exited).length + (this.warming.get(version) ?? 0);
      while (have < this.poolSize) {
        have += 1;
        this.warming.set(version, (this.warming.get(version) ?? 0) + 1);
        void this.startWarm(version, image)
          .catch((err) => this.options.log?.warn({ otterVersion: version, err: String(err) }, "could not start a warm grading container"))
          .finally(() => this.warming.set(version, (this.warming.get(version) ?? 1) - 1));
      }
    }
  }

  private async startWarm(version: string, image: { ref: string; id: string }): Promise<void> {
    const runId = randomUUID();
    this.live.add(runId);
    let container: Docker.Container | undefined;
    try {
      container = await this.engine(() => this.docker.createContainer(this.createOptions(image.id, WARM_JOB, runId, true)));
      await this.engine(() => container!.start());
    } catch (err) {
      if (container) this.removeLater(container, runId);
      else this.live.delete(runId);
      throw err;
    }
    const w: WarmContainer = { container, runId, version, imageId: image.id, bornAt: Date.now(), exited: false, retire: undefined as unknown as NodeJS.Timeout };
    if (this.closed) {
      this.removeLater(container, runId);
      return;
    }
    this.poolStats.started += 1;
    // Retired unused after maxAgeMs, so a new image or engine setting takes effect on an idle runner too.
    w.retire = setTimeout(() => {
      if (!this.dropWarm(w)) return;
      this.poolStats.retired += 1;
      this.removeLater(w.container, w.runId);
      this.fillPool();
    }, this.options.warmPool!.maxAgeMs);
    w.retire.unref();
    // A warm container that exits while waiting (its check of the sandbox failed, or it was killed)
    // is never handed a job. Not replaced at once: a broken image would loop; the next job refills.
    void container.wait().then(
      () => {
        w.exited = true;
        if (!this.dropWarm(w)) return;
        this.poolStats.diedWaiting += 1;
        void this.logTail(w.container).then((tail) =>
          this.options.log?.error({ container: w.container.id.slice(0, 12), otterVersion: version, log: tail.slice(-500) }, "a warm grading container exited before it got a job"),
        );
        this.removeLater(w.container, w.runId);
      },
      () => undefined, // the engine went away: the hand-over fails and the job is retried
    );
    this.warm.push(w);
    this.options.log?.info({ container: container.id.slice(0, 12), otterVersion: version }, "warm grading container waiting for a job");
  }

  /** Takes `w` out of the pool; false when it was not there (already taken, retired or dead). */
  private dropWarm(w: WarmContainer): boolean {
    const i = this.warm.indexOf(w);
    if (i < 0) return false;
    this.warm.splice(i, 1);
    clearTimeout(w.retire);
    return true;
  }

  /** A warm container of exactly this image for one job, out of the pool for good; or none. */
  private takeWarm(version: string, imageId: string): WarmContainer | undefined {
    for (const w of [...this.warm]) {
      if (w.version !== version || w.exited) continue;
      this.dropWarm(w);
      if (w.imageId === imageId) return w;
      // Started from an image that is no longer the newest for this version: never used.
      this.poolStats.retired += 1;
      this.removeLater(w.container, w.runId);
    }
    return undefined;
  }

  /** Stops filling the pool and removes its containers, then waits for every removal under way (runner shutting down). */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.warm]) {
      this.dropWarm(w);
      this.removeLater(w.container, w.runId);
    }
    while (this.removals.size > 0) await Promise.all([...this.removals]);
  }

  /** Removes a container in the background; its run stays live (not reaped) until then. */
  private removeLater(container: Docker.Container, runId: string): Promise<void> {
    const removal = bounded(container.remove({ v: true, force: true }), ENGINE_CALL_TIMEOUT_MS, "removing the container")
      .catch((err) => {
        if ((err as { statusCode?: number }).statusCode === 404) return;
        this.reapPending = true; // engine away: removed by the next job's reaping, or at the next start
      })
      .finally(() => {
        this.live.delete(runId);
        this.removals.delete(removal);
      });
    this.removals.add(removal);
    return removal;
  }

  async run(input: SandboxInput): Promise<SandboxRun> {
    if (this.reapPending) {
      this.reapPending = false;
      await this.reapOrphans().catch(() => (this.reapPending = true));
    }
    try {
      return await this.runOnce(input);
    } catch (err) {
      this.reapPending = true; // something went wrong on the engine's side: look for leftovers before the next job
      throw err;
    }
  }

  /** Create options shared by cold and warm containers: only the command's --wait-for differs. */
  private createOptions(image: string, jobId: string, runId: string, warm: boolean): Docker.ContainerCreateOptions {
    const labels = { [JOB_LABEL]: jobId, [RUNNER_LABEL]: this.options.runnerName, [RUN_LABEL]: runId };
    // A warm container waits at most a little longer than the runner keeps it: bounded even when the runner dies.
    const wait = warm ? ["--wait-for", `/job/${HANDOVER_MARKER}`, "--wait-max-seconds", String(Math.ceil(this.options.warmPool!.maxAgeMs / 1000) + 60)] : [];
    return {
      Image: image,
      // Root only for the exec of setpriv: /opt/otter-edge/grade drops to the grader uid (10001) at once,
      // keeping CAP_SETUID/SETGID/SETPCAP so it can start the notebook's kernel as the student uid (10002),
      // which cannot write the tests, the results or /job/out, nor signal or trace the grader.
      User: "0:0",
      WorkingDir: "/job",
      Cmd: ["/opt/otter-edge/grade", ...wait, "-a", "/job/autograder.zip", "-o", "/job/out", "/job/submission.ipynb"],
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
    };
  }

  private async runOnce(input: SandboxInput): Promise<SandboxRun> {
    const timings: Record<string, number> = {};
    const t0 = performance.now();
    const tEnv = performance.now();
    const image = await this.prepareEnvironment(input.autograder, input.otterVersion, () => input.onProgress?.("preparing_environment"));
    timings.environmentMs = performance.now() - tEnv;
    // Warm containers are of grading images proper; an assignment with its own environment starts cold.
    const warm = this.poolSize > 0 && image.warm ? this.takeWarm(input.otterVersion, image.id) : undefined;
    // The pool is refilled once this job's container is gone (below), so that starting its
    // replacement does not compete with the job for CPU; an empty pool (or a newly built image) is
    // filled now.
    if (!warm) this.fillPool();

    let container: Docker.Container;
    let runId: string;
    if (warm) {
      ({ container, runId } = warm);
      this.poolStats.handedOver += 1;
      timings.warm = 1;
      timings.waitedMs = Date.now() - warm.bornAt; // how long it waited: a check that it was started ahead
    } else {
      runId = randomUUID();
      this.live.add(runId);
      try {
        container = await this.engine(() => this.docker.createContainer(this.createOptions(image.ref, input.jobId, runId, false)));
      } catch (err) {
        this.live.delete(runId);
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
        await this.engine(() => container.putArchive(packFiles(files, GRADER_UID), { path: "/job" }));
        timings.startMs = performance.now() - tStart; // the hand-over: the time limit starts now
      } else {
        await this.engine(() => container.putArchive(packFiles(files, GRADER_UID), { path: "/job" }));
        timings.putMs = performance.now() - tStart;
        tRun = performance.now();
        await this.engine(() => container.start());
        timings.startMs = performance.now() - tRun;
      }
      this.options.log?.info({ container: container.id.slice(0, 12), submissionId: input.jobId, warm: Boolean(warm) }, "grading container has the job");

      const ended = await this.waitOrKill(container, input);
      if (ended === "stuck") {
        stuck = true;
        this.stuck.set(container.id, { jobId: input.jobId, since: new Date().toISOString() });
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

      const state = (await this.engine(() => container.inspect())).State;
      const exitCode = state.ExitCode ?? null;
      // A container stopped by a signal that neither the time limit, the job's abort nor the memory cap
      // sent was stopped from outside (the engine shutting down, an operator): not the student's doing.
      // The student cannot send it: the grader is the container's PID 1, which ignores signals from inside.
      if (ended === "exited" && !state.OOMKilled && exitCode !== null && KILLED_FROM_OUTSIDE.has(exitCode)) {
        throw new InfrastructureError(`docker engine: the grading container was stopped from outside the runner (exit code ${exitCode}; engine shutting down?)`);
      }
      if (ended === "exited" && exitCode === EXIT_SANDBOX_MISCONFIGURED) {
        throw new InfrastructureError(`grading image ${image.ref}: the container could not run the notebook as a separate uid (exit ${exitCode}): ${(await this.logTail(container)).slice(-500)}`);
      }
      // Only grade.py's wait sends it, before any of the job's files are read: the job never started.
      if (warm && ended === "exited" && exitCode === EXIT_NO_JOB) {
        throw new InfrastructureError(`the warm grading container stopped waiting before its job arrived (exit ${exitCode}): ${(await this.logTail(container)).slice(-500)}`);
      }
      const tOut = performance.now();
      // Results and log tail in parallel: both only read the stopped container.
      const [{ content, tooLarge }, logTail] = await Promise.all([
        bounded(
          container.getArchive({ path: "/job/out/results.json" }).then((stream) => readSingleFile(stream, MAX_RESULTS_BYTES)),
          ENGINE_CALL_TIMEOUT_MS,
          "reading results.json",
        ).catch(() => ({ content: null, tooLarge: false })), // no results.json: the notebook did not finish
        this.logTail(container),
      ]);
      timings.outMs = performance.now() - tOut;
      timings.totalMs = performance.now() - t0;
      // Removed after the result is returned: the caller reports the grade while the engine removes
      // the container, and waits for `cleanup` before it counts the slot free.
      const cleanup = this.removeLater(container, runId).then(() => this.fillPool());
      return { exitCode, timedOut, oomKilled: Boolean(state.OOMKilled), results: content, resultsTooLarge: tooLarge, logTail, timings, container: container.id, cleanup, environment: image.prepared };
    } catch (err) {
      if (stuck) {
        this.live.delete(runId);
        this.cleanUpWhenStopped(container, input.jobId);
      } else {
        await this.removeLater(container, runId); // as before the pool: gone before the failure is reported
        this.fillPool();
      }
      throw err;
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
