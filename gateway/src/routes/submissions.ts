import { Hono } from "hono";
import { createFactory } from "hono/factory";
import { bodyLimit } from "hono/body-limit";
import { asc, eq } from "drizzle-orm";
import { type AppEnv, authenticate, authenticateStudentOrStaff } from "../auth/authenticate.js";
import { assertCourse } from "../auth/service-tokens.js";
import { database } from "../db/client.js";
import { passbacks, submissionEvents, submissions, testResults } from "../db/schema.js";
import { passbackView } from "../passback/view.js";
import { intSetting } from "../env.js";
import { ApiError, errorResponse } from "../errors.js";
import { acceptSubmission } from "../intake.js";

/**
 * Submission intake and status. Mounted at `/` and at `/services/otter_grade` (the path the hub's
 * proxy forwards), so links it hands out work on whichever origin the student used.
 */
const factory = createFactory<AppEnv>();

export function submissionRoutes(prefix: string) {
  const app = new Hono<AppEnv>();

  const submit = factory.createHandlers(
    // The cap is enforced while the body streams in, before anything is parsed.
    (c, next) =>
      bodyLimit({
        maxSize: intSetting(c.env.MAX_SUBMISSION_BYTES, 16 * 1024 * 1024),
        onError: (c) =>
          errorResponse(c, new ApiError(413, "payload_too_large", `The submission is larger than ${c.env.MAX_SUBMISSION_BYTES} bytes; clear large outputs and submit again.`)),
      })(c, next),
    authenticate(),
    async (c) => {
      const type = c.req.header("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        throw new ApiError(415, "unsupported_media_type", `Send the notebook as application/json, not "${type || "no content type"}".`);
      }
      const identity = c.get("identity");
      const { id } = await acceptSubmission(c.env, identity, await c.req.text(), [c.req.query("user"), c.req.header("x-otter-user")]);
      const statusUrl = new URL(`${prefix}/api/v1/submissions/${id}`, c.req.url).toString();
      console.log(JSON.stringify({ level: "info", msg: "submission accepted", id, user: identity.user }));
      return c.json({ id, status_url: statusUrl, message: "Your notebook was received and is queued for grading." }, 202);
    },
  );

  app.post("/api/v1/submissions", ...submit);

  app.get("/api/v1/submissions/:id", authenticateStudentOrStaff(), async (c) => {
    const db = database(c.env.DB);
    const id = c.req.param("id");
    const [rows, tests, events, passback] = await db.batch([
      db.select().from(submissions).where(eq(submissions.id, id)).limit(1),
      db.select().from(testResults).where(eq(testResults.submissionId, id)).orderBy(asc(testResults.name)),
      db.select().from(submissionEvents).where(eq(submissionEvents.submissionId, id)).orderBy(asc(submissionEvents.id)),
      db.select().from(passbacks).where(eq(passbacks.submissionId, id)).limit(1),
    ]);
    const row = rows[0];
    if (!row) throw new ApiError(404, "submission_not_found", `No submission ${id}.`);
    const principal = c.get("principal");
    if (principal) assertCourse(principal, row.course);
    else if (row.user !== c.get("identity").user) throw new ApiError(403, "forbidden", "This submission belongs to another student.");
    return c.json({
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
      // Hidden tests show students their score but never their output, as otter intends; staff see all.
      tests: tests.map((t) => ({
        name: t.name,
        score: t.score,
        max_score: t.maxScore,
        visibility: t.visibility,
        ...(t.visibility === "hidden" && !principal ? {} : { output: t.output }),
      })),
      events: events.map((e) => ({ at: e.at, state: e.state, detail: e.detail })),
      passback: passback[0] ? passbackView(passback[0]) : null,
    });
  });

  return { app, submit };
}
