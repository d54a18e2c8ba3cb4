import type Docker from "dockerode";
import { bounded } from "./container-exit.js";
import { InfrastructureError } from "./errors.js";
import { LOG_TAIL_BYTES } from "./sandbox.js";

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
export const HANDOVER_MARKER = ".otter-edge-job";
export const GRADER_UID = 10001;
/** Engine calls other than the wait for the container's exit must answer within this; a wedged engine is an infrastructure failure. */
export const ENGINE_CALL_TIMEOUT_MS = 60_000;

export interface DockerLimits {
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  tmpfsBytes: number;
  /** Optional OCI runtime, e.g. "runsc" for gVisor. */
  runtime?: string;
}

/**
 * A grading container, cold or warm: only the command's --wait-for differs. A warm container waits
 * at most `warmMaxAgeMs` plus a minute, so it is bounded even when the runner that started it dies.
 */
export function containerSpec(o: { image: string; jobId: string; runId: string; runnerName: string; limits: DockerLimits; warmMaxAgeMs?: number }): Docker.ContainerCreateOptions {
  const labels = { [JOB_LABEL]: o.jobId, [RUNNER_LABEL]: o.runnerName, [RUN_LABEL]: o.runId };
  const wait = o.warmMaxAgeMs !== undefined ? ["--wait-for", `/job/${HANDOVER_MARKER}`, "--wait-max-seconds", String(Math.ceil(o.warmMaxAgeMs / 1000) + 60)] : [];
  return {
    Image: o.image,
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
      Memory: o.limits.memoryBytes,
      MemorySwap: o.limits.memoryBytes,
      NanoCpus: o.limits.nanoCpus,
      PidsLimit: o.limits.pidsLimit,
      ReadonlyRootfs: true,
      Tmpfs: {
        "/tmp": `rw,nosuid,nodev,size=${o.limits.tmpfsBytes}`,
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
      ...(o.limits.runtime ? { Runtime: o.limits.runtime } : {}),
    },
  };
}

/** Any failure talking to the engine is the node's problem, not the student's; so is a call that never answers. */
export async function engineCall<T>(call: () => Promise<T>, timeoutMs = ENGINE_CALL_TIMEOUT_MS): Promise<T> {
  try {
    return await bounded(call(), timeoutMs, "a call");
  } catch (err) {
    if (err instanceof InfrastructureError) throw err;
    throw new InfrastructureError(`docker engine: ${(err as Error).message ?? String(err)}`);
  }
}

/** The last lines the container wrote (stdout and stderr), as text; empty when the engine cannot say. */
export async function logTail(container: Docker.Container): Promise<string> {
  try {
    const raw = (await bounded(container.logs({ stdout: true, stderr: true, tail: 50 }), ENGINE_CALL_TIMEOUT_MS, "reading the container log")) as unknown as Buffer;
    return demuxToText(raw).slice(-LOG_TAIL_BYTES);
  } catch {
    return "";
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
