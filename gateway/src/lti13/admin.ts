import { Hono } from "hono";
import { and, eq } from "drizzle-orm";
import { type StaffEnv, assertAdmin, requireStaff } from "../auth/service-tokens.js";
import { database } from "../db/client.js";
import { lti13Platforms } from "../db/schema.js";
import { ApiError } from "../errors.js";
import { PlatformRegistration, platformView, registerPlatform } from "./platforms.js";

/** `/api/v1/admin/lti13/platforms`: LTI 1.3 platform registrations (admin tokens only). */
export const lti13AdminRoutes = new Hono<StaffEnv>();
lti13AdminRoutes.use("*", requireStaff);
lti13AdminRoutes.use("*", async (c, next) => {
  assertAdmin(c.get("principal"));
  await next();
});

lti13AdminRoutes.put("/platforms", async (c) => {
  const parsed = PlatformRegistration.safeParse(await c.req.json().catch(() => undefined));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, "invalid_platform", `LTI 1.3 platform: ${issue?.path.join(".") || "body"}: ${issue?.message}.`);
  }
  return c.json(platformView(await registerPlatform(database(c.env.DB), parsed.data)));
});

lti13AdminRoutes.get("/platforms", async (c) => {
  const rows = await database(c.env.DB).select().from(lti13Platforms).orderBy(lti13Platforms.issuer, lti13Platforms.clientId);
  return c.json({ platforms: rows.map(platformView) });
});

lti13AdminRoutes.delete("/platforms", async (c) => {
  const issuer = c.req.query("issuer");
  const clientId = c.req.query("client_id");
  if (!issuer || !clientId) throw new ApiError(400, "invalid_platform", "Name the platform with ?issuer=…&client_id=….");
  const removed = await database(c.env.DB)
    .delete(lti13Platforms)
    .where(and(eq(lti13Platforms.issuer, issuer), eq(lti13Platforms.clientId, clientId)))
    .returning();
  if (removed.length === 0) throw new ApiError(404, "unknown_platform", `No LTI 1.3 platform is registered for issuer "${issuer}" and client_id "${clientId}".`);
  return c.json({ removed: platformView(removed[0]!) });
});
