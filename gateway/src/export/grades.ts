/**
 * Grade export: the SQL that reads graded submissions from D1 page by page, and the CSV they become.
 * Shared by the staff API (a Worker, D1 binding with bound parameters) and the `otter-edge grades
 * export` CLI (`wrangler d1 execute --command`, which takes no parameters: see {@link inlineSql}), so
 * both produce the same bytes. Plain TypeScript: no Worker or Node APIs here.
 */

import { GRADE_POLICIES as COUNTING_POLICIES, beatsSql } from "../submissions/grade-policy.js";

/** The old `dump_grades.py` columns, then the ones added later. */
export const GRADE_COLUMNS = ["userid", "grade", "section", "lab", "timestamp", "course", "assignment", "submission_id", "passback_state"] as const;

/**
 * Which submissions a student's row comes from: `all` graded submissions, or the one that counts
 * under `latest` or `best` (submissions/grade-policy.ts) per student and assignment. The other
 * filters apply first: `best` with `until` is the best grade before it.
 */
export const GRADE_POLICIES = ["all", ...COUNTING_POLICIES] as const;
export type GradePolicy = (typeof GRADE_POLICIES)[number];

export interface GradeExportFilters {
  course: string;
  section?: string;
  assignment?: string;
  /** UTC ISO-8601 at millisecond precision, as finished_at is stored: since inclusive, until exclusive. */
  since?: string;
  until?: string;
  policy: GradePolicy;
}

/** A filter the caller got wrong; the API answers 400 `{error: code, message}`. */
export class GradeExportError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const MAX_NAME_LENGTH = 200;

function name(field: string, value: string | undefined, required = false): string | undefined {
  if (value === undefined || value === "") {
    if (required) throw new GradeExportError(`missing_${field}`, `${field} is required.`);
    return undefined;
  }
  if (value.length > MAX_NAME_LENGTH || value.includes("\0")) {
    throw new GradeExportError(`invalid_${field}`, `${field} must be at most ${MAX_NAME_LENGTH} characters, without NUL.`);
  }
  return value;
}

const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

/**
 * An ISO-8601 date or date-time as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`, or null when it is none.
 * A date alone is midnight UTC, a time without an offset is UTC. Calendar fields are checked
 * (no 2026-02-31). Sub-millisecond digits round up, which keeps `>= since` and `< until` exact
 * against the millisecond timestamps stored.
 */
export function normalizeIsoTime(value: string): string | null {
  const m = ISO.exec(value.trim());
  if (!m) return null;
  const [year, month, day, hour = 0, minute = 0, second = 0] = m.slice(1, 7).map((v) => (v === undefined ? undefined : Number(v))) as number[];
  const fraction = m[7] ?? "";
  const offset = m[8];
  if (month! < 1 || month! > 12 || day! < 1 || day! > new Date(Date.UTC(year!, month!, 0)).getUTCDate()) return null;
  if (hour > 23 || minute > 59 || second > 59) return null;
  let ms = Number(fraction.slice(0, 3).padEnd(3, "0"));
  if (/[1-9]/.test(fraction.slice(3))) ms += 1;
  let offsetMinutes = 0;
  if (offset && offset.toUpperCase() !== "Z") {
    const digits = offset.slice(1).replace(":", "");
    const oh = Number(digits.slice(0, 2));
    const om = Number(digits.slice(2) || "0");
    if (oh > 23 || om > 59) return null;
    offsetMinutes = (offset.startsWith("-") ? -1 : 1) * (oh * 60 + om);
  }
  const time = Date.UTC(year!, month! - 1, day!, hour, minute, second, ms) - offsetMinutes * 60_000;
  const date = new Date(time);
  return Number.isNaN(time) || date.getUTCFullYear() < 1 || date.getUTCFullYear() > 9999 ? null : date.toISOString();
}

/**
 * Validates export parameters (query string or CLI options). Empty strings mean "no filter", so
 * `?section=&assignment=` is the whole course.
 */
