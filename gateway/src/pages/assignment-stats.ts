import { queueStats } from "../dispatcher/queue-stats.js";
import type { Env } from "../env.js";
import { countingFirstSql } from "../submissions/grade-policy.js";

/**
 * What the staff page shows about one assignment, read from D1 in one batch plus the Dispatcher's
 * live view of runners. Scores and pass rates count each student's latest graded submission (the
 * default grade policy), so a student who resubmitted ten times counts once.
 */

// Each student's latest graded submission of the assignment (submissions/grade-policy.ts, like the export).
const LATEST_GRADED = `WITH latest AS (
  SELECT id, score FROM (
    SELECT s.id, s.score, ROW_NUMBER() OVER (PARTITION BY s.user ORDER BY ${countingFirstSql("latest", "s")}) AS rn
    FROM submissions AS s WHERE s.course = ?1 AND s.assignment = ?2 AND s.status = 'graded'
  ) WHERE rn = 1)`;

export const SCORE_BINS = 10;

export interface AssignmentStats {
  totals: { submissions: number; students: number; queued: number; grading: number; graded: number; failed: number };
  perDay: Array<{ day: string; n: number }>;
  /** Students per score bin: bin i holds scores in [i/10, (i+1)/10), the last also 1.0. */
  scoreBins: number[];
  tests: Array<{ name: string; n: number; full: number; mean: number }>;
  deadPassbacks: Array<{ id: number; submission_id: string; user: string; attempts: number; last_error: string | null; updated_at: string }>;
  recent: Array<{ id: string; user: string; status: string; verdict: string | null; score: number | null; created_at: string }>;
  queue: { pending: number; leased: number; waitingForEnvironment: number };
  /** What the assignment grades in: the zip's requirements on top of the grading image, and whether they could be installed. */
  environment: {
    otterVersion: string;
    hash: string | null;
    requirements: string[];
    warnings: string[];
    status: "failed" | null;
    error: string | null;
    /** How a runner last prepared it ("built on runner r1 in 41.2 s"), when, and the end of pip's log. */
    prepared: { summary: string; at: string; log: string } | null;
  };
  runners: Array<{ runner: string; capacity: number; holding: number; otterVersions: string[]; lastSeenAt: string | null }>;
}

/** Null when the course has no such assignment (no autograder uploaded). */
export async function assignmentStats(env: Env, course: string, assignment: string): Promise<AssignmentStats | null> {
  const bind = (sql: string) => env.DB.prepare(sql).bind(course, assignment);
  const [known, totals, perDay, bins, tests, dead, recent] = await env.DB.batch([
    bind(`SELECT otter_version, environment_hash, environment, environment_status, environment_error, environment_prepared, environment_prepared_at, environment_log
          FROM assignments WHERE course = ?1 AND assignment = ?2`),
    bind(`SELECT COUNT(*) AS submissions, COUNT(DISTINCT user) AS students,
            SUM(status = 'queued') AS queued, SUM(status = 'leased') AS grading,
            SUM(status = 'graded') AS graded, SUM(status = 'failed') AS failed
          FROM submissions WHERE course = ?1 AND assignment = ?2`),
    bind(`SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS n FROM submissions
          WHERE course = ?1 AND assignment = ?2 GROUP BY day ORDER BY day DESC LIMIT 60`),
    bind(`${LATEST_GRADED} SELECT MIN(CAST(COALESCE(score, 0) * ${SCORE_BINS} AS INTEGER), ${SCORE_BINS - 1}) AS bin, COUNT(*) AS n FROM latest GROUP BY bin`),
    // Tests worth no points (otter's "Public Tests" summary) have no pass rate.
    bind(`${LATEST_GRADED} SELECT t.name AS name, COUNT(*) AS n, SUM(t.score >= t.max_score) AS full, AVG(t.score / t.max_score) AS mean
          FROM latest JOIN test_results t ON t.submission_id = latest.id WHERE t.max_score > 0
          GROUP BY t.name ORDER BY CAST(SUM(t.score >= t.max_score) AS REAL) / COUNT(*), t.name`),
    bind(`SELECT id, submission_id, user, attempts, last_error, updated_at FROM passbacks
          WHERE course = ?1 AND assignment = ?2 AND state = 'dead' ORDER BY id DESC LIMIT 200`),
    bind(`SELECT id, user, status, verdict, score, created_at FROM submissions
          WHERE course = ?1 AND assignment = ?2 ORDER BY created_at DESC, rowid DESC LIMIT 25`),
  ]);
  const a = known!.results[0] as
    | {
        otter_version: string;
        environment_hash: string | null;
        environment: string | null;
        environment_status: "failed" | null;
        environment_error: string | null;
        environment_prepared: string | null;
        environment_prepared_at: string | null;
        environment_log: string | null;
      }
    | undefined;
  if (!a) return null;
  const spec = a.environment ? (JSON.parse(a.environment) as { requirements: string[]; warnings: string[] }) : { requirements: [], warnings: [] };
  const t = (totals!.results[0] ?? {}) as Record<string, number | null>;
  const scoreBins = Array.from({ length: SCORE_BINS }, () => 0);
  for (const b of bins!.results as Array<{ bin: number; n: number }>) scoreBins[b.bin] = b.n;
  const stats = await queueStats(env);
  return {
    totals: {
      submissions: t.submissions ?? 0,
      students: t.students ?? 0,
      queued: t.queued ?? 0,
      grading: t.grading ?? 0,
      graded: t.graded ?? 0,
      failed: t.failed ?? 0,
    },
    perDay: (perDay!.results as AssignmentStats["perDay"]).reverse(),
    scoreBins,
    tests: tests!.results as AssignmentStats["tests"],
    deadPassbacks: dead!.results as AssignmentStats["deadPassbacks"],
    recent: recent!.results as AssignmentStats["recent"],
    queue: { pending: stats.pending, leased: stats.leased, waitingForEnvironment: stats.waitingForEnvironment },
    environment: {
      otterVersion: a.otter_version,
      hash: a.environment_hash,
      ...spec,
      status: a.environment_status,
      error: a.environment_error,
      prepared: a.environment_prepared ? { summary: a.environment_prepared, at: a.environment_prepared_at ?? "", log: a.environment_log ?? "" } : null,
    },
    runners: stats.runners,
  };
}

/** The assignments a staff member may open: their course's, or every course's for an admin. */
export async function staffAssignments(env: Env, course: string | null) {
  const stmt = course
    ? env.DB.prepare(`SELECT a.course, a.assignment, (SELECT COUNT(*) FROM submissions s WHERE s.course = a.course AND s.assignment = a.assignment) AS n
                      FROM assignments a WHERE a.course = ?1 ORDER BY a.course, a.assignment`).bind(course)
    : env.DB.prepare(`SELECT a.course, a.assignment, (SELECT COUNT(*) FROM submissions s WHERE s.course = a.course AND s.assignment = a.assignment) AS n
                      FROM assignments a ORDER BY a.course, a.assignment LIMIT 500`);
  return (await stmt.all<{ course: string; assignment: string; n: number }>()).results;
}
