import { index, integer, primaryKey, real, sqliteTable, text } from "drizzle-orm/sqlite-core";
import { GRADE_POLICIES } from "../submissions/grade-policy.js";

/** All timestamps are UTC ISO-8601 strings (`new Date().toISOString()`), so staff read them as they are. */

/** A course section, as in the old service's config: course → section → {course_id, assignments}. */
export const courseSections = sqliteTable(
  "course_sections",
  {
    course: text("course").notNull(),
    section: text("section").notNull(),
    /** edX course id (e.g. `BerkeleyX+Data8.1x+3T2020`), used to build the LTI outcome URL as a fallback. */
    lmsCourseId: text("lms_course_id"),
    /** The old service's POST_GRADE: when false, grades are recorded but not sent to the LMS. */
    postGrades: integer("post_grades", { mode: "boolean" }).notNull().default(true),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.course, t.section] })],
);

/** Which assignments a section accepts, with the LMS block that receives its grades. */
export const sectionAssignments = sqliteTable(
  "section_assignments",
  {
    course: text("course").notNull(),
    section: text("section").notNull(),
    assignment: text("assignment").notNull(),
    lmsBlockId: text("lms_block_id"),
    /** Which grade the LMS ends with: the latest submission's (default) or the best. */
    policy: text("policy", { enum: GRADE_POLICIES }).notNull().default("latest"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.course, t.section, t.assignment] })],
);

/** The grader of an assignment: its autograder.zip (in R2 by SHA-256) and the otter-grader version it needs. */
export const assignments = sqliteTable(
  "assignments",
  {
    course: text("course").notNull(),
    assignment: text("assignment").notNull(),
    autograderSha256: text("autograder_sha256").notNull(),
    otterVersion: text("otter_version").notNull(),
    timeoutSeconds: integer("timeout_seconds").notNull().default(600),
    /** Where the tests run: "kernel" (exactly otter) or "grader" (tamper-resistant); see shared Isolation. */
    isolation: text("isolation", { enum: ["kernel", "grader"] }).notNull().default("kernel"),
    /** Content address of the environment the zip asks for (shared environmentHash); null: the grading image as it is. */
    environmentHash: text("environment_hash"),
    /** The environment's pip requirements and upload warnings, JSON (shown to staff). */
    environment: text("environment", { mode: "json" }).$type<{ requirements: string[]; warnings: string[] }>(),
    /** "failed" when a runner could not install the environment (jobs wait for a new zip); null otherwise. */
    environmentStatus: text("environment_status", { enum: ["failed"] }),
    /** pip's reason for the failure, shown to staff. */
    environmentError: text("environment_error"),
    /** How the last runner that prepared the environment did it ("built on runner r1 in 41.2 s"), and when. */
    environmentPrepared: text("environment_prepared"),
    environmentPreparedAt: text("environment_prepared_at"),
    /** The end of pip's log of that build, shown to staff. */
    environmentLog: text("environment_log"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.course, t.assignment] })],
);

export const SUBMISSION_STATUSES = ["queued", "leased", "graded", "failed"] as const;
export type SubmissionStatus = (typeof SUBMISSION_STATUSES)[number];

export const submissions = sqliteTable(
  "submissions",
  {
    id: text("id").primaryKey(),
    user: text("user").notNull(),
    course: text("course").notNull(),
    section: text("section").notNull(),
    assignment: text("assignment").notNull(),
    notebookSha256: text("notebook_sha256").notNull(),
    notebookBytes: integer("notebook_bytes").notNull(),
    autograderSha256: text("autograder_sha256").notNull(),
    status: text("status", { enum: SUBMISSION_STATUSES }).notNull(),
    /** How many times the job was leased to a runner. */
    attempts: integer("attempts").notNull().default(0),
    runner: text("runner"),
    /** Lease token of the attempt whose grade was recorded: the guard that makes recording idempotent. */
    gradedToken: text("graded_token"),
    verdict: text("verdict"),
    score: real("score"),
    points: real("points"),
    maxPoints: real("max_points"),
    message: text("message"),
    createdAt: text("created_at").notNull(),
    leasedAt: text("leased_at"),
    finishedAt: text("finished_at"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [
    index("submissions_by_student").on(t.course, t.assignment, t.user),
    index("submissions_by_status").on(t.status, t.createdAt),
  ],
);

export const testResults = sqliteTable(
  "test_results",
  {
    submissionId: text("submission_id").notNull(),
    name: text("name").notNull(),
    score: real("score").notNull(),
    maxScore: real("max_score").notNull(),
    visibility: text("visibility").notNull(),
    output: text("output").notNull(),
    /** Why this test ran in the student's kernel although the assignment runs tests in the grader (null: it did not). */
    kernelReason: text("kernel_reason"),
  },
  (t) => [primaryKey({ columns: [t.submissionId, t.name] })],
);

/** Every state change of a submission, so staff can answer "what happened to my submission?". */
export const submissionEvents = sqliteTable(
  "submission_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    submissionId: text("submission_id").notNull(),
    at: text("at").notNull(),
    state: text("state").notNull(),
    detail: text("detail").notNull().default(""),
  },
  (t) => [index("submission_events_by_submission").on(t.submissionId, t.id)],
);

/**
 * Where a student's grade for an assignment goes, taken from their own verified LTI 1.1 launch.
 * Preferred over the URL built from the course config.
 */
export const ltiLinks = sqliteTable(
  "lti_links",
  {
    course: text("course").notNull(),
    assignment: text("assignment").notNull(),
    user: text("user").notNull(),
    consumerKey: text("consumer_key").notNull(),
    outcomeServiceUrl: text("outcome_service_url").notNull(),
    resultSourcedId: text("result_sourcedid").notNull(),
    resourceLinkId: text("resource_link_id"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.course, t.assignment, t.user] })],
);

