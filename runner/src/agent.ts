import type { Grade, JobSpec, LeaseMessage, LeaseRef } from "@otter-edge/shared";
import { PROTOCOL_VERSION, ResultMessage } from "@otter-edge/shared";
import type { Artifacts } from "./artifacts.js";
import type { GatewayConnection } from "./connection.js";
import { EnvironmentBuildError, InfrastructureError } from "./grading/errors.js";
import { gradeFromRun } from "./grading/results.js";
import type { Sandbox } from "./grading/sandbox.js";
import type { Logger } from "./log.js";
import type { RunnerMetrics } from "./metrics.js";
import { SlotOffers } from "./slot-offers.js";

type ResultOutcome = import("@otter-edge/shared").ResultMessage["outcome"];

interface ActiveJob {
  /** The Dispatcher shard that leased the job: its result and heartbeats go back on that shard's socket. */
  shard: number;
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
  /** Opens (without starting) the socket to one shard of the gateway's Dispatcher. */
  connect: (shard: number) => GatewayConnection;
  sandbox: Sandbox;
  artifacts: Artifacts;
  log: Logger;
  metrics?: RunnerMetrics;
}

/** A result waiting for the gateway's ack, and the shard it must be sent to. */
interface UnackedResult {
  shard: number;
  message: ResultMessage;
}

/**
 * Takes leases from the gateway up to its capacity, grades each in the sandbox, reports results and
 * heartbeats for what it holds. A job whose lease is revoked is stopped and not reported.
 *
 * The gateway's queue may be split into shards (its welcome says how many): the agent keeps one socket
 * per shard and offers its free slots to one shard at a time (see SlotOffers); a lease that arrives
 * when the slots are already taken by another shard goes straight back (`release`).
 */
export class Agent {
  private readonly active = new Map<string, ActiveJob>();
  /** Sockets by shard; shard 0 is opened at start, the others once a welcome names them. */
  private readonly links = new Map<number, GatewayConnection>();
  private readonly heartbeats = new Map<number, NodeJS.Timeout>();
  private readonly slotOffers = new SlotOffers();
  /** The capacity last sent to each shard (hello or ready), so that only changes are sent. */
  private readonly offered = new Map<number, number>();
  /**
   * Results sent (or due) but not yet acknowledged, by job id. A result finished while the gateway was
   * away, or lost with a socket that dropped, is sent again after the next welcome: its lease is
   * named in hello, so the gateway keeps it if it is still current.
   */
  private readonly unacked = new Map<string, UnackedResult>();
  private draining = false;
  private otterVersions: string[] = [];
  /** Counters for tests and logs. */
  readonly stats = { graded: 0, infrastructureErrors: 0, refused: 0 };

  constructor(private readonly options: AgentOptions) {}

  async start(): Promise<void> {
    this.otterVersions = await this.options.sandbox.otterVersions();
    this.options.metrics?.capacity.set(this.options.capacity);
    this.options.log.info({ capacity: this.options.capacity, sandbox: this.options.sandbox.description, otterVersions: this.otterVersions }, "runner starting");
    this.link(0);
  }

  /** Opens the socket to a shard once; it reconnects by itself from then on. */
  private link(shard: number): void {
    if (this.links.has(shard)) return;
    const { log } = this.options;
    const connection = this.options.connect(shard);
    this.links.set(shard, connection);
    connection.on("open", () => {
      this.updateConnectedMetric();
      this.hello(shard);
      this.offerSlots();
    });
    connection.on("close", () => {
      this.updateConnectedMetric();
      this.stopHeartbeat(shard);
      // Its offer moves to an open shard.
      this.offered.delete(shard);
      this.offerSlots();
    });
    connection.on("message", (message) => {
      switch (message.type) {
        case "welcome":
          this.slotOffers.setShardCount(message.shards);
          for (let other = 1; other < message.shards; other++) this.link(other);
          for (const lease of message.dropped) {
            this.abort(lease.jobId, "dropped by the gateway after reconnect");
            this.forgetResult(lease, "dropped by the gateway after reconnect");
          }
          this.startHeartbeat(shard, message.heartbeatMs);
          for (const result of this.unacked.values()) {
            if (result.shard !== shard) continue;
            log.info({ submissionId: result.message.lease.jobId }, "sending a result again after reconnecting");
            connection.send(result.message);
          }
          break;
        case "lease":
          this.onLease(shard, message);
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
        case "offer_answer":
          log.debug({ shard, leased: message.leased, exhausted: message.exhausted }, "offer answered");
          this.slotOffers.answered(shard, message.exhausted);
          this.offerSlots();
          break;
        case "error":
          log.error({ error: message.error, shard }, message.message);
          break;
      }
    });
    connection.start();
    this.updateConnectedMetric();
  }

