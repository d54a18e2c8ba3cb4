import { DurableObject } from "cloudflare:workers";
import {
  backoffMs,
  type GatewayMessage,
  type JobSpec,
  type LeaseRef,
  type ResultMessage,
  type RunnerMessage,
  RunnerMessage as RunnerMessageSchema,
} from "@otter-edge/shared";
import { type Env, intSetting } from "../env.js";
import { JobQueue, type JobRow } from "./queue.js";
import { passbackOutbox } from "../passback/outbox.js";
import { type JobJournal, journalFor } from "./journal.js";
import { markEnvironmentFailed, recordEnvironmentPrepared } from "./environment-status.js";
import { shardCount } from "./stub.js";
import { logger } from "../log.js";

const log = logger("dispatcher");

/** What the Dispatcher remembers about a runner's socket; kept on the socket so it survives hibernation. */
interface Session {
  sessionId: string;
  runner: string;
  /** The name the runner gave itself in `hello` (e.g. its pod): tells apart runners sharing one token. */
  instance?: string;
  /** The runner token this socket authenticated with: revoking it closes the socket. */
  tokenId: string;
  /** Jobs the runner is willing to hold at once from this shard; 0 until it says hello, and when draining. */
  capacity: number;
  /** All the runner's slots, over every shard (from hello; a runner that predates shards sends none). */
  slots?: number;
  otterVersions: string[];
  /** Epoch ms of the last message from the runner (hello, ready, heartbeat, result, ...). */
  lastSeen?: number;
  /** The runner asked for an `offer_answer` after each offer of free slots. */
  offerAnswers?: boolean;
  /** Its last hello or ready is not answered yet (it is, at the first dispatch that finds a slot free). */
  awaitingAnswer?: boolean;
}

const BACKOFF_BASE_MS = 2_000;
const BACKOFF_MAX_MS = 60_000;

/**
 * The queue of grading jobs and the leases given to runners. Jobs live in this object's SQLite
 * storage, so a restart loses nothing; runners hold hibernatable WebSockets.
 *
 * Invariants kept here: a job is leased to at most one runner at a time; every result names the
 * lease token it was given, and a result whose token is not the job's current one is refused; a
 * lease that expires or whose runner disconnects goes back to the queue. A runner that reconnects
 * before anyone else took the job gets its lost lease back (same token, same attempt), so a grade
 * it finished meanwhile counts instead of the job being graded again.
 */
