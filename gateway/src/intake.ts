import { Notebook, OtterServiceRouting, SubmitBody } from "@otter-edge/shared";
import { and, eq } from "drizzle-orm";
import type { Identity } from "./auth/authenticate.js";
import { sha256Hex } from "./autograder.js";
import { database, nowIso } from "./db/client.js";
import { assignments, courseSections, sectionAssignments, submissionEvents, submissions } from "./db/schema.js";
import { type GraderSettings, jobSpec } from "./dispatcher/job-spec.js";
import { dispatcherForJob } from "./dispatcher/stub.js";
import type { Env } from "./env.js";
import { ApiError } from "./errors.js";

/**
 * The routing a notebook carries and where: `metadata.otter_service` when present (otter-service
 * 2.x), else otter-service 0.1's top-level `metadata.course`/`section`/`assignment` (or `lab`, its
 * older name for the assignment) when any of them is there; undefined when neither.
 */
function routingOf(metadata: Record<string, unknown>): { raw: unknown; where: string } | undefined {
  if (metadata.otter_service !== undefined) return { raw: metadata.otter_service, where: "metadata.otter_service" };
  const { course, section, assignment, lab } = metadata;
  if ([course, section, assignment, lab].every((v) => v === undefined)) return undefined;
  return { raw: { course, section, assignment: assignment ?? lab }, where: "metadata" };
}

/** Turns a request body into a routed notebook, or says precisely what is wrong with it. */
export function parseSubmission(rawBody: string): { notebook: Notebook; routing: OtterServiceRouting; claimedUsers: unknown[] } {
  let body: unknown;
  try {
    body = JSON.parse(rawBody);
  } catch {
    throw new ApiError(400, "invalid_json", "The request body is not valid JSON.");
  }
  const envelope = SubmitBody.safeParse(body);
  if (!envelope.success || envelope.data.nb === undefined) {
    throw new ApiError(400, "missing_notebook", 'The body must be a JSON object with the notebook under "nb".');
  }
  const nb = envelope.data.nb;
  if (typeof nb !== "object" || nb === null || Array.isArray(nb)) {
    throw new ApiError(400, "invalid_notebook", '"nb" must be a notebook object.');
  }
  const nbformat = (nb as { nbformat?: unknown }).nbformat;
  if (nbformat !== 4) {
    throw new ApiError(400, "unsupported_nbformat", `Only nbformat 4 notebooks are graded; this one says nbformat ${JSON.stringify(nbformat ?? null)}.`);
  }
  const metadata = (nb as { metadata?: unknown }).metadata;
  const found = typeof metadata === "object" && metadata !== null && !Array.isArray(metadata) ? routingOf(metadata as Record<string, unknown>) : undefined;
  if (found === undefined) {
    throw new ApiError(400, "missing_routing", "The notebook has no metadata.otter_service {course, section, assignment}; submit the notebook your course gave you.");
  }
  const routing = OtterServiceRouting.safeParse(found.raw);
  if (!routing.success) {
    const field = routing.error.issues[0]?.path.join(".");
    const name = field ? `${found.where}.${field === "assignment" && found.where === "metadata" ? "assignment (or metadata.lab)" : field}` : found.where;
    throw new ApiError(400, "invalid_routing", `${name} is missing or not a non-empty string.`);
  }
  const parsed = Notebook.safeParse(nb);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, "invalid_notebook", `The notebook is not valid nbformat 4: ${issue?.path.join(".") || "notebook"}: ${issue?.message}.`);
  }
  return { notebook: parsed.data, routing: routing.data, claimedUsers: [envelope.data.user, envelope.data.username].filter((u) => u !== undefined) };
}

