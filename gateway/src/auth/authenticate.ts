import type { Context, MiddlewareHandler } from "hono";
import type { Env } from "../env.js";
import { ApiError, errorResponse } from "../errors.js";
import { type Principal, staffPrincipal } from "./service-tokens.js";
import { bearerToken, findTokenOwner } from "./tokens.js";

/** A verified student. `via` names the credential that proved it, for the logs. */
export interface Identity {
  user: string;
  via: string;
}

export type AppEnv = { Bindings: Env; Variables: { identity: Identity; principal?: Principal } };

/**
 * One way of proving who a student is. Returns the identity, null when the request carries no
 * credential of this kind, or throws an ApiError when it carries one that is wrong.
 */
export interface Authenticator {
  name: string;
  configured(env: Env): boolean;
  authenticate(c: Context<AppEnv>): Promise<Identity | null>;
}

/**
 * Local-development tokens from `DEV_USER_TOKENS`. The JupyterHub token and hub-OAuth session
 * authenticators plug in beside this one (see `authenticators` below).
 */
export const devTokenAuthenticator: Authenticator = {
  name: "dev-token",
  configured: (env) => Boolean(env.DEV_USER_TOKENS),
  async authenticate(c) {
    const token = bearerToken(c.req.header("authorization"));
    if (!token) return null;
    const user = await findTokenOwner(c.env.DEV_USER_TOKENS, token);
    if (!user) throw new ApiError(401, "invalid_credentials", "The token in the Authorization header is not valid.");
    return { user, via: this.name };
  },
};

export const authenticators: Authenticator[] = [devTokenAuthenticator];

/**
 * Identity comes only from a verified credential: never from a Referer, a query string or a body
 * field. With no authenticator configured the gateway refuses everyone rather than defaulting open.
 */
export function authenticate(chain: Authenticator[] = authenticators): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const active = chain.filter((a) => a.configured(c.env));
    try {
      if (active.length === 0) {
        throw new ApiError(401, "authentication_not_configured", "This gateway has no way to verify students configured, so it accepts no submissions.");
      }
      for (const authenticator of active) {
        const identity = await authenticator.authenticate(c);
        if (identity) {
          c.set("identity", identity);
          return next();
        }
      }
      throw new ApiError(401, "unauthenticated", "Sign in first: send a valid token in the Authorization header.", {
        "WWW-Authenticate": 'Bearer realm="otter-edge"',
      });
    } catch (err) {
      if (err instanceof ApiError) {
        console.warn(JSON.stringify({ level: "warn", msg: "authentication refused", path: c.req.path, error: err.code }));
        return errorResponse(c, err);
      }
      throw err;
    }
  };
}

/** For pages staff read too: a staff or admin token sets `principal`; anything else must be a verified student. */
export function authenticateStudentOrStaff(): MiddlewareHandler<AppEnv> {
  const student = authenticate();
  return async (c, next) => {
    const principal = await staffPrincipal(c.env, bearerToken(c.req.header("authorization")));
    if (!principal) return student(c, next);
    c.set("principal", principal);
    return next();
  };
}