export class Dispatcher extends DurableObject<Env> {
  private readonly queue: JobQueue;
  /** The alarm as last read or set; undefined until read after this instance started. */
  private alarmAt: number | null | undefined;
  /** When this instance started: after a gateway restart, runners get a lease TTL from here to reconnect. */
  private readonly startedAt = Date.now();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.queue = new JobQueue(ctx.storage.sql);
  }

  private get leaseTtlMs() {
    return intSetting(this.env.LEASE_TTL_MS, 60_000);
  }
  private get heartbeatMs() {
    return intSetting(this.env.HEARTBEAT_MS, 10_000);
  }
  private get maxAttempts() {
    return intSetting(this.env.MAX_ATTEMPTS, 5);
  }

  // ---- RPC from the Worker ---------------------------------------------------------------------

  /** Adds a job (idempotent by job key) and hands it out if a runner has room. */
  async enqueue(job: JobSpec, priority = 0): Promise<void> {
    this.queue.add(job, priority, Date.now());
    await this.dispatch();
  }

  /** Adds many jobs in one step (a regrade): all of them or, if this throws, none. */
  async enqueueMany(jobs: JobSpec[], priority: number): Promise<void> {
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      for (const job of jobs) this.queue.add(job, priority, now);
    });
    await this.dispatch();
  }

  /** Which of these submissions this shard holds no job for (the sweeper's question). */
  async missing(ids: string[]): Promise<string[]> {
    return ids.filter((id) => !this.queue.get(id));
  }

  /** Drops a regrade's jobs: waiting ones are removed, leased ones revoked. Returns how many. */
  async cancelRegrade(regradeId: number): Promise<number> {
    const doomed = this.queue.ofRegrade(regradeId);
    for (const job of doomed) {
      this.revokeOnSocket(job, "The regrade was cancelled.");
      this.queue.remove(job.id);
    }
    await this.dispatch();
    return doomed.length;
  }

  /** An assignment has a new autograder.zip: its jobs waiting for a working environment are queued with it. */
  async resumeAssignment(course: string, assignment: string, autograder: JobSpec["autograder"]): Promise<number> {
    const resumed = this.queue.unblockAssignment(course, assignment, autograder);
    if (resumed > 0) {
      log.info("jobs waiting for the environment resumed", { course, assignment, resumed });
      await this.dispatch();
    }
    return resumed;
  }

  /** Closes every socket opened with this runner token and requeues what they held. */
  async disconnectToken(tokenId: string): Promise<number> {
    const doomed = this.sessions().filter(({ session }) => session.tokenId === tokenId);
    for (const { ws } of doomed) {
      await this.onDisconnect(ws, "runner token revoked", { reclaimable: false });
      try {
        ws.close(4001, "runner token revoked");
      } catch {
        // already closing
      }
    }
    return doomed.length;
  }

  /** Queue depth and runners, for staff and tests. */
  async stats() {
    const held = this.queue.heldBySession();
    return {
      ...this.queue.counts(),
      runners: this.sessions().map(({ session }) => ({
        runner: session.runner,
        instance: session.instance ?? null,
        capacity: session.capacity,
        slots: session.slots ?? null,
        holding: held.get(session.sessionId) ?? 0,
        otterVersions: session.otterVersions,
        lastSeenAt: session.lastSeen ? new Date(session.lastSeen).toISOString() : null,
      })),
    };
  }

  // ---- runner sockets ---------------------------------------------------------------------------

  /** The Worker forwards an authenticated upgrade request here, with the runner's name in a header. */
  override async fetch(request: Request): Promise<Response> {
    const runner = request.headers.get("x-otter-runner");
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket" || !runner) {
      return Response.json({ error: "websocket_expected", message: "Connect with a WebSocket upgrade." }, { status: 426 });
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    const session: Session = { sessionId: crypto.randomUUID(), runner, tokenId: request.headers.get("x-otter-runner-token-id") ?? "", capacity: 0, otterVersions: [] };
    server.serializeAttachment(session);
    log.info("runner connected", { runner, session: session.sessionId });
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(ws: WebSocket, data: string | ArrayBuffer): Promise<void> {
    const session = ws.deserializeAttachment() as Session;
    let message: RunnerMessage;
    try {
      message = RunnerMessageSchema.parse(JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data)));
    } catch (err) {
      log.warn("bad runner message", { runner: session.runner, error: String(err).slice(0, 500) });
      send(ws, { type: "error", error: "bad_message", message: "The message does not match the otter-edge runner protocol." });
      return;
    }
    session.lastSeen = Date.now();
    ws.serializeAttachment(session);
    switch (message.type) {
      case "hello": {
        session.capacity = message.capacity;
        session.slots = message.slots;
        session.otterVersions = message.otterVersions;
        session.instance = message.runner;
        session.offerAnswers = message.offerAnswers;
        session.awaitingAnswer = message.offerAnswers;
        ws.serializeAttachment(session);
        const dropped = await this.adoptLeases(session, message.holding);
        send(ws, { type: "welcome", heartbeatMs: this.heartbeatMs, leaseTtlMs: this.leaseTtlMs, dropped, shards: shardCount(this.env) });
        break;
      }
      case "ready":
        session.capacity = message.capacity;
        session.awaitingAnswer = session.offerAnswers;
        ws.serializeAttachment(session);
        break;
      case "heartbeat":
        for (const lease of message.holding) {
          if (!this.queue.extend(lease, session.sessionId, Date.now() + this.leaseTtlMs)) {
            send(ws, { type: "revoke", lease, reason: "This lease is no longer yours (it expired or the job was regraded)." });
          }
        }
        break;
      case "release": {
        const job = this.queue.get(message.lease.jobId);
        if (job && job.lease_token === message.lease.token) {
          // The runner handed it back for want of a slot or because it is stopping: it is not offered
          // the job again for a heartbeat, whatever order its "ready" and this release are handled in
          // (seen in tests under load: the job bounced straight back to it).
          const now = Date.now();
          this.queue.release(job.id, { refundAttempt: true, notBefore: now, avoid: { sessionId: session.sessionId, until: now + this.heartbeatMs } });
          this.ctx.waitUntil(this.logged(this.journal(job).requeued(`handed back by runner ${session.runner}: ${message.reason}`)));
        }
        break;
      }
      case "result":
        await this.onResult(ws, session, message);
        break;
      case "progress": {
        const job = this.queue.get(message.lease.jobId);
        if (job && job.lease_token === message.lease.token) this.ctx.waitUntil(this.logged(this.journal(job).progress(message.stage)));
        break;
      }
    }
    await this.dispatch();
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    await this.onDisconnect(ws, `runner disconnected (${code}${reason ? `: ${reason}` : ""})`, { reclaimable: true });
    try {
      ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    await this.onDisconnect(ws, `runner socket error: ${String(error)}`, { reclaimable: true });
  }

  /** Expires leases whose runner went quiet, and wakes jobs whose retry backoff is over. */
  override async alarm(): Promise<void> {
    // The alarm that woke us is spent.
    this.alarmAt = null;
    const now = Date.now();
    const connected = new Set(this.sessions().map(({ session }) => session.sessionId));
    const reconnectBy = this.startedAt + this.leaseTtlMs;
    for (const job of this.queue.expired(now)) {
      // A lease whose runner has no socket here outlived this object's restart (a closed socket would
      // have requeued it): its heartbeats had nowhere to go. Its runner gets a lease TTL from the
      // restart to reconnect and claim it (hello `holding`), so a grade it kept is recorded instead of
      // the job being graded a second time. Never past the lease's hard deadline.
      if (job.lease_session && !connected.has(job.lease_session) && now < reconnectBy && (job.lease_hard_deadline ?? 0) > now) {
        this.queue.extendOrphaned(job.id, reconnectBy);
        continue;
      }
      this.revokeOnSocket(job, "The lease expired without a heartbeat.");
      await this.requeue(job, `lease expired on runner ${job.lease_runner} (no heartbeat)`, now);
    }
    await this.dispatch();
  }

  // ---- internals --------------------------------------------------------------------------------

  private sessions(except?: WebSocket): Array<{ ws: WebSocket; session: Session }> {
    return this.ctx
      .getWebSockets()
      .filter((ws) => ws !== except && ws.readyState === WebSocket.OPEN)
      .map((ws) => ({ ws, session: ws.deserializeAttachment() as Session }))
      .filter(({ session }) => session?.sessionId);
  }

  /**
   * After a reconnect, the runner keeps the leases that are still its own, and takes back those it
   * lost with its socket that nobody has leased since; the rest it must drop.
   */
  private async adoptLeases(session: Session, holding: LeaseRef[]): Promise<LeaseRef[]> {
    const dropped: LeaseRef[] = [];
    const reclaimWrites: D1PreparedStatement[] = [];
    const now = Date.now();
    const deadline = now + this.leaseTtlMs;
    for (const lease of holding) {
      if (this.queue.adopt(lease, session.sessionId, deadline)) continue;
      // Seen when a gateway stops: its Dispatcher sees the runner's socket close and requeues the
      // lease, while the runner goes on grading and keeps the result for when it reconnects.
      const reclaimed = this.queue.reclaim(lease, { sessionId: session.sessionId, runner: session.runner, deadline, now });
      if (!reclaimed) {
        dropped.push(lease);
        continue;
      }
      log.info("lease taken back after reconnecting", { runner: session.runner, jobId: reclaimed.id, attempt: reclaimed.attempts });
      reclaimWrites.push(...this.journal(reclaimed).leasedWrites(reclaimed.attempts, session.runner, "taken back after reconnecting"));
    }
    // Written before the welcome, so the results the runner sends after it are recorded after this.
    if (reclaimWrites.length > 0) await this.logged(this.env.DB.batch(reclaimWrites));
    return dropped;
  }

  private async onResult(ws: WebSocket, session: Session, message: ResultMessage): Promise<void> {
    const { lease, outcome } = message;
    const job = this.queue.get(lease.jobId);
    if (!job || job.lease_token !== lease.token) {
      log.warn("stale result refused", { runner: session.runner, jobId: lease.jobId });
      send(ws, { type: "ack", lease, accepted: false, reason: "stale_lease" });
      return;
    }
    if (outcome.kind === "environment_failed") {
      // The zip's requirements cannot be installed: the job (and the assignment's next ones) wait for
      // staff to upload a fixed zip, which queues them again (resumeAssignment). Never graded 0.
      this.queue.blockOnEnvironment(job.id, outcome.environment);
      const spec = JSON.parse(job.spec) as JobSpec;
      log.warn("job waits for the assignment's environment", { runner: session.runner, jobId: job.id, course: spec.course, assignment: spec.assignment, environment: outcome.environment });
      // Written before the ack, so that whoever reads the submission after it sees why it waits.
      await this.logged(
        Promise.all([
          markEnvironmentFailed(this.env.DB, spec, outcome.environment, outcome.message),
          this.journal(job).waitingForEnvironment("The assignment's packages could not be installed; course staff have been told. This submission will be graded as soon as they fix it."),
        ]),
      );
      send(ws, { type: "ack", lease, accepted: true });
      await this.dispatch();
      return;
    }
    if (outcome.kind === "infrastructure_error") {
      await this.requeue(job, `infrastructure error on runner ${session.runner}: ${outcome.message}`, Date.now());
      send(ws, { type: "ack", lease, accepted: true });
      return;
    }
    let recorded: boolean;
    let passbackDue: boolean;
    try {
      ({ recorded, passbackDue } = await this.journal(job).graded(lease.token, session.runner, outcome.grade));
    } catch (err) {
      // D1 unreachable: the grade is not kept, so the job is graded again rather than lost.
      log.error("recording grade failed", { jobId: job.id, error: String(err) });
      await this.requeue(job, `recording the grade failed: ${String(err)}`, Date.now());
      send(ws, { type: "ack", lease, accepted: false, reason: "record_failed" });
      return;
    }
    // Whether this attempt's grade was recorded or an earlier one was, the job is finished.
    const current = this.queue.get(job.id);
    if (current && current.lease_token && current.lease_token !== lease.token) this.revokeOnSocket(current, "The job was graded by another attempt.");
    this.queue.remove(job.id);
    if (passbackDue) this.ctx.waitUntil(this.logged(passbackOutbox(this.env).kick()));
    if (outcome.environment) this.ctx.waitUntil(this.logged(recordEnvironmentPrepared(this.env.DB, JSON.parse(job.spec) as JobSpec, outcome.environment, session.runner)));
    log.info("result", { runner: session.runner, jobId: job.id, attempt: job.attempts, recorded, verdict: outcome.grade.verdict, score: outcome.grade.score });
    send(ws, { type: "ack", lease, accepted: recorded, ...(recorded ? {} : { reason: "already_final" }) });
  }

  /** `reclaimable`: the runner may take its leases back if it reconnects before they are leased again. */
  private async onDisconnect(ws: WebSocket, reason: string, opts: { reclaimable: boolean }): Promise<void> {
    const session = ws.deserializeAttachment() as Session | null;
    if (!session?.sessionId) return;
    log.info("runner disconnected", { runner: session.runner, session: session.sessionId });
    const now = Date.now();
    for (const job of this.queue.leasedTo(session.sessionId)) await this.requeue(job, reason, now, opts);
    await this.dispatch(ws);
  }

  /** Puts a job back in the queue, or fails it for good once it has used all its attempts. */
  private async requeue(job: JobRow, reason: string, now: number, opts: { reclaimable?: boolean } = {}): Promise<void> {
    if (job.attempts >= this.maxAttempts && opts.reclaimable) {
      // The last attempt lost its socket: failing the job now would throw away a grade its runner may
      // bring back on reconnecting. The lease stays the runner's for one lease TTL; if it is not
      // taken back by then, the alarm expires it and the job fails below.
      this.queue.extendOrphaned(job.id, now + this.leaseTtlMs);
      log.warn("last attempt's runner disconnected; its lease waits for it to reconnect", { jobId: job.id, attempt: job.attempts, reason });
      return;
    }
    if (job.attempts >= this.maxAttempts) {
      const why = `Grading failed ${job.attempts} times for reasons outside the notebook; last: ${reason}`;
      try {
        // Removed only once D1 says failed: a job removed first and then not written would stay
        // "leased" in D1 forever, with nothing left to finish it.
        await this.journal(job).failed(why);
        this.queue.remove(job.id);
        log.error("job failed", { jobId: job.id, reason });
        return;
      } catch (err) {
        // Kept, and tried again below: graded by a later attempt, or failed once D1 takes the write.
        log.error("recording the failure failed; the job stays queued", { jobId: job.id, error: String(err) });
      }
    }
    // Back off with jitter so a broken node or engine does not spin on the same job.
    const notBefore = now + backoffMs(job.attempts, { baseMs: BACKOFF_BASE_MS, maxMs: BACKOFF_MAX_MS });
    this.queue.release(job.id, { refundAttempt: false, notBefore, reclaimable: opts.reclaimable });
    log.warn("job requeued", { jobId: job.id, attempt: job.attempts, reason });
    this.ctx.waitUntil(this.logged(this.journal(job).requeued(reason)));
  }

  private revokeOnSocket(job: JobRow, reason: string): void {
    if (!job.lease_token || !job.lease_session) return;
    for (const { ws, session } of this.sessions()) {
      if (session.sessionId === job.lease_session) send(ws, { type: "revoke", lease: { jobId: job.id, token: job.lease_token }, reason });
    }
  }

  /** Hands pending jobs to runners with free slots, then sets the alarm for the next deadline. */
  private async dispatch(except?: WebSocket): Promise<void> {
    const now = Date.now();
    const held = this.queue.heldBySession();
    // One D1 batch for all the leases of this dispatch (a runner with many free slots takes many at once).
    const leaseWrites: D1PreparedStatement[] = [];
    for (const { ws, session } of this.sessions(except)) {
      // A slot still counted busy here (a result not yet handled) is not free yet; an offer that finds
      // no free slot is answered at a later dispatch, once one is.
      const free = session.capacity - (held.get(session.sessionId) ?? 0);
      if (free <= 0) continue;
      const jobs = this.queue.pending(now, free, session.otterVersions, session.sessionId);
      for (const job of jobs) {
        const token = crypto.randomUUID();
        const spec = JSON.parse(job.spec) as JobSpec;
        const deadline = now + this.leaseTtlMs;
        // A lease can be extended by heartbeats, but never past the grading time limit plus slack.
        const hardDeadline = now + spec.timeoutMs + 2 * this.leaseTtlMs;
        const attempt = this.queue.lease(job.id, { token, sessionId: session.sessionId, runner: session.runner, deadline, hardDeadline });
        send(ws, { type: "lease", lease: { jobId: job.id, token }, attempt, deadline, job: spec, queuedMs: Math.max(0, now - Math.max(job.enqueued_at, job.not_before)) });
        leaseWrites.push(...this.journal(job).leasedWrites(attempt, session.runner));
      }
      if (session.awaitingAnswer) {
        send(ws, { type: "offer_answer", leased: jobs.length, exhausted: jobs.length < free });
        session.awaitingAnswer = false;
        ws.serializeAttachment(session);
      }
    }
    if (leaseWrites.length > 0) this.ctx.waitUntil(this.logged(this.env.DB.batch(leaseWrites)));
    const next = this.queue.nextWakeup(now);
    if (next !== null) {
      // The alarm time is remembered in memory (read once after each wake-up) to spare a storage call per dispatch.
      this.alarmAt ??= await this.ctx.storage.getAlarm();
      if (this.alarmAt === null || this.alarmAt > next || this.alarmAt < now) {
        await this.ctx.storage.setAlarm(next);
        this.alarmAt = next;
      }
    }
  }

  private journal(job: JobRow): JobJournal {
    return journalFor(this.env, JSON.parse(job.spec) as JobSpec);
  }

  private async logged(write: Promise<unknown>): Promise<void> {
    try {
      await write;
    } catch (err) {
      log.error("D1 write failed", { error: String(err) });
    }
  }
}

function send(ws: WebSocket, message: GatewayMessage): void {
  try {
    ws.send(JSON.stringify(message));
  } catch (err) {
    log.warn("send to runner failed", { error: String(err) });
  }
}