/** Refuses with 429 a student, or a course, submitting faster than the limits in wrangler.toml allow. */
async function enforceRateLimits(env: Env, user: string, course: string): Promise<void> {
  if (env.SUBMIT_RATE_LIMITS === "off") return;
  const checks: Array<[RateLimit | undefined, string, string]> = [
    [env.SUBMIT_LIMIT_USER, `user:${user}`, "rate_limited_user"],
    [env.SUBMIT_LIMIT_COURSE, `course:${course}`, "rate_limited_course"],
  ];
  for (const [limiter, key, code] of checks) {
    if (limiter && !(await limiter.limit({ key })).success) {
      const who = code === "rate_limited_user" ? "You are" : `Course ${course} is`;
      throw new ApiError(429, code, `${who} submitting faster than allowed; wait a minute and submit again.`, { "Retry-After": "60" });
    }
  }
}

/**
 * Why a submission's course, section or assignment was not found: only asked after the insert found
 * nothing, so the common path costs no extra round trip. Always throws.
 */
async function explainUnknownAssignment(env: Env, routing: OtterServiceRouting): Promise<never> {
  const db = database(env.DB);
  const [course, section, offered, grader] = await db.batch([
    db.select({ c: courseSections.course }).from(courseSections).where(eq(courseSections.course, routing.course)).limit(1),
    db.select({ c: courseSections.course }).from(courseSections).where(and(eq(courseSections.course, routing.course), eq(courseSections.section, routing.section))).limit(1),
    db
      .select({ c: sectionAssignments.course })
      .from(sectionAssignments)
      .where(and(eq(sectionAssignments.course, routing.course), eq(sectionAssignments.section, routing.section), eq(sectionAssignments.assignment, routing.assignment)))
      .limit(1),
    db.select({ c: assignments.course }).from(assignments).where(and(eq(assignments.course, routing.course), eq(assignments.assignment, routing.assignment))).limit(1),
  ]);
  if (course.length === 0) throw new ApiError(404, "unknown_course", `No course "${routing.course}" is configured on this gateway.`);
  if (section.length === 0) throw new ApiError(404, "unknown_section", `Course "${routing.course}" has no section "${routing.section}".`);
  if (offered.length === 0) throw new ApiError(404, "unknown_assignment", `Section "${routing.section}" of "${routing.course}" has no assignment "${routing.assignment}".`);
  if (grader.length === 0) throw new ApiError(409, "assignment_not_ready", `Assignment "${routing.assignment}" has no autograder uploaded yet; tell your course staff.`);
  // Configured after all: the config changed between the insert and this check.
  throw new ApiError(503, "assignment_changed", "The assignment's configuration changed while you submitted; please submit again.", { "Retry-After": "1" });
}

/**
 * Inserts the submission row (queued) and its first event in one D1 transaction, only if the
 * section offers the assignment and it has an autograder; returns that autograder, or null.
 * One round trip: the config check is the INSERT's own SELECT.
 */
async function insertSubmission(env: Env, row: { id: string; user: string; routing: OtterServiceRouting; sha256: string; bytes: number; at: string; detail: string }) {
  const { course, section, assignment } = row.routing;
  const [inserted, , grader] = await env.DB.batch<GraderSettings>([
    env.DB.prepare(
      `INSERT INTO submissions (id, user, course, section, assignment, notebook_sha256, notebook_bytes, autograder_sha256, status, attempts, created_at, updated_at)
       SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, a.autograder_sha256, 'queued', 0, ?8, ?8
       FROM assignments a
       JOIN section_assignments sa ON sa.course = a.course AND sa.assignment = a.assignment AND sa.section = ?4
       JOIN course_sections cs ON cs.course = sa.course AND cs.section = sa.section
       WHERE a.course = ?3 AND a.assignment = ?5`,
    ).bind(row.id, row.user, course, section, assignment, row.sha256, row.bytes, row.at),
    env.DB.prepare(`INSERT INTO submission_events (submission_id, at, state, detail) SELECT ?1, ?2, 'queued', ?3 WHERE EXISTS (SELECT 1 FROM submissions WHERE id = ?1)`).bind(
      row.id,
      row.at,
      row.detail,
    ),
    // Read in the same transaction: exactly the autograder the row was inserted with.
    env.DB.prepare(
      "SELECT autograder_sha256 AS autograderSha256, otter_version AS otterVersion, timeout_seconds AS timeoutSeconds, isolation FROM assignments WHERE course = ?1 AND assignment = ?2",
    ).bind(course, assignment),
  ]);
  if ((inserted?.meta.changes ?? 0) === 0) return null;
  return grader?.results[0] ?? null;
}

