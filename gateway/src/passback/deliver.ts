import { backoffMs } from "@otter-edge/shared";
import { and, eq, sql } from "drizzle-orm";
import { type Database, database, nowIso } from "../db/client.js";
import { passbackAttempts, passbacks, submissions } from "../db/schema.js";
import { type Env, intSetting } from "../env.js";
import { signBodyRequest } from "../lti/oauth.js";
import { parseOutcomeResponse, replaceResultXml } from "../lti/outcomes-xml.js";
import { postScore } from "../lti13/ags.js";
import { requestFailure } from "./request-failure.js";
import { type PassbackTarget, resolveLti13Target, resolveTarget, sectionAssignmentConfig } from "./target.js";
import { log } from "../log.js";
import { type GradePolicy, countingFirstSql } from "../submissions/grade-policy.js";

export type PassbackRow = typeof passbacks.$inferSelect;

export function passbackTiming(env: Env) {
  return {
    timeoutMs: intSetting(env.PASSBACK_TIMEOUT_MS, 15_000),
    baseMs: intSetting(env.PASSBACK_BACKOFF_BASE_MS, 30_000),
    maxMs: intSetting(env.PASSBACK_BACKOFF_MAX_MS, 60 * 60_000),
    windowMs: intSetting(env.PASSBACK_RETRY_WINDOW_MS, 24 * 60 * 60_000),
  };
}


/** The submission whose grade the LMS should end with, under the assignment's policy. */
export async function policyChoice(db: Database, row: { course: string; assignment: string; user: string }, policy: GradePolicy) {
  const mine = and(eq(submissions.course, row.course), eq(submissions.assignment, row.assignment), eq(submissions.user, row.user), eq(submissions.status, "graded"));
  const [chosen] = await db.select({ id: submissions.id, score: submissions.score }).from(submissions).where(mine).orderBy(sql.raw(countingFirstSql(policy, "submissions"))).limit(1);
  return chosen;
}

/** Moves the row to `state`; with `attempt`, the try's record goes in the same D1 round trip. */
async function settle(db: Database, row: PassbackRow, state: PassbackRow["state"], fields: Partial<PassbackRow> = {}, attempt?: typeof passbackAttempts.$inferInsert) {
  const update = db
    .update(passbacks)
    .set({ state, nextAttemptAt: state === "retrying" || state === "pending" ? fields.nextAttemptAt ?? Date.now() : null, updatedAt: nowIso(), ...fields })
    .where(eq(passbacks.id, row.id));
  if (attempt) await db.batch([db.insert(passbackAttempts).values(attempt), update]);
  else await update;
}

interface Posted {
  url: string;
  httpStatus: number | null;
  /** LTI 1.1's imsx_codeMajor (null over LTI 1.3, where the HTTP status says it). */
  codeMajor: string | null;
  delivered: boolean;
  description: string;
}

/** One LTI 1.1 replaceResult: delivered only when the LMS's reply says `success`. */
async function postOutcome(target: PassbackTarget, messageId: string, score: number, timeoutMs: number): Promise<Posted> {
  const body = new TextEncoder().encode(replaceResultXml({ messageId, sourcedId: target.sourcedId, score }));
  const { authorization } = await signBodyRequest({ url: target.url, body, key: target.consumerKey, secret: target.secret });
  try {
    const res = await fetch(target.url, { method: "POST", headers: { "content-type": "application/xml", authorization }, body, signal: AbortSignal.timeout(timeoutMs) });
    const reply = parseOutcomeResponse(await res.text());
    const codeMajor = reply?.codeMajor ?? null;
    const description = reply ? `${reply.codeMajor}: ${reply.description}` : `HTTP ${res.status} with no imsx_POXEnvelopeResponse in the reply`;
    return { url: target.url, httpStatus: res.status, codeMajor, delivered: codeMajor === "success", description };
  } catch (err) {
    return { url: target.url, httpStatus: null, codeMajor: null, delivered: false, description: requestFailure(err, timeoutMs) };
  }
}

/**
 * One try at delivering one outbox row. Success is only `imsx_codeMajor` = success in the LMS's
 * reply; anything else (HTTP error, time-out, failure, an unparseable reply) is retried with
 * backoff until the retry window closes, then the row is parked as `dead` for staff.
 */
export async function deliverPassback(env: Env, row: PassbackRow): Promise<PassbackRow["state"]> {
  const db = database(env.DB);
  const timing = passbackTiming(env);

  const lti13 = await resolveLti13Target(db, row);
  if (!env.LTI_CONSUMERS && !lti13) {
    // A gateway without LTI credentials posts nothing: say so once instead of retrying for a day.
    await settle(db, row, "disabled", { lastError: "this gateway has no LTI consumer configured (LTI_CONSUMERS) and the student has no LTI 1.3 launch" });
    return "disabled";
  }
  const config = await sectionAssignmentConfig(db, row);
  if (config && !config.postGrades) {
    await settle(db, row, "disabled", { lastError: "grade passback is switched off for this section (post_grade: false)" });
    return "disabled";
  }
  // A late result of an older submission never overwrites the grade the policy picks.
  const chosen = await policyChoice(db, row, config?.policy ?? "latest");
  if (!chosen || chosen.id !== row.submissionId) {
    await settle(db, row, "superseded", { lastError: `the ${config?.policy ?? "latest"} grade is submission ${chosen?.id ?? "none"}` });
    return "superseded";
  }
  const score = chosen.score ?? 0;
  const attempt = row.attempts + 1;
  const now = Date.now();
  const messageId = `otter-edge-${row.id}-${attempt}-${crypto.randomUUID()}`;
  // LTI 1.3 AGS when the student launched over 1.3; else LTI 1.1 Basic Outcomes.
  const target = lti13 ?? (await resolveTarget(env, db, row, config));
  const posted: Posted =
    "error" in target
      ? { url: "", httpStatus: null, codeMajor: null, delivered: false, description: target.error }
      : "link" in target
        ? { ...(await postScore(env, db, target.platform, target.link, score, timing.timeoutMs)), codeMajor: null }
        : await postOutcome(target, messageId, score, timing.timeoutMs);
  const { url, httpStatus, codeMajor, delivered, description } = posted;
  const tried = { passbackId: row.id, at: nowIso(), messageId, url, score, httpStatus, codeMajor, description: description.slice(0, 1000), durationMs: Date.now() - now };

  if (delivered) {
    await settle(db, row, "delivered", { attempts: attempt, postedScore: score, lastError: null, deliveredAt: nowIso() }, tried);
    return "delivered";
  }
  const age = now - Date.parse(row.createdAt);
  if (age >= timing.windowMs) {
    await settle(db, row, "dead", { attempts: attempt, postedScore: score, lastError: description }, tried);
    log.error("passback dead", { passbackId: row.id, submissionId: row.submissionId, error: description });
    return "dead";
  }
  await settle(db, row, "retrying", { attempts: attempt, postedScore: score, lastError: description, nextAttemptAt: now + backoffMs(attempt, timing) }, tried);
  log.warn("passback will be retried", { passbackId: row.id, attempt, error: description });
  return "retrying";
}
