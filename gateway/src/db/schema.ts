import { index, integer, primaryKey, real, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** All timestamps are UTC ISO-8601 strings (`new Date().toISOString()`), so staff read them as they are. */

/** A course section, as in the old service's config: course → section → {course_id, assignments}. */
export const courseSections = sqliteTable(
  "course_sections",
  {
    course: text("course").notNull(),
    section: text("section").notNull(),
    /** edX course id (e.g. `BerkeleyX+Data8.1x+3T2020`), used to build the LTI outcome URL as a fallback. */
    lmsCourseId: text("lms_course_id"),
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
