import { and, asc, count, eq, inArray } from "drizzle-orm";
import type { Database } from "../db/client.js";
import { REGRADE_ITEM_STATES, REGRADE_OUTCOMES, regradeItems, regrades } from "../db/schema.js";

/** How many changed scores a progress answer lists; the counts always cover everything. */
const MAX_LISTED = 1000;

export type RegradeRow = typeof regrades.$inferSelect;

/** A regrade as staff see it: what was asked, progress by state, and which scores change. */
export async function regradeView(db: Database, regrade: RegradeRow) {
  const mine = eq(regradeItems.regradeId, regrade.id);
  const [byState, byOutcome, changes, failures] = await db.batch([
    db.select({ state: regradeItems.state, n: count() }).from(regradeItems).where(mine).groupBy(regradeItems.state),
    db.select({ outcome: regradeItems.outcome, n: count() }).from(regradeItems).where(mine).groupBy(regradeItems.outcome),
    db
      .select()
      .from(regradeItems)
      .where(and(mine, inArray(regradeItems.outcome, ["changed", "would_change", "kept_higher"])))
      .orderBy(asc(regradeItems.user), asc(regradeItems.submissionId))
      .limit(MAX_LISTED),
    db.select().from(regradeItems).where(and(mine, eq(regradeItems.state, "failed"))).orderBy(asc(regradeItems.submissionId)).limit(MAX_LISTED),
  ]);
  const progress = Object.fromEntries(REGRADE_ITEM_STATES.map((s) => [s, byState.find((r) => r.state === s)?.n ?? 0]));
  const outcomes = Object.fromEntries(REGRADE_OUTCOMES.map((o) => [o, byOutcome.find((r) => r.outcome === o)?.n ?? 0]));
  return {
    id: regrade.id,
    course: regrade.course,
    assignment: regrade.assignment,
    state: regrade.state,
    dry_run: regrade.dryRun,
    never_lower: regrade.neverLower,
    only_outdated: regrade.onlyOutdated,
    scope: { user: regrade.scopeUser, submission_ids: regrade.scopeSubmissions ? (JSON.parse(regrade.scopeSubmissions) as string[]) : null },
    autograder_sha256: regrade.autograderSha256,
    requested_by: regrade.requestedBy,
    message: regrade.message,
    total: regrade.total,
    done: progress.graded! + progress.failed! + progress.cancelled!,
    progress,
    outcomes,
    changes: changes.map((i) => ({ submission_id: i.submissionId, user: i.user, old_score: i.oldScore, new_score: i.newScore, verdict: i.verdict, outcome: i.outcome })),
    failures: failures.map((i) => ({ submission_id: i.submissionId, user: i.user, message: i.message })),
    created_at: regrade.createdAt,
    finished_at: regrade.finishedAt,
  };
}
export type RegradeView = Awaited<ReturnType<typeof regradeView>>;