export function parseGradeExportFilters(input: Record<string, string | undefined>): GradeExportFilters {
  const course = name("course", input.course, true)!;
  const section = name("section", input.section);
  const assignment = name("assignment", input.assignment);
  const time = (field: "since" | "until") => {
    const raw = input[field];
    if (raw === undefined || raw === "") return undefined;
    const normalized = normalizeIsoTime(raw);
    if (!normalized) throw new GradeExportError(`invalid_${field}`, `${field} must be an ISO-8601 date or date-time (e.g. 2026-03-01 or 2026-03-01T17:00:00Z), got "${raw.slice(0, 50)}".`);
    return normalized;
  };
  const since = time("since");
  const until = time("until");
  if (since && until && since >= until) throw new GradeExportError("invalid_range", `since (${since}) must be before until (${until}).`);
  const policy = (input.policy === undefined || input.policy === "" ? "all" : input.policy) as GradePolicy;
  if (!GRADE_POLICIES.includes(policy)) throw new GradeExportError("invalid_policy", `policy must be one of ${GRADE_POLICIES.join(", ")}.`);
  return { course, policy, ...(section ? { section } : {}), ...(assignment ? { assignment } : {}), ...(since ? { since } : {}), ...(until ? { until } : {}) };
}

/** One graded submission as the page query returns it. */
export interface GradeRow {
  /** The submission's rowid: the last part of the page key. */
  rid: number;
  id: string;
  user: string;
  course: string;
  section: string;
  assignment: string;
  score: number | null;
  finished_at: string | null;
  passback_state: string | null;
}

/** Where the next page starts: after this (assignment, user, rowid). */
export type PageCursor = Pick<GradeRow, "assignment" | "user" | "rid">;

export interface SqlQuery {
  /** SQLite with numbered parameters `?1`, `?2`, … */
  sql: string;
  params: Array<string | number>;
}

/**
 * One page of the export, in a stable order: assignment, student, then rowid (submission order).
 * Keyset pagination on that key rides the `submissions_by_student` index (course, assignment, user,
 * rowid), so each page reads about `limit` rows however large the course is. Under `latest` and
 * `best` a row is kept when no other submission of the same student and assignment that passes the
 * same filters beats it (a lookup on the same index).
 */
export function gradesPageQuery(filters: GradeExportFilters, after: PageCursor | null, limit: number): SqlQuery {
  if (!Number.isInteger(limit) || limit < 1) throw new Error(`page size must be a positive integer, got ${limit}`);
  const params: Array<string | number> = [];
  const param = (value: string | number) => {
    params.push(value);
    return `?${params.length}`;
  };
  // Filters on one alias of submissions; the same parameters serve the outer query and the subquery.
  const filterParams = {
    course: param(filters.course),
    section: filters.section === undefined ? null : param(filters.section),
    assignment: filters.assignment === undefined ? null : param(filters.assignment),
    since: filters.since === undefined ? null : param(filters.since),
    until: filters.until === undefined ? null : param(filters.until),
  };
  const where = (a: string) =>
    [
      `${a}.course = ${filterParams.course}`,
      `${a}.status = 'graded'`,
      filterParams.section && `${a}.section = ${filterParams.section}`,
      filterParams.assignment && `${a}.assignment = ${filterParams.assignment}`,
      filterParams.since && `${a}.finished_at >= ${filterParams.since}`,
      filterParams.until && `${a}.finished_at < ${filterParams.until}`,
    ].filter(Boolean) as string[];

  const conditions = where("s");
  const beats = filters.policy === "all" ? null : beatsSql(filters.policy, "o", "s");
  if (beats) {
    conditions.push(
      `NOT EXISTS (SELECT 1 FROM submissions AS o WHERE ${where("o").join(" AND ")} AND o.assignment = s.assignment AND o.user = s.user AND ${beats})`,
    );
  }
  if (after) conditions.push(`(s.assignment, s.user, s.rowid) > (${param(after.assignment)}, ${param(after.user)}, ${param(after.rid)})`);
  const sql = [
    "SELECT s.rowid AS rid, s.id AS id, s.user AS user, s.course AS course, s.section AS section, s.assignment AS assignment,",
    "s.score AS score, s.finished_at AS finished_at, p.state AS passback_state",
    "FROM submissions AS s LEFT JOIN passbacks AS p ON p.submission_id = s.id",
    `WHERE ${conditions.join(" AND ")}`,
    "ORDER BY s.assignment, s.user, s.rowid",
    `LIMIT ${param(limit)}`,
  ].join(" ");
  return { sql, params };
}

