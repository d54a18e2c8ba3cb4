import type { Grade, JobSpec, LeaseMessage, LeaseRef } from "@otter-edge/shared";
import { PROTOCOL_VERSION, ResultMessage } from "@otter-edge/shared";
import type { Artifacts } from "./artifacts.js";
import type { GatewayConnection } from "./connection.js";
import { InfrastructureError } from "./grading/errors.js";
import { gradeFromRun } from "./grading/results.js";
import type { Sandbox } from "./grading/sandbox.js";
import type { Logger } from "./log.js";
import type { RunnerMetrics } from "./metrics.js";

type ResultOutcome = import("@otter-edge/shared").ResultMessage["outcome"];

interface ActiveJob {
  lease: LeaseRef;
  attempt: number;
  job: JobSpec;
  abort: AbortController;
  done: Promise<void>;
  /** The sandbox's cleanup after the job (container removal), awaited after the result is sent. */
  cleanup?: Promise<void>;
}

export interface AgentOptions {
  name: string;
  capacity: number;
  connection: GatewayConnection;
  sandbox: Sandbox;
  artifacts: Artifacts;
  log: Logger;
  metrics?: RunnerMetrics;
}

/**
 * Takes leases from the gateway up to its capacity, grades each in the sandbox, reports results and
 * heartbeats for what it holds. A job whose lease is revoked is stopped and not reported.
 */
export class Agent {
  private readonly active = new Map<string, ActiveJob>();
  /**
   * Results sent (or due) but not yet acknowledged, by job id. A result finished while the gateway was
   * away, or lost with a socket that dropped, is sent again after the next welcome: its lease is
   * named in hello, so the gateway keeps it if it is still current.
   */
  private readonly unacked = new Map<string, ResultMessage>();
  private heartbeat: NodeJS.Timeout | null = null;
  private draining = false;
  private otterVersions: string[] = [];
  /** Counters for tests and logs. */
  readonly stats = { graded: 0, infrastructureErrors: 0, refused: 0 };

  constructor(private readonly options: AgentOptions) {}

  async start(): Promise<void> {
    this.otterVersions = await this.options.sandbox.otterVersions();
    const { connection, log } = this.options;
    const metrics = this.options.metrics;
    metrics?.capacity.set(this.options.capacity);
    connection.on("open", () => {
      metrics?.connected.set(1);
      this.hello();
    });
    connection.on("close", () => {
      metrics?.connected.set(0);
      this.stopHeartbeat();
    });
    connection.on("message", (message) => {
      switch (message.type) {
        case "welcome":
          for (const lease of message.dropped) {
            this.abort(lease.jobId, "dropped by the gateway after reconnect");
            this.forgetResult(lease, "dropped by the gateway after reconnect");
          }
          this.startHeartbeat(message.heartbeatMs);
          for (const result of this.unacked.values()) {
            log.info({ submissionId: result.lease.jobId }, "sending a result again after reconnecting");
            connection.send(result);
          }
          break;
        case "lease":
          this.onLease(message);
          break;
        case "revoke":
          this.abort(message.lease.jobId, message.reason, message.lease.token);
          this.forgetResult(message.lease, message.reason);
          break;
        case "ack":
          this.forgetResult(message.lease);
          if (!message.accepted) {
            this.stats.refused += 1;
            log.warn({ submissionId: message.lease.jobId, reason: message.reason }, "gateway refused the result");
          }
          break;
        case "error":
          log.error({ error: message.error }, message.message);
          break;
      }
    });
    log.info({ capacity: this.options.capacity, sandbox: this.options.sandbox.description, otterVersions: this.otterVersions }, "runner starting");
    connection.start();
  }

  get busy(): number {
    return this.active.size;
  }

  /**
   * Stops taking jobs, waits up to `graceMs` for the running ones, hands back what is left, and
   * closes the socket. Resolves when nothing is held.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const { connection, log } = this.options;
    connection.send({ type: "ready", capacity: 0 });
    log.info({ holding: this.active.size, graceMs }, "draining");
    const all = Promise.all([...this.active.values()].map((j) => j.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const job of [...this.active.values()]) {
      connection.send({ type: "release", lease: job.lease, reason: "runner shutting down" });
      this.abort(job.lease.jobId, "runner shutting down");
    }
    await Promise.all([...this.active.values()].map((j) => j.done));
    this.stopHeartbeat();
    await connection.stop();
  }

  private hello(): void {
    this.options.connection.send({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      runner: this.options.name,
      capacity: this.draining ? 0 : this.options.capacity,
      otterVersions: this.otterVersions,
      holding: this.holding(),
    });
  }

  /** Leases this runner still answers for: jobs being graded and results not yet acknowledged. */
  private holding(): LeaseRef[] {
    return [...[...this.active.values()].map((j) => j.lease), ...[...this.unacked.values()].filter((r) => !this.active.has(r.lease.jobId)).map((r) => r.lease)];
  }

