import Docker from "dockerode";
import { InfrastructureError } from "./errors.js";
import { LOG_TAIL_BYTES, MAX_RESULTS_BYTES, type Sandbox, type SandboxInput, type SandboxRun } from "./sandbox.js";
import { packFiles, readSingleFile } from "./tar.js";

/** The label every grading image carries with the otter-grader version it holds (grading-image/Dockerfile). */
export const OTTER_VERSION_LABEL = "org.otter-edge.otter-version";
const JOB_LABEL = "org.otter-edge.job";
const GRADER_UID = 10001;

export interface DockerLimits {
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  tmpfsBytes: number;
  /** Optional OCI runtime, e.g. "runsc" for gVisor. */
  runtime?: string;
}

/**
 * Grades in a fresh container per job: no network, capped memory/CPU/pids, non-root, read-only root,
 * every capability dropped, no privilege escalation. The job's files travel on an anonymous volume:
 * copied in before start, results copied out after exit, and the volume removed with the container.
 * Nothing of the runner (token, gateway address, Docker socket) is passed in.
 */
export class DockerSandbox implements Sandbox {
  readonly description: string;

  constructor(
    private readonly docker: Docker,
    private readonly limits: DockerLimits,
  ) {
    this.description = `docker (${limits.runtime ?? "default runtime"})`;
  }

  /** Grading images present on this engine, by otter-grader version. */
  async images(): Promise<Map<string, string>> {
    const images = await this.docker.listImages({ filters: { label: [OTTER_VERSION_LABEL] } });
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
    const timings: Record<string, number> = {};
    const t0 = performance.now();
    const image = (await this.engine(() => this.images())).get(input.otterVersion);
    if (!image) throw new InfrastructureError(`no grading image for otter-grader ${input.otterVersion} on this node`);

    const container = await this.engine(() =>
      this.docker.createContainer({
        Image: image,
        User: `${GRADER_UID}:${GRADER_UID}`,
        WorkingDir: "/job",
        Cmd: ["otter", "run", "--no-logo", "-a", "/job/autograder.zip", "-o", "/job/out", "/job/submission.ipynb"],
        Labels: { [JOB_LABEL]: input.jobId },
        Volumes: { "/job": {} },
        HostConfig: {
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
            "/home/grader": "rw,nosuid,nodev,size=16m",
          },
          CapDrop: ["ALL"],
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

      const timedOut = await this.waitOrKill(container, input);
      timings.runMs = performance.now() - tStart;

      const state = (await this.engine(() => container.inspect())).State;
      const { content, tooLarge } = await container
        .getArchive({ path: "/job/out/results.json" })
        .then((stream) => readSingleFile(stream, MAX_RESULTS_BYTES))
        .catch(() => ({ content: null, tooLarge: false })); // no results.json: the notebook did not finish
      const logTail = await this.logTail(container);
      timings.totalMs = performance.now() - t0;
      return { exitCode: state.ExitCode ?? null, timedOut, oomKilled: Boolean(state.OOMKilled), results: content, resultsTooLarge: tooLarge, logTail, timings };
    } finally {
      await container.remove({ v: true, force: true }).catch(() => undefined);
    }
  }

  /** Waits for the container to exit; kills it at the time limit or when the job is aborted. Returns whether it timed out. */
  private async waitOrKill(container: Docker.Container, input: SandboxInput): Promise<boolean> {
    let timedOut = false;
    const kill = () => container.kill().catch(() => undefined);
    const timer = setTimeout(() => {
      timedOut = true;
      void kill();
    }, input.timeoutMs);
    const onAbort = () => void kill();
    input.signal.addEventListener("abort", onAbort);
    try {
      await this.engine(() => container.wait());
    } finally {
      clearTimeout(timer);
      input.signal.removeEventListener("abort", onAbort);
    }
    if (input.signal.aborted) throw new InfrastructureError("grading aborted: the lease was revoked or the runner is stopping");
    return timedOut;
  }

  private async logTail(container: Docker.Container): Promise<string> {
    try {
      const raw = (await container.logs({ stdout: true, stderr: true, tail: 50 })) as unknown as Buffer;
      return demuxToText(raw).slice(-LOG_TAIL_BYTES);
    } catch {
      return "";
    }
  }

  /** Any failure talking to the engine is the node's problem, not the student's. */
  private async engine<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
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