/** Launch nonces seen inside the timestamp window, so a replayed launch is refused. */
export const ltiNonces = sqliteTable(
  "lti_nonces",
  {
    consumerKey: text("consumer_key").notNull(),
    nonce: text("nonce").notNull(),
    timestamp: integer("timestamp").notNull(),
  },
  (t) => [primaryKey({ columns: [t.consumerKey, t.nonce] }), index("lti_nonces_by_time").on(t.timestamp)],
);

/** An LTI 1.3 platform (LMS) this gateway is registered with: one row per issuer and client_id. */
export const lti13Platforms = sqliteTable(
  "lti13_platforms",
  {
    issuer: text("issuer").notNull(),
    clientId: text("client_id").notNull(),
    /** The platform's OIDC authorization endpoint, where a login is sent on with state and nonce. */
    authUrl: text("auth_url").notNull(),
    /** Its OAuth 2 token endpoint (client_credentials with a JWT client assertion) for AGS. */
    tokenUrl: text("token_url").notNull(),
    jwksUrl: text("jwks_url").notNull(),
    /** Deployment ids a launch may carry (JSON array); a launch from another deployment is refused. */
    deploymentIds: text("deployment_ids", { mode: "json" }).$type<string[]>().notNull(),
    /** The platform's JWKS as last fetched (JSON), so launches need no fetch until an unknown kid. */
    jwks: text("jwks"),
    jwksFetchedAt: integer("jwks_fetched_at"),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.issuer, t.clientId] })],
);

/** OIDC logins in flight: state and nonce, single use, kept a few minutes. */
export const lti13Logins = sqliteTable(
  "lti13_logins",
  {
    state: text("state").primaryKey(),
    nonce: text("nonce").notNull(),
    issuer: text("issuer").notNull(),
    clientId: text("client_id").notNull(),
    createdAtMs: integer("created_at_ms").notNull(),
  },
  (t) => [index("lti13_logins_by_time").on(t.createdAtMs)],
);

/** Where a student's grade goes over LTI 1.3 AGS, from their own verified launch; preferred over LTI 1.1. */
export const lti13Links = sqliteTable(
  "lti13_links",
  {
    course: text("course").notNull(),
    assignment: text("assignment").notNull(),
    user: text("user").notNull(),
    issuer: text("issuer").notNull(),
    clientId: text("client_id").notNull(),
    deploymentId: text("deployment_id").notNull(),
    /** The platform's id of the student: AGS's userId. */
    sub: text("sub").notNull(),
    lineitem: text("lineitem").notNull(),
    resourceLinkId: text("resource_link_id"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.course, t.assignment, t.user] })],
);

/** AGS access tokens, per platform and scopes, kept until shortly before they expire. */
export const lti13Tokens = sqliteTable(
  "lti13_tokens",
  {
    issuer: text("issuer").notNull(),
    clientId: text("client_id").notNull(),
    scope: text("scope").notNull(),
    accessToken: text("access_token").notNull(),
    expiresAtMs: integer("expires_at_ms").notNull(),
  },
  (t) => [primaryKey({ columns: [t.issuer, t.clientId, t.scope] })],
);

export const PASSBACK_STATES = ["pending", "retrying", "delivered", "dead", "superseded", "disabled"] as const;
export type PassbackState = (typeof PASSBACK_STATES)[number];

/**
 * The outbox: one row per graded submission, written in the same D1 transaction as the grade, and
 * kept until the LMS acknowledges (`imsx_codeMajor` = success) or the retry window runs out.
 */
