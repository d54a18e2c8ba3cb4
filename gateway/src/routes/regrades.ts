import { Hono } from "hono";
import { and, desc, eq } from "drizzle-orm";
import { type StaffEnv, assertCourse } from "../auth/service-tokens.js";
import { database } from "../db/client.js";
import { regrades } from "../db/schema.js";
import { ApiError } from "../errors.js";
import { RegradeRequest, cancelRegrade, startRegrade } from "../regrade/start.js";
import { type RegradeRow, regradeView } from "../regrade/view.js";
import { log } from "../log.js";

/** Staff regrades (mounted inside the staff API, behind its token check). */
export const regradeRoutes = new Hono<StaffEnv>();

async function findRegrade(c: { env: StaffEnv["Bindings"]; get: (key: "principal") => StaffEnv["Variables"]["principal"] }, rawId: string): Promise<RegradeRow> {
  const id = Number(rawId);
  const [row] = Number.isSafeInteger(id) && id > 0 ? await database(c.env.DB).select().from(regrades).where(eq(regrades.id, id)).limit(1) : [];
  if (!row) throw new ApiError(404, "regrade_not_found", `No regrade ${rawId}.`);
  assertCourse(c.get("principal"), row.course);
  return row;
}

regradeRoutes.post("/courses/:course/assignments/:assignment/regrades", async (c) => {
  const { course, assignment } = c.req.param();
  assertCourse(c.get("principal"), course);
  const body = await c.req.json().catch(() => {
    throw new ApiError(400, "invalid_json", "The request body must be a JSON object (it may be {}).");
  });
  const parsed = RegradeRequest.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, "invalid_regrade_request", `Regrade request: ${issue?.path.join(".") || "body"}: ${issue?.message}.`);
  }
  const regrade = await startRegrade(c.env, c.get("principal"), course, assignment, parsed.data);
  log.info("regrade started", { regradeId: regrade.id, course, assignment, total: regrade.total, dryRun: regrade.dryRun });
  return c.json(await regradeView(database(c.env.DB), regrade), 202, { location: `/api/v1/staff/regrades/${regrade.id}` });
});

regradeRoutes.get("/courses/:course/regrades", async (c) => {
  const course = c.req.param("course");
  assertCourse(c.get("principal"), course);
  const assignment = c.req.query("assignment");
  const rows = await database(c.env.DB)
    .select()
    .from(regrades)
    .where(and(eq(regrades.course, course), assignment ? eq(regrades.assignment, assignment) : undefined))
    .orderBy(desc(regrades.id))
    .limit(50);
  return c.json({ regrades: rows.map((r) => ({ id: r.id, assignment: r.assignment, state: r.state, dry_run: r.dryRun, total: r.total, created_at: r.createdAt, finished_at: r.finishedAt })) });
});

regradeRoutes.get("/regrades/:id", async (c) => {
  const regrade = await findRegrade(c, c.req.param("id"));
  return c.json(await regradeView(database(c.env.DB), regrade));
});

regradeRoutes.post("/regrades/:id/cancel", async (c) => {
  const regrade = await findRegrade(c, c.req.param("id"));
  if (regrade.state !== "running") throw new ApiError(409, "regrade_not_running", `Regrade ${regrade.id} is ${regrade.state}.`);
  await cancelRegrade(c.env, regrade.id, `cancelled by ${c.get("principal").name}`);
  return c.json(await regradeView(database(c.env.DB), (await findRegrade(c, c.req.param("id")))));
});
