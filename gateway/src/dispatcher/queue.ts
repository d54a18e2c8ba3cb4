import type { JobSpec, LeaseRef } from "@otter-edge/shared";

export interface JobRow {
  id: string;
  spec: string;
  otter_version: string;
  priority: number;
  enqueued_at: number;
  not_before: number;
  attempts: number;
  lease_token: string | null;
  lease_session: string | null;
  lease_runner: string | null;
  lease_deadline: number | null;
  lease_hard_deadline: number | null;
  /** The environment hash whose build failed: the job waits for a new autograder.zip (never leased meanwhile). */
  env_blocked: string | null;
  /** The session that last handed the job back, and until when it is not offered the job again. */
  released_by: string | null;
  released_until: number | null;
  /** The token of a lease lost with its runner's socket: that runner may take it back until the job is leased again. */
  lost_token: string | null;
  [key: string]: SqlStorageValue;
}

/**
 * A job's id in the queue, which is also the lease's `jobId`: the submission id for a new submission,
 * and `r<regrade>:<submission>` for a regrade job, so a regrade never collides with its submission.
 */
export function jobKey(job: Pick<JobSpec, "submissionId" | "regradeId">): string {
  return job.regradeId === undefined ? job.submissionId : `${regradeKeyPrefix(job.regradeId)}${job.submissionId}`;
}
const regradeKeyPrefix = (regradeId: number) => `r${regradeId}:`;

/**
 * The Dispatcher's job table, in the Durable Object's own SQLite storage. Synchronous by design:
 * each method is one indivisible step of the Dispatcher, with no await in the middle.
 */
