import type { passbacks } from "../db/schema.js";

/** A passback as staff and students see it: state, tries, when the next one is, what went wrong. */
export function passbackView(row: typeof passbacks.$inferSelect) {
  return {
    id: row.id,
    submission_id: row.submissionId,
    state: row.state,
    attempts: row.attempts,
    next_attempt_at: row.nextAttemptAt != null && (row.state === "retrying" || row.state === "pending") ? new Date(row.nextAttemptAt).toISOString() : null,
    posted_score: row.postedScore,
    last_error: row.lastError,
    created_at: row.createdAt,
    delivered_at: row.deliveredAt,
  };
}