/** The student hears an error and submits again; the row must not pretend to be queued. */
async function markNotAccepted(env: Env, id: string, message: string, detail: string): Promise<void> {
  const db = database(env.DB);
  const at = nowIso();
  await db.batch([
    db.update(submissions).set({ status: "failed", message, finishedAt: at, updatedAt: at }).where(eq(submissions.id, id)),
    db.insert(submissionEvents).values({ submissionId: id, at, state: "failed", detail }),
  ]);
}

/**
 * Stores and queues a submission. Order matters for "a 2xx is never lost": the notebook is in R2
 * and the row in D1 before the Dispatcher holds the job, and the client hears 202 only after all three.
 */
export async function acceptSubmission(env: Env, identity: Identity, rawBody: string, claimedInRequest: Array<string | undefined> = []): Promise<{ id: string }> {
  const { notebook, routing, claimedUsers } = parseSubmission(rawBody);
  // The verified identity is the only one; a request that claims another is refused, not silently re-owned.
  const claimed = [...claimedUsers, ...claimedInRequest].filter((u) => u !== undefined);
  if (claimed.some((u) => u !== identity.user)) {
    throw new ApiError(403, "user_mismatch", `You are signed in as ${identity.user}; this submission names another user.`);
  }
  await enforceRateLimits(env, identity.user, routing.course);

  const bytes = new TextEncoder().encode(JSON.stringify(notebook));
  const notebookSha256 = await sha256Hex(bytes);
  const id = crypto.randomUUID();
  const now = nowIso();
  // R2 and D1 at the same time; both must succeed before the Dispatcher hears of the job. A blob left
  // behind by a refused submission is harmless (content-addressed; the next identical notebook reuses it).
  // Written only if absent: a class submitting the untouched notebook at once would otherwise rewrite
  // one key over and over, and R2 allows about one write per second to a key. (A put whose condition
  // fails resolves to null: the bytes are already there.)
  const [stored, inserted] = await Promise.allSettled([
    env.BLOBS.put(`notebooks/${notebookSha256}`, bytes, { httpMetadata: { contentType: "application/x-ipynb+json" }, onlyIf: { etagDoesNotMatch: "*" } }),
    insertSubmission(env, { id, user: identity.user, routing, sha256: notebookSha256, bytes: bytes.byteLength, at: now, detail: `submitted by ${identity.user} via ${identity.via}` }),
  ]);
  if (inserted.status === "rejected") throw inserted.reason;
  const grader = inserted.value;
  if (stored.status === "rejected") {
    if (grader) await markNotAccepted(env, id, "The notebook could not be stored; the submission was not accepted.", `storing the notebook failed: ${String(stored.reason)}`);
    throw new ApiError(503, "storage_unavailable", "Storing your notebook failed; please submit again in a minute.", { "Retry-After": "30" });
  }
  if (!grader) return explainUnknownAssignment(env, routing);

  const job = jobSpec({ id, ...routing, notebookSha256, notebookBytes: bytes.byteLength }, grader);
  try {
    await dispatcherForJob(env, id).enqueue(job);
  } catch (err) {
    await markNotAccepted(env, id, "The queue was unavailable; the submission was not accepted.", `enqueue failed: ${String(err)}`);
    throw new ApiError(503, "queue_unavailable", "The grading queue is unavailable right now; please submit again in a minute.", { "Retry-After": "30" });
  }
  return { id };
}
