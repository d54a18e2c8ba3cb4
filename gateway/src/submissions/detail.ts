import { asc, eq } from "drizzle-orm";
import type { Identity } from "../auth/authenticate.js";
import { type Principal, assertCourse } from "../auth/service-tokens.js";
import { database } from "../db/client.js";
import { passbacks, submissionEvents, submissions, testResults } from "../db/schema.js";
import { ApiError } from "../errors.js";
import { passbackView } from "../passback/view.js";
import { WAITING_FOR_ENVIRONMENT } from "../dispatcher/record.js";

/**
 * One submission with everything a person may ask about it: the row, its test results, every state
 * change and its passback. Read by the JSON status API and the HTML pages, so both show the same
 * thing and enforce the same rules.
 */
export async function readSubmission(d1: D1Database, id: string) {
  const db = database(d1);
  const [rows, tests, events, passback] = await db.batch([
    db.select().from(submissions).where(eq(submissions.id, id)).limit(1),
    db.select().from(testResults).where(eq(testResults.submissionId, id)).orderBy(asc(testResults.name)),
    db.select().from(submissionEvents).where(eq(submissionEvents.submissionId, id)).orderBy(asc(submissionEvents.id)),
    db.select().from(passbacks).where(eq(passbacks.submissionId, id)).limit(1),
  ]);
  const row = rows[0];
  if (!row) throw new ApiError(404, "submission_not_found", `No submission ${id}.`);
  return { row, tests, events, passback: passback[0] ?? null };
}
export type SubmissionDetail = Awaited<ReturnType<typeof readSubmission>>;

/** Who is looking: course staff (or an admin), or a verified student. */
export type Viewer = { principal: Principal } | { identity: Identity };

/** Staff see their course's submissions; a student only their own. Throws 403 otherwise. */
export function assertCanSee(viewer: Viewer, detail: SubmissionDetail): void {
  if ("principal" in viewer) assertCourse(viewer.principal, detail.row.course);
  else if (detail.row.user !== viewer.identity.user) throw new ApiError(403, "forbidden", "This submission belongs to another student.");
}

/**
 * Whether a test's output may be shown. otter marks tests whose cases students must not see as
 * `hidden`; students get their score but never their output. Staff see everything.
 */
export function outputVisible(viewer: Viewer, visibility: string): boolean {
  return "principal" in viewer || visibility !== "hidden";
}

/** The JSON status answer (`GET /api/v1/submissions/:id`). */
export function submissionJson(viewer: Viewer, { row, tests, events, passback }: SubmissionDetail) {
  return {
    id: row.id,
    user: row.user,
    course: row.course,
    section: row.section,
    assignment: row.assignment,
    status: row.status,
    verdict: row.verdict,
    score: row.score,
    points: row.points,
    max_points: row.maxPoints,
    message: row.message,
    attempts: row.attempts,
    created_at: row.createdAt,
    leased_at: row.leasedAt,
    finished_at: row.finishedAt,
    // Why a queued submission is not being graded yet, when it is not simply its turn.
    // "environment": its packages could not be installed and staff must upload a fixed zip;
    // "environment_build": a runner is installing them (the first job after an upload waits for that).
    waiting_for: waitingFor(row.status, events.at(-1)?.state),
    tests: tests.map((t) => ({
      name: t.name,
      score: t.score,
      max_score: t.maxScore,
      visibility: t.visibility,
      ...(outputVisible(viewer, t.visibility) ? { output: t.output } : {}),
      ...("principal" in viewer && t.kernelReason ? { ran_in_kernel: t.kernelReason } : {}),
    })),
    events: events.map((e) => ({ at: e.at, state: e.state, detail: e.detail })),
    passback: passback ? passbackView(passback) : null,
  };
}

/** Why a submission is not graded yet, when it is something other than its turn in the queue. */
export function waitingFor(status: string, lastEvent: string | undefined): "environment" | "environment_build" | null {
  if (status === "queued" && lastEvent === WAITING_FOR_ENVIRONMENT) return "environment";
  if (status === "leased" && lastEvent === "preparing_environment") return "environment_build";
  return null;
}
