import { and, eq } from "drizzle-orm";
import { parseTokenList } from "../auth/tokens.js";
import type { Database } from "../db/client.js";
import { courseSections, lti13Links, ltiLinks, sectionAssignments } from "../db/schema.js";
import type { Env } from "../env.js";
import { type Platform, findPlatform } from "../lti13/platforms.js";

export interface PassbackTarget {
  url: string;
  sourcedId: string;
  consumerKey: string;
  secret: string;
  source: "launch" | "config";
}

/** The consumer secret for a key from LTI_CONSUMERS. */
export function consumerSecret(env: Env, key: string): string | null {
  return parseTokenList(env.LTI_CONSUMERS).find((c) => c.name === key)?.token ?? null;
}

/**
 * Where a student's grade goes. Their own verified LTI launch comes first; otherwise the URL and
 * sourcedId are built from the course config the way the old service built them for edX.
 */
/** The course config of one section's assignment: passback switch, policy, and where edX keeps it. */
export async function sectionAssignmentConfig(db: Database, row: { course: string; section: string; assignment: string }) {
  const [config] = await db
    .select({ postGrades: courseSections.postGrades, policy: sectionAssignments.policy, courseId: courseSections.lmsCourseId, blockId: sectionAssignments.lmsBlockId })
    .from(sectionAssignments)
    .innerJoin(courseSections, and(eq(courseSections.course, sectionAssignments.course), eq(courseSections.section, sectionAssignments.section)))
    .where(and(eq(sectionAssignments.course, row.course), eq(sectionAssignments.section, row.section), eq(sectionAssignments.assignment, row.assignment)))
    .limit(1);
  return config;
}
export type SectionAssignmentConfig = Awaited<ReturnType<typeof sectionAssignmentConfig>>;

export async function resolveTarget(
  env: Env,
  db: Database,
  row: { course: string; section: string; assignment: string; user: string },
  config: SectionAssignmentConfig,
): Promise<PassbackTarget | { error: string }> {
  const [link] = await db
    .select()
    .from(ltiLinks)
    .where(and(eq(ltiLinks.course, row.course), eq(ltiLinks.assignment, row.assignment), eq(ltiLinks.user, row.user)))
    .limit(1);
  if (link) {
    const secret = consumerSecret(env, link.consumerKey);
    if (!secret) return { error: `no secret for LTI consumer key "${link.consumerKey}" (LTI_CONSUMERS)` };
    return { url: link.outcomeServiceUrl, sourcedId: link.resultSourcedId, consumerKey: link.consumerKey, secret, source: "launch" };
  }
  if (!config?.courseId || !config.blockId) return { error: "no LTI launch from this student and no course_id/block id in the course config" };
  if (!env.EDX_URL) return { error: "EDX_URL is not set, so no outcome URL can be built from the course config" };
  const key = env.LTI_CONSUMER_KEY ?? parseTokenList(env.LTI_CONSUMERS)[0]?.name;
  const secret = key ? consumerSecret(env, key) : null;
  if (!key || !secret) return { error: "no LTI consumer key/secret configured (LTI_CONSUMERS, LTI_CONSUMER_KEY)" };
  const origin = env.EDX_URL.includes("://") ? env.EDX_URL.replace(/\/+$/, "") : `https://${env.EDX_URL}`;
  const host = new URL(origin).host;
  const { courseId, blockId } = config;
  return {
    url: `${origin}/courses/course-v1:${courseId}/xblock/block-v1:${courseId}+type@lti_consumer+block@${blockId}/handler_noauth/outcome_service_handler`,
    sourcedId: `course-v1%3A${courseId}:${host}-${blockId}:${row.user}`,
    consumerKey: key,
    secret,
    source: "config",
  };
}


export type Lti13Target = { link: typeof lti13Links.$inferSelect; platform: Platform } | { error: string };

/** The student's LTI 1.3 link (from their own launch) and its platform, if they launched over 1.3: it comes first. */
export async function resolveLti13Target(db: Database, row: { course: string; assignment: string; user: string }): Promise<Lti13Target | undefined> {
  const [link] = await db
    .select()
    .from(lti13Links)
    .where(and(eq(lti13Links.course, row.course), eq(lti13Links.assignment, row.assignment), eq(lti13Links.user, row.user)))
    .limit(1);
  if (!link) return undefined;
  const platform = await findPlatform(db, link.issuer, link.clientId);
  if (!platform) return { error: `the LTI 1.3 platform ${link.issuer} (client_id ${link.clientId}) of this student's launch is no longer registered` };
  return { link, platform };
}
