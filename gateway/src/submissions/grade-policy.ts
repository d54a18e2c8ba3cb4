/**
 * Which of a student's graded submissions of an assignment counts: the one place that says it, for
 * passback (what the LMS should end with), the grade export and the staff page.
 *
 * - `latest`: the newest submission (created_at; rowid, the insertion order, breaks ties between
 *   submissions made in the same millisecond).
 * - `best`: the highest score (a submission without one counts as below 0), ties to the newest.
 */
export const GRADE_POLICIES = ["latest", "best"] as const;
export type GradePolicy = (typeof GRADE_POLICIES)[number];

/** SQL ORDER BY terms, on the submissions alias `a`, that put the counting submission first. */
export function countingFirstSql(policy: GradePolicy, a: string): string {
  const newest = `${a}.created_at DESC, ${a}.rowid DESC`;
  return policy === "best" ? `coalesce(${a}.score, -1) DESC, ${newest}` : newest;
}

/** SQL condition: submission `o` comes before `s` (same student and assignment) in that order. */
export function beatsSql(policy: GradePolicy, o: string, s: string): string {
  const newer = `(${o}.created_at > ${s}.created_at OR (${o}.created_at = ${s}.created_at AND ${o}.rowid > ${s}.rowid))`;
  if (policy === "latest") return newer;
  const score = (a: string) => `coalesce(${a}.score, -1)`;
  return `(${score(o)} > ${score(s)} OR (${score(o)} = ${score(s)} AND ${newer}))`;
}
