import { Isolation, environmentHash } from "@otter-edge/shared";
import { Hono } from "hono";
import { and, count, desc, eq, inArray, sql } from "drizzle-orm";
import { z } from "zod";
import { issueToken, revokeToken } from "../auth/api-tokens.js";
import { type StaffEnv, assertAdmin, assertCourse, requireStaff } from "../auth/service-tokens.js";
import { inspectAutograder, sha256Hex } from "../autograder.js";
import { CourseConfig, loadCourseConfig } from "../course-config.js";
import { checkAgainstIndex } from "../environment-check.js";
import { database, nowIso } from "../db/client.js";
import { PASSBACK_STATES, TOKEN_KINDS, apiTokens, assignments, passbacks } from "../db/schema.js";
import { retryPassback } from "../passback/retry.js";
import { passbackView } from "../passback/view.js";
import { queueStats } from "../dispatcher/queue-stats.js";
import { allDispatchers } from "../dispatcher/stub.js";
import { ApiError } from "../errors.js";

/**
 * Operator and staff administration. Admin tokens (and the root ADMIN_TOKEN) may do everything;
 * a staff token only what concerns its own course.
 */
export const adminRoutes = new Hono<StaffEnv>();

adminRoutes.use("*", requireStaff);

adminRoutes.put("/config", async (c) => {
  const parsed = CourseConfig.safeParse(await c.req.json().catch(() => undefined));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, "invalid_course_config", `Course config: ${issue?.path.join(".") || "body"}: ${issue?.message}.`);
  }
  for (const course of Object.keys(parsed.data)) assertCourse(c.get("principal"), course);
  return c.json(await loadCourseConfig(c.env.DB, parsed.data));
});

const MAX_AUTOGRADER_BYTES = 50 * 1024 * 1024;

adminRoutes.put("/assignments/:course/:assignment/autograder", async (c) => {
  assertCourse(c.get("principal"), c.req.param("course"));
  const zip = new Uint8Array(await c.req.arrayBuffer());
  if (zip.byteLength === 0) throw new ApiError(400, "empty_upload", "Send the autograder.zip as the request body.");
  if (zip.byteLength > MAX_AUTOGRADER_BYTES) throw new ApiError(413, "payload_too_large", "An autograder.zip may be at most 50 MB.");
  const { otterVersion, environment } = inspectAutograder(zip);
  const timeoutSeconds = Number(c.req.query("timeout_seconds") ?? 600);
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 10 || timeoutSeconds > 3600) {
    throw new ApiError(400, "invalid_timeout", "timeout_seconds must be a whole number from 10 to 3600.");
  }
  // Where the tests run; an upload that does not say keeps the assignment's setting (new: "kernel").
  const isolationParam = c.req.query("isolation");
  const isolation = isolationParam === undefined ? undefined : Isolation.safeParse(isolationParam);
  if (isolation && !isolation.success) {
    throw new ApiError(400, "invalid_isolation", 'isolation must be "kernel" (tests run as `otter run` runs them) or "grader" (tests run outside the notebook\'s kernel).');
  }
  // Refused now rather than found by the first student's job: a package or version the index lacks.
  const indexChecked = Boolean(c.env.PACKAGE_INDEX_URL) && environment.requirements.length > 0;
  if (indexChecked) await checkAgainstIndex(environment.requirements, c.env.PACKAGE_INDEX_URL!);
  const envHash = environment.requirements.length ? await environmentHash(otterVersion, environment.requirements) : null;
  const sha256 = await sha256Hex(zip);
  await c.env.BLOBS.put(`autograders/${sha256}`, zip, { httpMetadata: { contentType: "application/zip" } });
  const updatedAt = nowIso();
  const changes = {
    autograderSha256: sha256,
    otterVersion,
    timeoutSeconds,
    updatedAt,
    environmentHash: envHash,
    environment: { requirements: environment.requirements, warnings: environment.warnings },
    // A new zip gets a new chance: jobs that waited for a working environment are queued with it (below).
    environmentStatus: null,
    environmentError: null,

    ...(isolation ? { isolation: isolation.data } : {}),
  };
  const [row] = await database(c.env.DB)
    .insert(assignments)
    .values({ course: c.req.param("course"), assignment: c.req.param("assignment"), ...changes })
    .onConflictDoUpdate({
      target: [assignments.course, assignments.assignment],
      set: {
        ...changes,
        // What a runner last said about preparing the environment stays only if the environment is the same.
        environmentPrepared: sql`CASE WHEN ${assignments.environmentHash} IS ${envHash} THEN ${assignments.environmentPrepared} END`,
        environmentPreparedAt: sql`CASE WHEN ${assignments.environmentHash} IS ${envHash} THEN ${assignments.environmentPreparedAt} END`,
        environmentLog: sql`CASE WHEN ${assignments.environmentHash} IS ${envHash} THEN ${assignments.environmentLog} END`,
      },
    })
    .returning();
  const resumed = (
    await Promise.all(allDispatchers(c.env).map((d) => d.resumeAssignment(row!.course, row!.assignment, { sha256, otterVersion })))
  ).reduce((a, b) => a + b, 0);
  return c.json({
    course: row!.course,
    assignment: row!.assignment,
    sha256,
    otter_version: otterVersion,
    timeout_seconds: timeoutSeconds,
    isolation: row!.isolation,
    // What the runners will grade in: the grading image of otter_version, plus these packages.
    environment: {
      hash: envHash,
      image: envHash ? `otter-edge grading image for otter-grader ${otterVersion} + ${environment.requirements.length} requirement(s), built on first use` : `otter-edge grading image for otter-grader ${otterVersion}`,
      requirements: environment.requirements,
      from_conda: environment.fromConda,
      python: environment.python,
      warnings: environment.warnings,
      index_checked: indexChecked,
    },
    // Jobs that were waiting because the previous zip's environment could not be installed.
    resumed_jobs: resumed,
  });
});