  /** Ready (for /readyz) only while every shard's socket is open: jobs of a shard without one would wait. */
  private updateConnectedMetric(): void {
    this.options.metrics?.connected.set([...this.links.values()].every((c) => c.connected) ? 1 : 0);
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
    const { log } = this.options;
    this.offerSlots();
    log.info({ holding: this.active.size, graceMs }, "draining");
    const all = Promise.all([...this.active.values()].map((j) => j.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const job of [...this.active.values()]) {
      this.links.get(job.shard)?.send({ type: "release", lease: job.lease, reason: "runner shutting down" });
      this.abort(job.lease.jobId, "runner shutting down");
    }
    await Promise.all([...this.active.values()].map((j) => j.done));
    for (const shard of this.links.keys()) this.stopHeartbeat(shard);
    await Promise.all([...this.links.values()].map((c) => c.stop()));
  }

  private hello(shard: number): void {
    const capacity = this.capacities().get(shard) ?? 0;
    const sent = this.links.get(shard)?.send({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      runner: this.options.name,
      capacity,
      otterVersions: this.otterVersions,
      holding: this.holding(shard),
      offerAnswers: true,
      slots: this.options.capacity,
    });
    if (sent) this.offered.set(shard, capacity);
  }

  /**
   * What each shard may fill: the jobs it already has here plus the free slots offered to it. Each
   * shard counts only its own leases, so with one shard this is simply the capacity. 0 when draining.
   */
  private capacities(): Map<number, number> {
    const free = this.options.capacity - this.active.size;
    const extra = this.slotOffers.offers(free, (shard) => this.links.get(shard)?.connected === true);
    const capacities = new Map<number, number>();
    for (const shard of this.links.keys()) {
      const held = [...this.active.values()].filter((j) => j.shard === shard).length;
      capacities.set(shard, this.draining ? 0 : held + (extra.get(shard) ?? 0));
    }
    return capacities;
  }

  /**
   * Tells each shard whose share changed what it may fill now. `renewPromises`: also each shard that
   * holds a promised slot whose number did not change (a slot that freed and was promised again to
   * the shard it came from), so that it answers whether it has a job for it; without an answer an
   * empty shard would keep the slot while others wait.
   */
  private offerSlots(renewPromises = false): void {
    for (const [shard, capacity] of this.capacities()) {
      if (this.offered.get(shard) === capacity && !(renewPromises && this.slotOffers.shouldAsk(shard))) continue;
      if (this.links.get(shard)?.send({ type: "ready", capacity })) {
        this.offered.set(shard, capacity);
        this.options.log.debug({ shard, capacity, busy: this.active.size }, "offered slots");
      }
    }
  }

  /** Leases this runner still answers for on a shard: jobs being graded and results not yet acknowledged. */
  private holding(shard: number): LeaseRef[] {
    const grading = [...this.active.values()].filter((j) => j.shard === shard).map((j) => j.lease);
    const reporting = [...this.unacked.values()].filter((r) => r.shard === shard && !this.active.has(r.message.lease.jobId)).map((r) => r.message.lease);
    return [...grading, ...reporting];
  }

  private forgetResult(lease: LeaseRef, reason?: string): void {
    const pending = this.unacked.get(lease.jobId);
    if (!pending || pending.message.lease.token !== lease.token) return;
    this.unacked.delete(lease.jobId);
    if (reason) this.options.log.warn({ submissionId: lease.jobId, reason }, "result discarded: the lease is gone");
  }

  private startHeartbeat(shard: number, intervalMs: number): void {
    this.stopHeartbeat(shard);
    this.heartbeats.set(
      shard,
      setInterval(() => {
        const holding = this.holding(shard);
        if (holding.length > 0) this.links.get(shard)?.send({ type: "heartbeat", holding });
        // A slot promised to this shard and neither filled nor answered since: ask again, so that no
        // lost answer can leave a slot parked on an empty shard for longer than a heartbeat.
        const offered = this.offered.get(shard);
        if (this.slotOffers.shouldAsk(shard) && offered !== undefined) this.links.get(shard)?.send({ type: "ready", capacity: offered });
      }, intervalMs),
    );
  }

  private stopHeartbeat(shard: number): void {
    clearInterval(this.heartbeats.get(shard));
    this.heartbeats.delete(shard);
  }

  private abort(jobId: string, reason: string, token?: string): void {
    const job = this.active.get(jobId);
    if (!job || (token && job.lease.token !== token)) return;
    this.options.log.warn({ submissionId: jobId, attempt: job.attempt, reason }, "stopping job");
    job.abort.abort(reason);
  }

  private onLease(shard: number, message: LeaseMessage): void {
    const { log } = this.options;
    log.debug({ shard, submissionId: message.lease.jobId, busy: this.active.size }, "lease");
    const connection = this.links.get(shard)!;
    if (this.draining || this.active.size >= this.options.capacity || this.active.has(message.lease.jobId)) {
      // Another shard filled the slot first. The ready that withdrew the slot from this shard went out
      // when it was filled, so the shard does not lease this job to us again.
      this.offerSlots();
      connection.send({ type: "release", lease: message.lease, reason: this.draining ? "runner draining" : "no free slot" });
      return;
    }
    const abort = new AbortController();
    const jobLog = log.child({ submissionId: message.job.submissionId, attempt: message.attempt });
    const entry: ActiveJob = { shard, lease: message.lease, attempt: message.attempt, job: message.job, abort, done: Promise.resolve() };
    this.active.set(message.lease.jobId, entry);
    this.slotOffers.leased(shard);
    this.offerSlots();
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
        this.unacked.set(entry.lease.jobId, { shard, message: result });
        // The slot is offered anew before the result frees it on the gateway: otherwise the shard
        // would fill it at once, even when the runner promised it to another shard.
        this.freeSlot(entry);
        if (!connection.send(result)) jobLog.warn("gateway away: the result is sent when the runner reconnects");
      })
      .catch((err) => jobLog.error({ err: String(err) }, "job crashed"))
      .finally(() => this.freeSlot(entry))
      // The slot is free as soon as the result is sent (the gateway counts it free then, and leases
      // the next job at once: a slot still held here would refuse it). The finished container,
      // already stopped, is removed meanwhile; a drain waits for that too.
      .then(() => entry.cleanup);
  }

  /** Frees the job's slot (once) and offers it; a draining runner offers nothing. */
  private freeSlot(entry: ActiveJob): void {
    if (this.active.get(entry.lease.jobId) !== entry) return;
    this.active.delete(entry.lease.jobId);
    this.options.metrics?.busySlots.set(this.active.size);
    if (this.draining) return;
    this.slotOffers.slotFreed();
    this.offerSlots(true);
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
        isolation: job.isolation,
        signal: entry.abort.signal,
        onProgress: (stage) => {
          if (!entry.abort.signal.aborted) this.links.get(entry.shard)?.send({ type: "progress", lease: entry.lease, stage });
        },
      });
      entry.cleanup = run.cleanup;
      const grade: Grade = gradeFromRun(run, job.timeoutMs);
      this.stats.graded += 1;
      this.record(grade.verdict, t0, run.timings);
      log.info({ verdict: grade.verdict, score: grade.score, points: grade.points, maxPoints: grade.maxPoints, exitCode: run.exitCode, container: run.container?.slice(0, 12), timings: run.timings }, "graded");
      return { kind: "graded", grade, timings: { fetchMs, ...run.timings }, ...(run.environment ? { environment: run.environment } : {}) };
    } catch (err) {
      if (err instanceof EnvironmentBuildError && !err.network) {
        this.record("environment_failed", t0, {});
        log.error({ environment: err.environment.slice(0, 16), err: err.message.slice(0, 500) }, "the assignment's environment cannot be installed");
        return { kind: "environment_failed", environment: err.environment, message: err.message.slice(0, 4_000) };
      }
      this.stats.infrastructureErrors += 1;
      this.record("infrastructure_error", t0, {});
      const message = err instanceof InfrastructureError ? err.message : `runner error: ${String(err)}`;
      log.error({ err: message }, "infrastructure error");
      return { kind: "infrastructure_error", message };
    }
  }
}
