import { Hono } from "hono";
import { and, eq, lt, sql } from "drizzle-orm";
import { z } from "zod";
import { database, nowIso } from "../db/client.js";
import { ltiLinks, ltiNonces, sectionAssignments } from "../db/schema.js";
import { type Env, intSetting } from "../env.js";
import { ApiError } from "../errors.js";
import { consumerSecret } from "../passback/target.js";
import { formSignatureValid } from "./oauth.js";
import { log } from "../log.js";

/** The launch fields we rely on; the LMS sends many more, all of which are signed and kept in the check. */
const LaunchParams = z.object({
  oauth_consumer_key: z.string().min(1),
  oauth_signature_method: z.literal("HMAC-SHA1"),
  oauth_timestamp: z.string().regex(/^\d+$/),
  oauth_nonce: z.string().min(1).max(200),
  oauth_signature: z.string().min(1),
  oauth_version: z.literal("1.0").optional(),
  lti_message_type: z.literal("basic-lti-launch-request"),
  lti_version: z.string().min(1),
  resource_link_id: z.string().min(1).max(500),
  user_id: z.string().min(1).max(200),
  lis_outcome_service_url: z.url().optional(),
  lis_result_sourcedid: z.string().min(1).max(1000).optional(),
  custom_otter_course: z.string().optional(),
  custom_otter_section: z.string().optional(),
  custom_otter_assignment: z.string().optional(),
});

/**
 * `POST /lti/launch`: a student's LTI 1.1 launch from the LMS. Once its OAuth signature, timestamp
 * and nonce check out, the launch's outcome URL and result sourcedId become where that student's
 * grades for the assignment are posted.
 */
export const ltiRoutes = new Hono<{ Bindings: Env }>();

ltiRoutes.post("/launch", async (c) => {
  const form = await c.req.parseBody({ all: false }).catch(() => {
    throw new ApiError(400, "invalid_launch", "An LTI launch is a form POST (application/x-www-form-urlencoded).");
  });
  const raw = Object.fromEntries(Object.entries(form).filter((e): e is [string, string] => typeof e[1] === "string"));
  const parsed = LaunchParams.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, "invalid_launch", `LTI launch parameter ${issue?.path.join(".")}: ${issue?.message}.`);
  }
  const p = parsed.data;
  const secret = consumerSecret(c.env, p.oauth_consumer_key);
  if (!secret) throw new ApiError(401, "unknown_consumer", "The LTI consumer key is not known to this gateway.");

  const window = intSetting(c.env.LTI_TIMESTAMP_WINDOW_S, 300);
  const now = Math.floor(Date.now() / 1000);
  const timestamp = Number(p.oauth_timestamp);
  if (Math.abs(now - timestamp) > window) throw new ApiError(401, "stale_timestamp", `The launch's oauth_timestamp is more than ${window} s from now.`);
  if (!(await formSignatureValid({ url: c.req.url, method: "POST", params: raw, secret }))) {
    throw new ApiError(401, "invalid_signature", "The launch's OAuth signature does not verify.");
  }
  const db = database(c.env.DB);
  // A nonce may be used once inside the window; the primary key makes a replay fail to insert.
  const inserted = await db.insert(ltiNonces).values({ consumerKey: p.oauth_consumer_key, nonce: p.oauth_nonce, timestamp }).onConflictDoNothing().returning();
  if (inserted.length === 0) throw new ApiError(401, "replayed_nonce", "This launch was already used.");
  c.executionCtx.waitUntil(db.delete(ltiNonces).where(lt(ltiNonces.timestamp, now - 2 * window)).then(() => undefined));

  const assignment = await findLaunchAssignment(c.env, { course: p.custom_otter_course, assignment: p.custom_otter_assignment, resourceLinkId: p.resource_link_id });
  if (!assignment) throw new ApiError(404, "unknown_assignment", `No assignment is configured for LTI resource link "${p.resource_link_id}".`);
  if (!p.lis_outcome_service_url || !p.lis_result_sourcedid) {
    // Not a graded launch (a staff view, or grading off in the LMS): nothing to link.
    return c.html(launchPage(`Opened ${assignment.assignment}. This launch carries no gradebook link, so no grade will be posted for it.`));
  }
  const row = {
    course: assignment.course,
    assignment: assignment.assignment,
    user: p.user_id,
    consumerKey: p.oauth_consumer_key,
    outcomeServiceUrl: p.lis_outcome_service_url,
    resultSourcedId: p.lis_result_sourcedid,
    resourceLinkId: p.resource_link_id,
    updatedAt: nowIso(),
  };
  await db
    .insert(ltiLinks)
    .values(row)
    .onConflictDoUpdate({ target: [ltiLinks.course, ltiLinks.assignment, ltiLinks.user], set: { consumerKey: row.consumerKey, outcomeServiceUrl: row.outcomeServiceUrl, resultSourcedId: row.resultSourcedId, resourceLinkId: row.resourceLinkId, updatedAt: row.updatedAt } });
  log.info("lti launch linked", { user: p.user_id, course: assignment.course, assignment: assignment.assignment });
  return c.html(launchPage(`You are linked: grades for ${assignment.assignment} will be posted to your course's gradebook.`));
});

/**
 * The assignment a launch (LTI 1.1 or 1.3) opens. Custom parameters otter_course and
 * otter_assignment name it outright; otherwise the resource link id ends with the configured block id.
 */
export async function findLaunchAssignment(env: Env, p: { course?: string; assignment?: string; resourceLinkId: string }) {
  const db = database(env.DB);
  if (p.course && p.assignment) {
    const [row] = await db
      .select()
      .from(sectionAssignments)
      .where(and(eq(sectionAssignments.course, p.course), eq(sectionAssignments.assignment, p.assignment)))
      .limit(1);
    return row;
  }
  // edX's resource_link_id is "<host>-<block id>".
  const [row] = await db
    .select()
    .from(sectionAssignments)
    .where(sql`${sectionAssignments.lmsBlockId} = ${p.resourceLinkId} OR ${p.resourceLinkId} LIKE '%-' || ${sectionAssignments.lmsBlockId}`)
    .limit(1);
  return row;
}

export function launchPage(message: string): string {
  const text = message.replace(/[<>&]/g, (ch) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;" })[ch]!);
  return `<!doctype html><html><head><meta charset="utf-8"><title>otter-edge</title></head><body><p>${text}</p></body></html>`;
}
