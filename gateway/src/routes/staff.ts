import { Hono } from "hono";
import { type StaffEnv, assertCourse, requireStaff } from "../auth/service-tokens.js";
import { ApiError } from "../errors.js";
import { regradeRoutes } from "./regrades.js";
import { type GradeExportFilters, GradeExportError, type GradeRow, type PageRunner, API_PAGE_SIZE, gradesCsvFilename, gradesCsvPages, parseGradeExportFilters } from "../export/grades.js";
import { log } from "../log.js";

/** Course staff's API: a staff token of the course, or an admin token. */
export const staffRoutes = new Hono<StaffEnv>();

staffRoutes.use("*", requireStaff);

/** Runs the export's page queries on a D1 binding, with bound parameters. */
export function d1PageRunner(db: D1Database): PageRunner {
  return async (query) => (await db.prepare(query.sql).bind(...query.params).all<GradeRow>()).results;
}

/**
 * The course's grades as CSV, streamed: D1 is read a page at a time (keyset pagination), and the
 * next page only when the client has taken the previous one, so a large course is never held in memory.
 */
export async function gradesCsvResponse(db: D1Database, filters: GradeExportFilters, pageSize = API_PAGE_SIZE): Promise<Response> {
  const pages = gradesCsvPages(d1PageRunner(db), filters, pageSize);
  // The first page is read before answering: a failing query is then a 500 JSON error, not a cut-off file.
  const first = await pages.next();
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (first.done) controller.close();
        else controller.enqueue(encoder.encode(first.value));
      },
      async pull(controller) {
        try {
          const next = await pages.next();
          if (next.done) controller.close();
          else controller.enqueue(encoder.encode(next.value));
        } catch (err) {
          // Headers are gone: all that is left is to abort the body, so the client sees a broken download.
          log.error("grade export failed mid-stream", { course: filters.course, error: String(err) });
          controller.error(err);
        }
      },
      async cancel() {
        await pages.return(undefined);
      },
    },
    // One page ahead at most.
    { highWaterMark: 1 },
  );
  const filename = gradesCsvFilename(filters);
  return new Response(body, {
    headers: {
      "content-type": "text/csv; charset=utf-8",
      "content-disposition": `attachment; filename="${filename}"; filename*=UTF-8''${encodeURIComponent(filename)}`,
      "cache-control": "no-store",
    },
  });
}

staffRoutes.get("/courses/:course/grades.csv", async (c) => {
  const course = c.req.param("course");
  assertCourse(c.get("principal"), course);
  let filters: GradeExportFilters;
  try {
    const q = c.req.query();
    filters = parseGradeExportFilters({ course, section: q.section, assignment: q.assignment, since: q.since, until: q.until, policy: q.policy });
  } catch (err) {
    if (err instanceof GradeExportError) throw new ApiError(400, err.code, err.message);
    throw err;
  }
  return gradesCsvResponse(c.env.DB, filters);
});

staffRoutes.route("/", regradeRoutes);
