import type { MiddlewareHandler } from "hono";
import type { Env } from "../env.js";
import { ApiError, errorResponse } from "../errors.js";
import { bearerToken, findTokenOwner, tokensEqual } from "./tokens.js";

export type RunnerEnv = { Bindings: Env; Variables: { runner: string } };

/** Runners present `Authorization: Bearer <runner token>`; the token names the runner. */
export const requireRunner: MiddlewareHandler<RunnerEnv> = async (c, next) => {
  const token = bearerToken(c.req.header("authorization"));
  const runner = token ? await findTokenOwner(c.env.RUNNER_TOKENS, token) : null;
  if (!runner) {
    console.warn(JSON.stringify({ level: "warn", msg: "runner refused", path: c.req.path }));
    return errorResponse(c, new ApiError(401, "invalid_runner_token", "A valid runner token is required."));
  }
  c.set("runner", runner);
  return next();
};

/** The admin API (course config, autograder upload, stats) takes `ADMIN_TOKEN`; unset means closed. */
export const requireAdmin: MiddlewareHandler<{ Bindings: Env }> = async (c, next) => {
  const token = bearerToken(c.req.header("authorization"));
  if (!c.env.ADMIN_TOKEN || !token || !(await tokensEqual(token, c.env.ADMIN_TOKEN))) {
    console.warn(JSON.stringify({ level: "warn", msg: "admin refused", path: c.req.path }));
    return errorResponse(c, new ApiError(401, "invalid_admin_token", "A valid admin token is required."));
  }
  return next();
};
