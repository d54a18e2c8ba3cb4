import { Notebook, OtterServiceRouting, SubmitBody, type JobSpec } from "@otter-edge/shared";
import { and, eq } from "drizzle-orm";
import type { Identity } from "./auth/authenticate.js";
import { sha256Hex } from "./autograder.js";
import { database, nowIso } from "./db/client.js";
import { assignments, courseSections, sectionAssignments, submissionEvents, submissions } from "./db/schema.js";
import { dispatcherFor } from "./dispatcher/stub.js";
import type { Env } from "./env.js";
import { ApiError } from "./errors.js";

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
  const routingRaw = typeof metadata === "object" && metadata !== null ? (metadata as { otter_service?: unknown }).otter_service : undefined;
  if (routingRaw === undefined) {
    throw new ApiError(400, "missing_routing", "The notebook has no metadata.otter_service {course, section, assignment}; submit the notebook your course gave you.");
  }
  const routing = OtterServiceRouting.safeParse(routingRaw);
  if (!routing.success) {
    const field = routing.error.issues[0]?.path.join(".") || "otter_service";
    throw new ApiError(400, "invalid_routing", `metadata.otter_service.${field} is missing or not a non-empty string.`);
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

/** The assignment's grader, if the course config knows this course, section and assignment. */
async function resolveAssignment(env: Env, routing: OtterServiceRouting) {
  const db = database(env.DB);
  const [section, offered, grader] = await db.batch([
    db.select().from(courseSections).where(and(eq(courseSections.course, routing.course), eq(courseSections.section, routing.section))).limit(1),
    db
      .select()
      .from(sectionAssignments)
      .where(and(eq(sectionAssignments.course, routing.course), eq(sectionAssignments.section, routing.section), eq(sectionAssignments.assignment, routing.assignment)))
      .limit(1),
    db.select().from(assignments).where(and(eq(assignments.course, routing.course), eq(assignments.assignment, routing.assignment))).limit(1),
  ]);
  if (section.length === 0) {
    const course = await db.select({ c: courseSections.course }).from(courseSections).where(eq(courseSections.course, routing.course)).limit(1);
    if (course.length === 0) throw new ApiError(404, "unknown_course", `No course "${routing.course}" is configured on this gateway.`);
    throw new ApiError(404, "unknown_section", `Course "${routing.course}" has no section "${routing.section}".`);
  }
  if (offered.length === 0) {
    throw new ApiError(404, "unknown_assignment", `Section "${routing.section}" of "${routing.course}" has no assignment "${routing.assignment}".`);
  }
  const row = grader[0];
  if (!row) {
    throw new ApiError(409, "assignment_not_ready", `Assignment "${routing.assignment}" has no autograder uploaded yet; tell your course staff.`);
  }
  return row;
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
  const grader = await resolveAssignment(env, routing);

  const bytes = new TextEncoder().encode(JSON.stringify(notebook));
  const notebookSha256 = await sha256Hex(bytes);
  await env.BLOBS.put(`notebooks/${notebookSha256}`, bytes, { httpMetadata: { contentType: "application/x-ipynb+json" } });

  const id = crypto.randomUUID();
  const now = nowIso();
  const db = database(env.DB);
  await db.batch([
    db.insert(submissions).values({
      id,
      user: identity.user,
      ...routing,
      notebookSha256,
      notebookBytes: bytes.byteLength,
      autograderSha256: grader.autograderSha256,
      status: "queued",
      createdAt: now,
      updatedAt: now,
    }),
    db.insert(submissionEvents).values({ submissionId: id, at: now, state: "queued", detail: `submitted by ${identity.user} via ${identity.via}` }),
  ]);

  const job: JobSpec = {
    submissionId: id,
    ...routing,
    notebook: { sha256: notebookSha256, bytes: bytes.byteLength },
    autograder: { sha256: grader.autograderSha256, otterVersion: grader.otterVersion },
    timeoutMs: grader.timeoutSeconds * 1000,
  };
  try {
    await dispatcherFor(env).enqueue(job);
  } catch (err) {
    // The student hears an error and submits again; the row must not pretend to be queued.
    const at = nowIso();
    await db.batch([
      db.update(submissions).set({ status: "failed", message: "The queue was unavailable; the submission was not accepted.", finishedAt: at, updatedAt: at }).where(eq(submissions.id, id)),
      db.insert(submissionEvents).values({ submissionId: id, at, state: "failed", detail: `enqueue failed: ${String(err)}` }),
    ]);
    throw new ApiError(503, "queue_unavailable", "The grading queue is unavailable right now; please submit again in a minute.", { "Retry-After": "30" });
  }
  return { id };
}
