import type { Context, MiddlewareHandler } from "hono";
import { database } from "../db/client.js";
import type { Env } from "../env.js";
import { ApiError, errorResponse } from "../errors.js";
import { ISSUED_TOKEN_PREFIX, findToken } from "./api-tokens.js";
import { bearerToken, tokensEqual } from "./tokens.js";
import { log } from "../log.js";

export type RunnerEnv = { Bindings: Env; Variables: { runner: string; runnerTokenId: string } };

/** Who is calling the staff/admin API: an admin sees everything, staff one course. */
export type Principal = { role: "admin"; name: string } | { role: "staff"; name: string; course: string };
export type StaffEnv = { Bindings: Env; Variables: { principal: Principal } };

function refuse(c: Context, code: string, message: string) {
  log.warn("credential refused", { path: c.req.path, error: code });
  return errorResponse(c, new ApiError(401, code, message));
}

/** Runners present `Authorization: Bearer <runner token>`, issued with `otter-edge tokens create runner NAME`. */
export const requireRunner: MiddlewareHandler<RunnerEnv> = async (c, next) => {
  const presented = bearerToken(c.req.header("authorization"));
  const token = presented ? await findToken(database(c.env.DB), presented) : null;
  if (!token || token.kind !== "runner") return refuse(c, "invalid_runner_token", "A valid runner token is required.");
  c.set("runner", token.name);
  c.set("runnerTokenId", token.id);
  return next();
};

/**
 * The staff principal behind a bearer token, or null when the token is none of ours. `ADMIN_TOKEN`
 * (a Worker secret) is the root credential that issues all the others.
 */
export async function staffPrincipal(env: Env, presented: string | null): Promise<Principal | null> {
  if (!presented) return null;
  if (env.ADMIN_TOKEN && (await tokensEqual(presented, env.ADMIN_TOKEN))) return { role: "admin", name: "root" };
  // Issued tokens all start with "oe_": a student's hub token costs no D1 lookup here.
  if (!presented.startsWith(ISSUED_TOKEN_PREFIX)) return null;
  const token = await findToken(database(env.DB), presented);
  if (token?.kind === "admin") return { role: "admin", name: token.name };
  if (token?.kind === "staff" && token.course) return { role: "staff", name: token.name, course: token.course };
  return null;
}

export const requireStaff: MiddlewareHandler<StaffEnv> = async (c, next) => {
  const principal = await staffPrincipal(c.env, bearerToken(c.req.header("authorization")));
  if (!principal) return refuse(c, "invalid_staff_token", "A valid staff or admin token is required.");
  c.set("principal", principal);
  return next();
};

/** Staff act only on their own course. */
export function assertCourse(principal: Principal, course: string): void {
  if (principal.role === "staff" && principal.course !== course) {
    throw new ApiError(403, "forbidden_course", `This staff token is for course "${principal.course}", not "${course}".`);
  }
}

export function assertAdmin(principal: Principal): void {
  if (principal.role !== "admin") throw new ApiError(403, "admin_only", "Only an admin token may do this.");
}