/** The assignment's current autograder.zip, as uploaded: for `otter-edge autograder build` and for staff. */
adminRoutes.get("/assignments/:course/:assignment/autograder", async (c) => {
  const { course, assignment } = c.req.param();
  assertCourse(c.get("principal"), course);
  const row = await database(c.env.DB).query.assignments.findFirst({ where: and(eq(assignments.course, course), eq(assignments.assignment, assignment)) });
  if (!row) throw new ApiError(404, "unknown_assignment", `Course "${course}" has no autograder for assignment "${assignment}".`);
  const zip = await c.env.BLOBS.get(`autograders/${row.autograderSha256}`);
  if (!zip) throw new ApiError(500, "autograder_missing", `The autograder.zip of "${course}/${assignment}" (${row.autograderSha256}) is not in storage.`);
  return new Response(zip.body, {
    headers: {
      "content-type": "application/zip",
      "content-disposition": `attachment; filename="${assignment.replace(/[^\w.-]/g, "_")}-autograder.zip"`,
      "x-otter-edge-sha256": row.autograderSha256,
      "x-otter-edge-otter-version": row.otterVersion,
    },
  });
});

adminRoutes.get("/stats", async (c) => {
  assertAdmin(c.get("principal"));
  const db = database(c.env.DB);
  const [queue, backlog] = await Promise.all([
    queueStats(c.env),
    db.select({ state: passbacks.state, n: count() }).from(passbacks).where(inArray(passbacks.state, ["pending", "retrying", "dead"])).groupBy(passbacks.state),
  ]);
  return c.json({
    queue: { pending: queue.pending, leased: queue.leased, waiting_for_environment: queue.waitingForEnvironment, oldest_enqueued_at: queue.oldestEnqueuedAt ? new Date(queue.oldestEnqueuedAt).toISOString() : null },
    runners: queue.runners,
    passback_backlog: Object.fromEntries(backlog.map((b) => [b.state, b.n])),
  });
});

adminRoutes.get("/passbacks", async (c) => {
  const state = c.req.query("state");
  if (state && !(PASSBACK_STATES as readonly string[]).includes(state)) {
    throw new ApiError(400, "invalid_state", `state must be one of ${PASSBACK_STATES.join(", ")}.`);
  }
  const db = database(c.env.DB);
  const principal = c.get("principal");
  const rows = await db
    .select()
    .from(passbacks)
    .where(
      and(
        state ? eq(passbacks.state, state as (typeof PASSBACK_STATES)[number]) : undefined,
        principal.role === "staff" ? eq(passbacks.course, principal.course) : undefined,
      ),
    )
    .orderBy(desc(passbacks.id))
    .limit(500);
  return c.json({ passbacks: rows.map(passbackView) });
});

/** Sends a grade again now: for a dead passback after the LMS or the config was fixed. */
adminRoutes.post("/passbacks/:id/retry", async (c) => c.json(await retryPassback(c.env, c.get("principal"), Number(c.req.param("id")))));

const NewToken = z.object({
  kind: z.enum(TOKEN_KINDS),
  name: z.string().trim().min(1).max(100),
  course: z.string().trim().min(1).max(100).optional(),
});

/** Issues a runner, staff or admin token; the secret is in this answer only. */
adminRoutes.post("/tokens", async (c) => {
  assertAdmin(c.get("principal"));
  const parsed = NewToken.safeParse(await c.req.json().catch(() => undefined));
  if (!parsed.success) throw new ApiError(400, "invalid_token_request", "Send {kind: runner|staff|admin, name, course (staff only)}.");
  if ((parsed.data.kind === "staff") !== Boolean(parsed.data.course)) {
    throw new ApiError(400, "invalid_token_request", "A staff token needs a course; runner and admin tokens take none.");
  }
  return c.json(await issueToken(database(c.env.DB), parsed.data), 201);
});

adminRoutes.get("/tokens", async (c) => {
  assertAdmin(c.get("principal"));
  const rows = await database(c.env.DB).select().from(apiTokens).orderBy(desc(apiTokens.createdAt));
  return c.json({ tokens: rows.map((t) => ({ id: t.id, kind: t.kind, name: t.name, course: t.course, created_at: t.createdAt, revoked_at: t.revokedAt })) });
});

/** Revokes a token at once; a runner connected with it is disconnected and its jobs requeued. */
adminRoutes.delete("/tokens/:id", async (c) => {
  assertAdmin(c.get("principal"));
  const row = await revokeToken(database(c.env.DB), c.req.param("id"));
  if (!row) throw new ApiError(404, "token_not_found", `No live token ${c.req.param("id")}.`);
  const disconnected = row.kind === "runner" ? (await Promise.all(allDispatchers(c.env).map((d) => d.disconnectToken(row.id)))).reduce((a, b) => a + b, 0) : 0;
  return c.json({ id: row.id, revoked_at: row.revokedAt, disconnected });
});
