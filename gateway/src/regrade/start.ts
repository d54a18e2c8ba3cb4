import { and, eq, inArray, ne, sql, type SQL } from "drizzle-orm";
import { z } from "zod";
import type { Principal } from "../auth/service-tokens.js";
import { database, nowIso } from "../db/client.js";
import { assignments, regradeItems, regrades, submissions } from "../db/schema.js";
import { jobSpec } from "../dispatcher/job-spec.js";
import { allDispatchers, dispatcherShard, jobsByShard } from "../dispatcher/stub.js";
import type { Env } from "../env.js";
import { ApiError } from "../errors.js";
import type { RegradeRow } from "./view.js";
import { log } from "../log.js";

/** New submissions always go first: a student waiting on Submit matters more than a batch regrade. */
export const REGRADE_PRIORITY = -1;

const MAX_LISTED_SUBMISSIONS = 1000;

export const RegradeRequest = z
  .object({
    /** Only these submissions (of this assignment). */
    submission_ids: z.array(z.string().min(1).max(64)).min(1).max(MAX_LISTED_SUBMISSIONS).optional(),
    /** Only this student's submissions. */
    user: z.string().min(1).max(200).optional(),
    /** Only submissions graded by another autograder than the assignment's current one. */
    only_outdated: z.boolean().default(false),
    /** Never replace a score with a lower one. */
    never_lower: z.boolean().default(false),
    /** Grade and report, change nothing, post nothing. */
    dry_run: z.boolean().default(false),
  })
  .strict();
export type RegradeRequest = z.infer<typeof RegradeRequest>;

/**
 * Starts a regrade: finds the submissions in scope, writes the regrade and its items to D1, then queues
 * one job per item in the Dispatcher at low priority. Submissions still queued or being graded are left
 * out (they are about to be graded anyway, and with the current autograder).
 */
export async function startRegrade(env: Env, principal: Principal, course: string, assignment: string, request: RegradeRequest): Promise<RegradeRow> {
  const db = database(env.DB);
  const [grader] = await db.select().from(assignments).where(and(eq(assignments.course, course), eq(assignments.assignment, assignment))).limit(1);
  if (!grader) throw new ApiError(404, "unknown_assignment", `Course "${course}" has no autograder for assignment "${assignment}".`);

  const [running] = await db
    .select({ id: regrades.id })
    .from(regrades)
    .where(and(eq(regrades.course, course), eq(regrades.assignment, assignment), eq(regrades.state, "running")))
    .limit(1);
  if (running) throw new ApiError(409, "regrade_in_progress", `Regrade ${running.id} of ${course}/${assignment} is still running; wait for it or cancel it.`);

  const filters: SQL[] = [eq(submissions.course, course), eq(submissions.assignment, assignment)];
  if (request.user) filters.push(eq(submissions.user, request.user));
  if (request.only_outdated) filters.push(ne(submissions.autograderSha256, grader.autograderSha256));
  if (request.submission_ids) {
    const ids = [...new Set(request.submission_ids)];
    const found = await db.select({ id: submissions.id, status: submissions.status }).from(submissions).where(and(...filters.slice(0, 2), inArray(submissions.id, ids)));
    const missing = ids.filter((id) => !found.some((f) => f.id === id));
    if (missing.length) throw new ApiError(404, "submission_not_found", `No submission ${missing.slice(0, 5).join(", ")} in ${course}/${assignment}.`);
    const busy = found.filter((f) => f.status === "queued" || f.status === "leased");
    if (busy.length) throw new ApiError(409, "submission_in_progress", `Submission ${busy.map((b) => b.id).slice(0, 5).join(", ")} is still being graded; regrade it once it is done.`);
    filters.push(inArray(submissions.id, ids));
  }
  filters.push(inArray(submissions.status, ["graded", "failed"]));

  const now = nowIso();
  const [regrade] = await db
    .insert(regrades)
    .values({
      course,
      assignment,
      autograderSha256: grader.autograderSha256,
      dryRun: request.dry_run,
      neverLower: request.never_lower,
      onlyOutdated: request.only_outdated,
      scopeUser: request.user ?? null,
      scopeSubmissions: request.submission_ids ? JSON.stringify(request.submission_ids) : null,
      requestedBy: `${principal.role}:${principal.name}`,
      state: "running",
      total: 0,
      createdAt: now,
      updatedAt: now,
    })
    .returning();
  if (!regrade) throw new Error("inserting the regrade returned no row");

  try {
    await db.run(
      sql`INSERT INTO regrade_items (regrade_id, submission_id, user, state, old_score, updated_at)
          SELECT ${regrade.id}, ${submissions.id}, ${submissions.user}, 'queued', ${submissions.score}, ${now} FROM ${submissions} WHERE ${and(...filters)}`,
    );
    const items = await db
      .select({ id: submissions.id, section: submissions.section, sha256: submissions.notebookSha256, bytes: submissions.notebookBytes })
      .from(regradeItems)
      .innerJoin(submissions, eq(submissions.id, regradeItems.submissionId))
      .where(eq(regradeItems.regradeId, regrade.id));
    const jobs = items.map((item) => jobSpec({ id: item.id, course, section: item.section, assignment, notebookSha256: item.sha256, notebookBytes: item.bytes }, grader, regrade.id));
    // Each shard takes its share whole; if one fails, the catch below cancels the regrade in every shard.
    await Promise.all([...jobsByShard(env, jobs)].map(([shard, share]) => dispatcherShard(env, shard).enqueueMany(share, REGRADE_PRIORITY)));
    const [started] = await db
      .update(regrades)
      .set({ total: jobs.length, ...(jobs.length === 0 ? { state: "finished", finishedAt: nowIso(), message: "No submission matched." } : {}), updatedAt: nowIso() })
      .where(eq(regrades.id, regrade.id))
      .returning();
    return started!;
  } catch (err) {
    // Nothing half-started may stay "running" (it would block the next regrade): cancel it whole.
    log.error("regrade failed to start", { regradeId: regrade.id, error: String(err) });
    await cancelRegrade(env, regrade.id, `could not start: ${String(err)}`).catch(() => undefined);
    throw new ApiError(503, "queue_unavailable", "The grading queue is unavailable right now; the regrade was not started. Try again in a minute.", { "Retry-After": "30" });
  }
}

/** Stops a regrade: its waiting jobs are dropped, leased ones revoked; what was already applied stays. */
export async function cancelRegrade(env: Env, regradeId: number, reason: string): Promise<void> {
  await Promise.all(allDispatchers(env).map((d) => d.cancelRegrade(regradeId)));
  const db = database(env.DB);
  const at = nowIso();
  await db.batch([
    db
      .update(regradeItems)
      .set({ state: "cancelled", message: reason, finishedAt: at, updatedAt: at })
      .where(and(eq(regradeItems.regradeId, regradeId), inArray(regradeItems.state, ["queued", "leased"]))),
    db.update(regrades).set({ state: "cancelled", message: reason, finishedAt: at, updatedAt: at }).where(and(eq(regrades.id, regradeId), eq(regrades.state, "running"))),
  ]);
}
