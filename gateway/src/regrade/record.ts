import type { Grade } from "@otter-edge/shared";
import { nowIso } from "../db/client.js";
import { insertTestResults } from "../dispatcher/record.js";
import type { RegradeOutcome } from "../db/schema.js";

/**
 * The Dispatcher's D1 writes for regrade jobs. Like the writes for new submissions (dispatcher/record.ts),
 * every update is guarded by the item's state, so a late or repeated result changes nothing.
 * A regrade never touches a submission it cannot grade: an infrastructure failure leaves the old grade.
 */

const ITEM = "regrade_id = ?1 AND submission_id = ?2";

/** Marks the regrade finished once no item is waiting or being graded. */
const finishIfDone = (db: D1Database, regradeId: number, at: string) =>
  db
    .prepare(
      `UPDATE regrades SET state = 'finished', finished_at = ?2, updated_at = ?2 WHERE id = ?1 AND state = 'running'
         AND NOT EXISTS (SELECT 1 FROM regrade_items WHERE regrade_id = ?1 AND state IN ('queued', 'leased'))`,
    )
    .bind(regradeId, at);

/** The write for a regrade job's lease, not yet run (see leasedWrites). */
export function regradeLeasedWrites(db: D1Database, regradeId: number, submissionId: string, attempt: number): D1PreparedStatement[] {
  return [db.prepare(`UPDATE regrade_items SET state = 'leased', attempts = ?3, updated_at = ?4 WHERE ${ITEM} AND state IN ('queued', 'leased')`).bind(regradeId, submissionId, attempt, nowIso())];
}

export async function recordRegradeRequeued(db: D1Database, regradeId: number, submissionId: string, reason: string): Promise<void> {
  await db
    .prepare(`UPDATE regrade_items SET state = 'queued', message = ?3, updated_at = ?4 WHERE ${ITEM} AND state IN ('queued', 'leased')`)
    .bind(regradeId, submissionId, reason, nowIso())
    .run();
}

export async function recordRegradeFailed(db: D1Database, regradeId: number, submissionId: string, reason: string): Promise<void> {
  const at = nowIso();
  await db.batch([
    db
      .prepare(`UPDATE regrade_items SET state = 'failed', message = ?3, finished_at = ?4, updated_at = ?4 WHERE ${ITEM} AND state IN ('queued', 'leased')`)
      .bind(regradeId, submissionId, reason, at),
    finishIfDone(db, regradeId, at),
  ]);
}

/** What a new grade does to a submission whose recorded score is `old` (null when it had failed). */
export function regradeOutcome(old: number | null, next: number, opts: { dryRun: boolean; neverLower: boolean }): RegradeOutcome {
  const same = old !== null && old === next;
  if (opts.dryRun) return same ? "would_stay" : "would_change";
  if (opts.neverLower && old !== null && next < old) return "kept_higher";
  return same ? "unchanged" : "changed";
}

export interface RegradeRecorded {
  recorded: boolean;
  outcome?: RegradeOutcome;
  submission?: { course: string; section: string; assignment: string; user: string };
}

/**
 * Records a regrade result and, unless it is a dry run or never-lower keeps the old score, applies it
 * to the submission (score, tests, autograder) in the same D1 transaction. Returns what it did, so the
 * caller can re-post the student's grade to the LMS when the score changed.
 */
export async function recordRegradeGrade(db: D1Database, regradeId: number, submissionId: string, token: string, runner: string, grade: Grade): Promise<RegradeRecorded> {
  const [regradeRows, submissionRows] = await db.batch<Record<string, unknown>>([
    db.prepare("SELECT dry_run, never_lower, autograder_sha256 FROM regrades WHERE id = ?1").bind(regradeId),
    db.prepare("SELECT course, section, assignment, user, score, status FROM submissions WHERE id = ?1").bind(submissionId),
  ]);
  const regrade = regradeRows?.results[0] as { dry_run: number; never_lower: number; autograder_sha256: string } | undefined;
  const submission = submissionRows?.results[0] as { course: string; section: string; assignment: string; user: string; score: number | null; status: string } | undefined;
  if (!regrade || !submission) return { recorded: false };

  const old = submission.status === "graded" ? submission.score : null;
  const outcome = regradeOutcome(old, grade.score, { dryRun: regrade.dry_run === 1, neverLower: regrade.never_lower === 1 });
  const applies = outcome === "changed" || outcome === "unchanged";
  const at = nowIso();
  // Every write after the first happens only if the first took this attempt's token.
  const mine = `(SELECT graded_token FROM regrade_items WHERE ${ITEM}) = ?3`;
  const statements = [
    db
      .prepare(
        `UPDATE regrade_items SET state = 'graded', graded_token = ?3, new_score = ?4, new_points = ?5, new_max_points = ?6, verdict = ?7,
           outcome = ?8, message = ?9, finished_at = ?10, updated_at = ?10
         WHERE ${ITEM} AND state IN ('queued', 'leased')`,
      )
      .bind(regradeId, submissionId, token, grade.score, grade.points, grade.maxPoints, grade.verdict, outcome, grade.message, at),
  ];
  if (applies) {
    statements.push(
      db
        .prepare(
          `UPDATE submissions SET status = 'graded', graded_token = ?3, runner = ?4, verdict = ?5, score = ?6, points = ?7, max_points = ?8,
             message = ?9, autograder_sha256 = ?10, finished_at = COALESCE(finished_at, ?11), updated_at = ?11
           WHERE id = ?2 AND status IN ('graded', 'failed') AND ${mine}`,
        )
        .bind(regradeId, submissionId, token, runner, grade.verdict, grade.score, grade.points, grade.maxPoints, grade.message, regrade.autograder_sha256, at),
      db.prepare(`DELETE FROM test_results WHERE submission_id = ?2 AND ${mine}`).bind(regradeId, submissionId, token),
      insertTestResults(db, submissionId, grade.tests, "(SELECT graded_token FROM regrade_items WHERE regrade_id = ?3 AND submission_id = ?1) = ?4", regradeId, token),
    );
  }
  if (outcome !== "would_change" && outcome !== "would_stay") {
    // A dry run leaves no trace on the submission; a real regrade is part of its history.
    const detail =
      outcome === "kept_higher"
        ? `regrade ${regradeId}: ${grade.score} is lower than ${old}; kept ${old} (never-lower)`
        : `regrade ${regradeId}: ${grade.verdict} ${grade.points}/${grade.maxPoints} (score ${old ?? "none"} → ${grade.score}) on runner ${runner}`;
    statements.push(
      db.prepare(`INSERT INTO submission_events (submission_id, at, state, detail) SELECT ?2, ?4, 'regraded', ?5 WHERE ${mine}`).bind(regradeId, submissionId, token, at, detail),
    );
  }
  statements.push(finishIfDone(db, regradeId, at));
  const [update] = await db.batch(statements);
  const recorded = (update?.meta.changes ?? 0) > 0;
  return { recorded, outcome, submission };
}