export class JobQueue {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(`
      CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        otter_version TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        enqueued_at INTEGER NOT NULL,
        not_before INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_session TEXT,
        lease_runner TEXT,
        lease_deadline INTEGER,
        lease_hard_deadline INTEGER
      );
      CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (priority DESC, enqueued_at) WHERE lease_token IS NULL;
      CREATE INDEX IF NOT EXISTS jobs_by_session ON jobs (lease_session) WHERE lease_token IS NOT NULL;
    `);
    // Added after the table first shipped: queues created before have it added once.
    const columns = sql.exec<{ name: string }>("PRAGMA table_info(jobs)").toArray();
    if (!columns.some((c) => c.name === "env_blocked")) sql.exec("ALTER TABLE jobs ADD COLUMN env_blocked TEXT");
    if (!columns.some((c) => c.name === "released_by")) sql.exec("ALTER TABLE jobs ADD COLUMN released_by TEXT; ALTER TABLE jobs ADD COLUMN released_until INTEGER");
    if (!columns.some((c) => c.name === "lost_token")) sql.exec("ALTER TABLE jobs ADD COLUMN lost_token TEXT");
  }

  add(job: JobSpec, priority: number, now: number): void {
    // A job of an assignment whose environment is known not to build (same zip) waits with the others
    // instead of making a runner try the build again.
    this.sql.exec(
      `INSERT OR IGNORE INTO jobs (id, spec, otter_version, priority, enqueued_at, env_blocked) VALUES (?1, ?2, ?3, ?4, ?5,
         (SELECT env_blocked FROM jobs WHERE env_blocked IS NOT NULL AND json_extract(spec, '$.course') = ?6
            AND json_extract(spec, '$.assignment') = ?7 AND json_extract(spec, '$.autograder.sha256') = ?8 LIMIT 1))`,
      jobKey(job),
      JSON.stringify(job),
      job.autograder.otterVersion,
      priority,
      now,
      job.course,
      job.assignment,
      job.autograder.sha256,
    );
  }

  /** Takes the lease back without counting the attempt, and parks the job until its assignment gets a new zip. */
  blockOnEnvironment(id: string, environment: string): void {
    this.sql.exec(
      `UPDATE jobs SET lease_token = NULL, lease_session = NULL, lease_runner = NULL, lease_deadline = NULL,
         lease_hard_deadline = NULL, lost_token = NULL, attempts = MAX(0, attempts - 1), env_blocked = ? WHERE id = ?`,
      environment,
      id,
    );
  }

  /**
   * An assignment got a new autograder.zip: its parked jobs are queued again, to grade with it. The
   * whole spec's autograder is replaced, as a regrade would use the current zip. Returns how many.
   */
  unblockAssignment(course: string, assignment: string, autograder: JobSpec["autograder"]): number {
    return this.sql.exec(
      `UPDATE jobs SET env_blocked = NULL, not_before = 0, otter_version = ?3, spec = json_set(spec, '$.autograder', json(?4))
         WHERE env_blocked IS NOT NULL AND json_extract(spec, '$.course') = ?1 AND json_extract(spec, '$.assignment') = ?2`,
      course,
      assignment,
      autograder.otterVersion,
      JSON.stringify(autograder),
    ).rowsWritten;
  }

  get(id: string): JobRow | undefined {
    return this.sql.exec<JobRow>("SELECT * FROM jobs WHERE id = ?", id).toArray()[0];
  }

  /** Jobs of one regrade, leased or not. */
  ofRegrade(regradeId: number): JobRow[] {
    return this.sql.exec<JobRow>("SELECT * FROM jobs WHERE id LIKE ?", `${regradeKeyPrefix(regradeId)}%`).toArray();
  }

  remove(id: string): void {
    this.sql.exec("DELETE FROM jobs WHERE id = ?", id);
  }

  /**
   * Jobs ready to lease to this session, best first, that a runner with these otter-grader versions
   * can grade: not one the session itself handed back within its avoidance window.
   */
  pending(now: number, limit: number, otterVersions: string[], sessionId: string): JobRow[] {
    return this.sql
      .exec<JobRow>(
        `SELECT * FROM jobs WHERE lease_token IS NULL AND not_before <= ?1 AND env_blocked IS NULL
           AND otter_version IN (SELECT value FROM json_each(?2))
           AND NOT (released_by IS ?3 AND released_until > ?1)
         ORDER BY priority DESC, enqueued_at LIMIT ?4`,
        now,
        JSON.stringify(otterVersions),
        sessionId,
        limit,
      )
      .toArray();
  }

  /** Leases a job and returns its attempt number. */
  lease(id: string, l: { token: string; sessionId: string; runner: string; deadline: number; hardDeadline: number }): number {
    const row = this.sql
      .exec<{ attempts: number }>(
        `UPDATE jobs SET lease_token = ?, lease_session = ?, lease_runner = ?, lease_deadline = ?, lease_hard_deadline = ?,
           lost_token = NULL, attempts = attempts + 1 WHERE id = ? RETURNING attempts`,
        l.token,
        l.sessionId,
        l.runner,
        l.deadline,
        l.hardDeadline,
        id,
      )
      .one();
    return row.attempts;
  }

  /** Extends a lease held by this session; false when the lease is not (or no longer) this session's. */
  extend(lease: LeaseRef, sessionId: string, deadline: number): boolean {
    const cursor = this.sql.exec(
      "UPDATE jobs SET lease_deadline = MIN(?, lease_hard_deadline) WHERE id = ? AND lease_token = ? AND lease_session = ?",
      deadline,
      lease.jobId,
      lease.token,
      sessionId,
    );
    return cursor.rowsWritten > 0;
  }

  /** A lease whose runner has not reconnected since a restart waits until `deadline` (at most its hard deadline). */
  extendOrphaned(id: string, deadline: number): void {
    this.sql.exec("UPDATE jobs SET lease_deadline = MIN(?, lease_hard_deadline) WHERE id = ? AND lease_token IS NOT NULL", deadline, id);
  }

  /** A reconnecting runner takes back a lease that is still valid (same token); false when it is gone. */
  adopt(lease: LeaseRef, sessionId: string, deadline: number): boolean {
    const cursor = this.sql.exec(
      "UPDATE jobs SET lease_session = ?, lease_deadline = MIN(?, lease_hard_deadline) WHERE id = ? AND lease_token = ?",
      sessionId,
      deadline,
      lease.jobId,
      lease.token,
    );
    return cursor.rowsWritten > 0;
  }

  /**
   * A reconnecting runner takes back a lease it lost with its socket, if nobody has leased the job
   * since and the lease's hard deadline has not passed: same token, same attempt. The job, or none.
   */
  reclaim(lease: LeaseRef, l: { sessionId: string; runner: string; deadline: number; now: number }): JobRow | undefined {
    return this.sql
      .exec<JobRow>(
        `UPDATE jobs SET lease_token = lost_token, lost_token = NULL, lease_session = ?, lease_runner = ?, lease_deadline = MIN(?, lease_hard_deadline)
           WHERE id = ? AND lease_token IS NULL AND lost_token = ? AND env_blocked IS NULL AND lease_hard_deadline > ? RETURNING *`,
        l.sessionId,
        l.runner,
        l.deadline,
        lease.jobId,
        lease.token,
        l.now,
      )
      .toArray()[0];
  }

  /**
   * Takes the lease away; the job is pending again from `notBefore`. `avoid`: the session that handed
   * it back is not offered it again until then (other sessions are at once). `reclaimable`: the
   * lease's runner may take it back (`reclaim`) until the job is leased again.
   */
  release(id: string, opts: { refundAttempt: boolean; notBefore: number; avoid?: { sessionId: string; until: number }; reclaimable?: boolean }): void {
    // SQLite computes every SET expression from the row as it was, so lost_token takes the old token.
    this.sql.exec(
      `UPDATE jobs SET lost_token = CASE WHEN ?1 THEN lease_token END, lease_hard_deadline = CASE WHEN ?1 THEN lease_hard_deadline END,
         lease_token = NULL, lease_session = NULL, lease_runner = NULL, lease_deadline = NULL,
         not_before = ?2, attempts = attempts - ?3, released_by = ?4, released_until = ?5 WHERE id = ?6`,
      opts.reclaimable ? 1 : 0,
      opts.notBefore,
      opts.refundAttempt ? 1 : 0,
      opts.avoid?.sessionId ?? null,
      opts.avoid?.until ?? null,
      id,
    );
  }

  leasedTo(sessionId: string): JobRow[] {
    return this.sql.exec<JobRow>("SELECT * FROM jobs WHERE lease_token IS NOT NULL AND lease_session = ?", sessionId).toArray();
  }

  /** Leases held per session, in one query for every connected runner. */
  heldBySession(): Map<string, number> {
    const rows = this.sql.exec<{ s: string; n: number }>("SELECT lease_session AS s, COUNT(*) AS n FROM jobs WHERE lease_token IS NOT NULL GROUP BY lease_session").toArray();
    return new Map(rows.map((r) => [r.s, r.n]));
  }

  expired(now: number): JobRow[] {
    return this.sql.exec<JobRow>("SELECT * FROM jobs WHERE lease_token IS NOT NULL AND lease_deadline <= ?", now).toArray();
  }

  /**
   * When the Dispatcher must next look: the earliest lease deadline, end of a retry backoff, or end
   * of a runner's avoidance of a job it handed back. Without the last, a lone idle runner whose offer
   * came during its avoidance window sends nothing more (no heartbeats without leases), and the job
   * waits for good: seen as a stalled regrade over 3 shards, whose crossing leases were handed back.
   */
  nextWakeup(now: number): number | null {
    const row = this.sql
      .exec<{ t: number | null }>(
        `SELECT MIN(t) AS t FROM (
           SELECT MIN(lease_deadline) AS t FROM jobs WHERE lease_token IS NOT NULL
           UNION ALL SELECT MIN(not_before) FROM jobs WHERE lease_token IS NULL AND env_blocked IS NULL AND not_before > ?1
           UNION ALL SELECT MIN(released_until) FROM jobs WHERE lease_token IS NULL AND env_blocked IS NULL AND released_until > ?1)`,
        now,
      )
      .one();
    return row.t ?? null;
  }

  counts(): { pending: number; leased: number; waitingForEnvironment: number; oldestEnqueuedAt: number | null } {
    return this.sql
      .exec<{ pending: number; leased: number; waitingForEnvironment: number; oldestEnqueuedAt: number | null }>(
        `SELECT COALESCE(SUM(lease_token IS NULL AND env_blocked IS NULL), 0) AS pending, COALESCE(SUM(lease_token IS NOT NULL), 0) AS leased,
           COALESCE(SUM(env_blocked IS NOT NULL), 0) AS waitingForEnvironment, MIN(enqueued_at) AS oldestEnqueuedAt FROM jobs`,
      )
      .one();
  }
}