  private forgetResult(lease: LeaseRef, reason?: string): void {
    const pending = this.unacked.get(lease.jobId);
    if (!pending || pending.lease.token !== lease.token) return;
    this.unacked.delete(lease.jobId);
    if (reason) this.options.log.warn({ submissionId: lease.jobId, reason }, "result discarded: the lease is gone");
  }

  private startHeartbeat(intervalMs: number): void {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      const holding = this.holding();
      if (holding.length > 0) this.options.connection.send({ type: "heartbeat", holding });
    }, intervalMs);
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  private abort(jobId: string, reason: string, token?: string): void {
    const job = this.active.get(jobId);
    if (!job || (token && job.lease.token !== token)) return;
    this.options.log.warn({ submissionId: jobId, attempt: job.attempt, reason }, "stopping job");
    job.abort.abort(reason);
  }

  private onLease(message: LeaseMessage): void {
    const { connection, log } = this.options;
    if (this.draining || this.active.size >= this.options.capacity || this.active.has(message.lease.jobId)) {
      connection.send({ type: "release", lease: message.lease, reason: this.draining ? "runner draining" : "no free slot" });
      return;
    }
    const abort = new AbortController();
    const jobLog = log.child({ submissionId: message.job.submissionId, attempt: message.attempt });
    const entry: ActiveJob = { lease: message.lease, attempt: message.attempt, job: message.job, abort, done: Promise.resolve() };
    this.active.set(message.lease.jobId, entry);
    this.options.metrics?.busySlots.set(this.active.size);
    if (message.queuedMs !== undefined) this.options.metrics?.queueWaitSeconds.observe(message.queuedMs / 1000);
    entry.done = this.grade(entry, jobLog)
      .then((outcome) => {
        if (abort.signal.aborted) return; // the lease is gone: nothing to report
        // Checked here against the shared schema, so a result the gateway would refuse is caught on this side.
        const checked = ResultMessage.safeParse({ type: "result", lease: entry.lease, outcome });
        if (!checked.success) jobLog.error({ err: checked.error.message.slice(0, 1_000) }, "result failed the protocol schema");
        const result: ResultMessage = checked.success
          ? checked.data
          : { type: "result", lease: entry.lease, outcome: { kind: "infrastructure_error", message: "the runner produced a result that fails the protocol schema" } };
        // Kept until the gateway acknowledges it: a result must not be lost with a socket.
        this.unacked.set(entry.lease.jobId, result);
        if (!connection.send(result)) jobLog.warn("gateway away: the result is sent when the runner reconnects");
      })
      .catch((err) => jobLog.error({ err: String(err) }, "job crashed"))
      .finally(() => {
        this.active.delete(message.lease.jobId);
        this.options.metrics?.busySlots.set(this.active.size);
        if (!this.draining) connection.send({ type: "ready", capacity: this.options.capacity });
      })
      // The slot is free as soon as the result is sent (the gateway counts it free then, and leases
      // the next job at once: a slot still held here would refuse it). The finished container,
      // already stopped, is removed meanwhile; a drain waits for that too.
      .then(() => entry.cleanup);
  }

  private record(outcome: string, t0: number, timings: Record<string, number>): void {
    const metrics = this.options.metrics;
    if (!metrics) return;
    metrics.jobs.inc({ outcome });
    metrics.gradingSeconds.observe((performance.now() - t0) / 1000);
    if (timings.createMs !== undefined && timings.startMs !== undefined) metrics.containerStartSeconds.observe((timings.createMs + timings.startMs) / 1000);
  }

  private async grade(entry: ActiveJob, log: Logger): Promise<ResultOutcome> {
    const { job } = entry;
    const t0 = performance.now();
    try {
      const [notebook, autograder] = await Promise.all([this.options.artifacts.notebook(job.notebook.sha256), this.options.artifacts.autograder(job.autograder.sha256)]);
      const fetchMs = performance.now() - t0;
      const run = await this.options.sandbox.run({
        jobId: job.submissionId,
        notebook,
        autograder,
        otterVersion: job.autograder.otterVersion,
        timeoutMs: job.timeoutMs,
        signal: entry.abort.signal,
      });
      entry.cleanup = run.cleanup;
      const grade: Grade = gradeFromRun(run, job.timeoutMs);
      this.stats.graded += 1;
      this.record(grade.verdict, t0, run.timings);
      log.info({ verdict: grade.verdict, score: grade.score, points: grade.points, maxPoints: grade.maxPoints, exitCode: run.exitCode, container: run.container?.slice(0, 12), timings: run.timings }, "graded");
      return { kind: "graded", grade, timings: { fetchMs, ...run.timings } };
    } catch (err) {
      this.stats.infrastructureErrors += 1;
      this.record("infrastructure_error", t0, {});
      const message = err instanceof InfrastructureError ? err.message : `runner error: ${String(err)}`;
      log.error({ err: message }, "infrastructure error");
      return { kind: "infrastructure_error", message };
    }
  }
}