export const passbacks = sqliteTable(
  "passbacks",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    submissionId: text("submission_id").notNull().unique(),
    course: text("course").notNull(),
    section: text("section").notNull(),
    assignment: text("assignment").notNull(),
    user: text("user").notNull(),
    state: text("state", { enum: PASSBACK_STATES }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    /** Epoch milliseconds of the next try (pending/retrying only). */
    nextAttemptAt: integer("next_attempt_at"),
    /** The score sent in the last try. */
    postedScore: real("posted_score"),
    lastError: text("last_error"),
    createdAt: text("created_at").notNull(),
    deliveredAt: text("delivered_at"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [index("passbacks_due").on(t.state, t.nextAttemptAt), index("passbacks_by_student").on(t.course, t.assignment, t.user)],
);

/** Every try to post a grade, with what the LMS answered. */
export const passbackAttempts = sqliteTable(
  "passback_attempts",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    passbackId: integer("passback_id").notNull(),
    at: text("at").notNull(),
    messageId: text("message_id").notNull(),
    url: text("url").notNull(),
    score: real("score").notNull(),
    httpStatus: integer("http_status"),
    codeMajor: text("code_major"),
    description: text("description").notNull(),
    durationMs: integer("duration_ms").notNull(),
  },
  (t) => [index("passback_attempts_by_passback").on(t.passbackId, t.id)],
);

export const TOKEN_KINDS = ["runner", "staff", "admin"] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];

/**
 * Credentials of runners and staff. Only a SHA-256 of each token is kept: a leaked database does
 * not leak working tokens. A staff token is scoped to one course.
 */
export const apiTokens = sqliteTable(
  "api_tokens",
  {
    id: text("id").primaryKey(),
    kind: text("kind", { enum: TOKEN_KINDS }).notNull(),
    name: text("name").notNull(),
    course: text("course"),
    tokenSha256: text("token_sha256").notNull().unique(),
    createdAt: text("created_at").notNull(),
    revokedAt: text("revoked_at"),
  },
  (t) => [index("api_tokens_by_kind").on(t.kind, t.name)],
);

export const REGRADE_STATES = ["running", "finished", "cancelled"] as const;
export type RegradeState = (typeof REGRADE_STATES)[number];

/**
 * A staff request to grade existing submissions again with the assignment's current autograder
 * (one submission, one student, or the whole assignment). A dry run grades but changes nothing.
 */
export const regrades = sqliteTable(
  "regrades",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    course: text("course").notNull(),
    assignment: text("assignment").notNull(),
    /** The autograder the regrade grades with: the assignment's at the time the regrade was asked for. */
    autograderSha256: text("autograder_sha256").notNull(),
    dryRun: integer("dry_run", { mode: "boolean" }).notNull(),
    neverLower: integer("never_lower", { mode: "boolean" }).notNull(),
    onlyOutdated: integer("only_outdated", { mode: "boolean" }).notNull(),
    /** The scope as asked: null for the whole assignment. */
    scopeUser: text("scope_user"),
    scopeSubmissions: text("scope_submissions"),
    requestedBy: text("requested_by").notNull(),
    state: text("state", { enum: REGRADE_STATES }).notNull(),
    total: integer("total").notNull(),
    message: text("message"),
    createdAt: text("created_at").notNull(),
    finishedAt: text("finished_at"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [index("regrades_by_assignment").on(t.course, t.assignment, t.state)],
);

export const REGRADE_ITEM_STATES = ["queued", "leased", "graded", "failed", "cancelled"] as const;
/**
 * What a graded item did to its submission: `changed` / `unchanged` (applied), `kept_higher`
 * (never-lower refused a lower score), `would_change` / `would_stay` (dry run: nothing applied).
 */
export const REGRADE_OUTCOMES = ["changed", "unchanged", "kept_higher", "would_change", "would_stay"] as const;
export type RegradeOutcome = (typeof REGRADE_OUTCOMES)[number];

export const regradeItems = sqliteTable(
  "regrade_items",
  {
    regradeId: integer("regrade_id").notNull(),
    submissionId: text("submission_id").notNull(),
    user: text("user").notNull(),
    state: text("state", { enum: REGRADE_ITEM_STATES }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    /** The submission's score when the regrade was asked for (null if it had failed). */
    oldScore: real("old_score"),
    newScore: real("new_score"),
    newPoints: real("new_points"),
    newMaxPoints: real("new_max_points"),
    verdict: text("verdict"),
    outcome: text("outcome", { enum: REGRADE_OUTCOMES }),
    /** Lease token of the attempt whose grade was taken: makes recording idempotent, as for submissions. */
    gradedToken: text("graded_token"),
    message: text("message"),
    finishedAt: text("finished_at"),
    updatedAt: text("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.regradeId, t.submissionId] }), index("regrade_items_by_state").on(t.regradeId, t.state)],
);
