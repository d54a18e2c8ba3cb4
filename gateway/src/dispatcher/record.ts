import type { Grade, ProgressStage } from "@otter-edge/shared";
import { nowIso } from "../db/client.js";

/**
 * The Dispatcher's writes to D1. Every update is guarded by the submission's current status, so a
 * late or repeated write can never move a submission backwards or record a second grade.
 */

/** The writes for a lease, not yet run: the Dispatcher sends every lease of one dispatch in one batch. */
export function leasedWrites(db: D1Database, id: string, attempt: number, runner: string, note?: string): D1PreparedStatement[] {
  const at = nowIso();
  return [
    db
      .prepare("UPDATE submissions SET status = 'leased', attempts = ?2, runner = ?3, leased_at = ?4, updated_at = ?4 WHERE id = ?1 AND status IN ('queued', 'leased')")
      .bind(id, attempt, runner, at),
    db.prepare("INSERT INTO submission_events (submission_id, at, state, detail) VALUES (?1, ?2, 'leased', ?3)").bind(id, at, `attempt ${attempt} on runner ${runner}${note ? ` (${note})` : ""}`),
  ];
}

export async function recordRequeued(db: D1Database, id: string, reason: string): Promise<void> {
  const at = nowIso();
  await db.batch([
    db.prepare("UPDATE submissions SET status = 'queued', updated_at = ?2 WHERE id = ?1 AND status IN ('queued', 'leased')").bind(id, at),
    db.prepare("INSERT INTO submission_events (submission_id, at, state, detail) VALUES (?1, ?2, 'requeued', ?3)").bind(id, at, reason),
  ]);
}

/** The job waits for staff to fix the assignment's environment: queued, with the reason as its own event. */
export async function recordWaitingForEnvironment(db: D1Database, id: string, reason: string): Promise<void> {
  const at = nowIso();
  await db.batch([
    db.prepare("UPDATE submissions SET status = 'queued', updated_at = ?2 WHERE id = ?1 AND status IN ('queued', 'leased')").bind(id, at),
    db.prepare(`INSERT INTO submission_events (submission_id, at, state, detail) VALUES (?1, ?2, '${WAITING_FOR_ENVIRONMENT}', ?3)`).bind(id, at, reason),
  ]);
}

/** The event state of a submission waiting for its assignment's environment (see submissionJson's waiting_for). */
export const WAITING_FOR_ENVIRONMENT = "waiting_environment";

/** A leased job's stage as an event of its own (the stage is its state), while the submission is still leased. */
export async function recordProgress(db: D1Database, id: string, stage: ProgressStage): Promise<void> {
  await db
    .prepare("INSERT INTO submission_events (submission_id, at, state, detail) SELECT ?1, ?2, ?3, '' WHERE EXISTS (SELECT 1 FROM submissions WHERE id = ?1 AND status = 'leased')")
    .bind(id, nowIso(), stage)
    .run();
}

export async function recordFailed(db: D1Database, id: string, reason: string): Promise<void> {
  const at = nowIso();
  await db.batch([
    db
      .prepare("UPDATE submissions SET status = 'failed', message = ?2, finished_at = ?3, updated_at = ?3 WHERE id = ?1 AND status IN ('queued', 'leased')")
      .bind(id, reason, at),
    db.prepare("INSERT INTO submission_events (submission_id, at, state, detail) VALUES (?1, ?2, 'failed', ?3)").bind(id, at, reason),
  ]);
}

/**
 * A grade's per-test rows for a submission, written only when `guard` holds: SQL that sees the
 * submission id as ?1 and `guardParams` as ?3, ?4, … (the guard ties the rows to one attempt's token).
 */
export function insertTestResults(db: D1Database, submissionId: string, tests: Grade["tests"], guard: string, ...guardParams: unknown[]): D1PreparedStatement {
  return db
    .prepare(
      `INSERT OR REPLACE INTO test_results (submission_id, name, score, max_score, visibility, output, kernel_reason)
       SELECT ?1, t.value ->> '$.name', t.value ->> '$.score', t.value ->> '$.maxScore', t.value ->> '$.visibility', t.value ->> '$.output', t.value ->> '$.ranInKernel'
       FROM json_each(?2) AS t
       WHERE ${guard}`,
    )
    .bind(submissionId, JSON.stringify(tests), ...guardParams);
}

/**
 * Records the grade of one attempt and its passback outbox row, in one D1 transaction. Returns false
 * when the submission was already final (graded by another attempt, or failed): then nothing is written.
 */
export async function recordGrade(db: D1Database, id: string, token: string, runner: string, grade: Grade): Promise<boolean> {
  const at = nowIso();
  const [update] = await db.batch([
    db
      .prepare(
        `UPDATE submissions SET status = 'graded', graded_token = ?2, runner = ?3, verdict = ?4, score = ?5, points = ?6,
           max_points = ?7, message = ?8, finished_at = ?9, updated_at = ?9
         WHERE id = ?1 AND status IN ('queued', 'leased')`,
      )
      .bind(id, token, runner, grade.verdict, grade.score, grade.points, grade.maxPoints, grade.message, at),
    // Test rows and the event are written only when the update above took this attempt's token.
    insertTestResults(db, id, grade.tests, "(SELECT graded_token FROM submissions WHERE id = ?1) = ?3", token),
    db
      .prepare(
        `INSERT INTO submission_events (submission_id, at, state, detail)
         SELECT ?1, ?2, 'graded', ?3 WHERE (SELECT graded_token FROM submissions WHERE id = ?1) = ?4`,
      )
      .bind(id, at, `${grade.verdict}: ${grade.points}/${grade.maxPoints} (score ${grade.score}) on runner ${runner}`, token),
    // The outbox row for LTI passback, in the same transaction as the grade it will carry.
    db
      .prepare(
        `INSERT OR IGNORE INTO passbacks (submission_id, course, section, assignment, user, state, attempts, next_attempt_at, created_at, updated_at)
         SELECT id, course, section, assignment, user, 'pending', 0, ?2, ?3, ?3 FROM submissions WHERE id = ?1 AND graded_token = ?4`,
      )
      .bind(id, Date.now(), at, token),
  ]);
  return (update?.meta.changes ?? 0) > 0;
}