/** A value as an SQLite literal: strings single-quoted with quotes doubled, integers as they are. */
export function sqlLiteral(value: string | number): string {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`not an integer: ${value}`);
    return String(value);
  }
  if (value.includes("\0")) throw new Error("NUL in an SQL string");
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * The query with its parameters written in as literals, for `wrangler d1 execute --command`, which
 * binds none. Parameters are only ever placed by {@link gradesPageQuery}, never inside literals.
 */
export function inlineSql(query: SqlQuery): string {
  return query.sql.replace(/\?(\d+)/g, (_, n: string) => {
    const value = query.params[Number(n) - 1];
    if (value === undefined) throw new Error(`no parameter ?${n}`);
    return sqlLiteral(value);
  });
}

/** RFC 4180: a field with a comma, a double quote, CR or LF is quoted, its quotes doubled. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/** One CSV record, CRLF-terminated (RFC 4180). */
export function csvRecord(fields: readonly string[]): string {
  return `${fields.map(csvField).join(",")}\r\n`;
}

/** The grade as the old export wrote it (Python's `str(float)`): `1.0`, `0.0`, `0.667`. */
export function formatGrade(score: number | null): string {
  if (score === null || score === undefined) return "";
  return Number.isInteger(score) ? score.toFixed(1) : String(score);
}

export const gradesCsvHeader = (): string => csvRecord(GRADE_COLUMNS);

export function gradeCsvRecord(row: GradeRow): string {
  return csvRecord([row.user, formatGrade(row.score), row.section, row.assignment, row.finished_at ?? "", row.course, row.assignment, row.id, row.passback_state ?? ""]);
}

/** Runs one page query: a D1 binding in the Worker, `wrangler d1 execute` in the CLI. */
export type PageRunner = (query: SqlQuery) => Promise<GradeRow[]>;

export const API_PAGE_SIZE = 1000;

/**
 * The CSV, one string per page: the first is the header with the first page's records, each next
 * one is queried only when the consumer asks for it. At most one page is held at a time.
 */
export async function* gradesCsvPages(run: PageRunner, filters: GradeExportFilters, pageSize = API_PAGE_SIZE): AsyncGenerator<string, void, undefined> {
  let after: PageCursor | null = null;
  let prefix = gradesCsvHeader();
  for (;;) {
    const rows = await run(gradesPageQuery(filters, after, pageSize));
    let chunk = prefix;
    prefix = "";
    for (const row of rows) chunk += gradeCsvRecord(row);
    if (chunk) yield chunk;
    if (rows.length < pageSize) return;
    const last = rows[rows.length - 1]!;
    after = { assignment: last.assignment, user: last.user, rid: last.rid };
  }
}

/** `grades-<course>[-<section>][-<assignment>][-<policy>].csv`, reduced to safe characters. */
export function gradesCsvFilename(filters: GradeExportFilters): string {
  const parts = [filters.course, filters.section && `s${filters.section}`, filters.assignment, filters.policy !== "all" && filters.policy].filter(Boolean) as string[];
  const safe = parts.map((p) => p.replace(/[^A-Za-z0-9._+-]+/g, "_")).join("-");
  return `grades-${safe}.csv`;
}
