import { Hono } from "hono";
import { createFactory } from "hono/factory";
import { bodyLimit } from "hono/body-limit";
import { type AppEnv, authenticate, authenticateStudentOrStaff } from "../auth/authenticate.js";
import { type Viewer, assertCanSee, readSubmission, submissionJson } from "../submissions/detail.js";
import { intSetting } from "../env.js";
import { ApiError, errorResponse } from "../errors.js";
import { acceptSubmission } from "../intake.js";
import { log } from "../log.js";

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
      // The student's live page (gateway/src/routes/pages.ts), on the same origin and prefix as this request.
      const pageUrl = new URL(`${prefix}/s/${id}`, c.req.url).toString();
      log.info("submission accepted", { id, user: identity.user });
      return c.json({ id, status_url: statusUrl, page_url: pageUrl, message: "Your notebook was received and is queued for grading." }, 202);
    },
  );

  app.post("/api/v1/submissions", ...submit);

  app.get("/api/v1/submissions/:id", authenticateStudentOrStaff(), async (c) => {
    const detail = await readSubmission(c.env.DB, c.req.param("id"));
    const principal = c.get("principal");
    const viewer: Viewer = principal ? { principal } : { identity: c.get("identity") };
    assertCanSee(viewer, detail);
    return c.json(submissionJson(viewer, detail));
  });

  return { app, submit };
}
