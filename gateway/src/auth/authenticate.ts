import type { Context, MiddlewareHandler } from "hono";
import type { Env } from "../env.js";
import { ApiError, errorResponse } from "../errors.js";
import { hubUserForToken } from "./hub.js";
import { type Principal, staffPrincipal } from "./service-tokens.js";
import { sessionUser } from "./session.js";
import { bearerToken, findTokenOwner } from "./tokens.js";
import { log } from "../log.js";

/** A verified student. `via` names the credential that proved it, for the logs. */
export interface Identity {
  user: string;
  via: string;
}

export type AppEnv = { Bindings: Env; Variables: { identity: Identity; principal?: Principal } };

/**
 * One way of proving who a student is. Returns the identity; null when the request carries no
 * credential of this kind; "invalid" when it carries one this authenticator does not accept.
 */
export interface Authenticator {
  name: string;
  configured(env: Env): boolean;
  authenticate(c: Context<AppEnv>): Promise<Identity | null | "invalid">;
}

/** Local-development tokens from `DEV_USER_TOKENS` (`user:token,…`). Leave unset in production. */
export const devTokenAuthenticator: Authenticator = {
  name: "dev-token",
  configured: (env) => Boolean(env.DEV_USER_TOKENS),
  async authenticate(c) {
    const token = bearerToken(c.req.header("authorization"));
    if (!token) return null;
    const user = await findTokenOwner(c.env.DEV_USER_TOKENS, token);
    return user ? { user, via: this.name } : "invalid";
  },
};

/** A JupyterHub API token (`Authorization: token <t>`), vouched for by the hub itself. */
export const hubTokenAuthenticator: Authenticator = {
  name: "hub-token",
  configured: (env) => Boolean(env.HUB_API_URL),
  async authenticate(c) {
    const token = bearerToken(c.req.header("authorization"));
    if (!token) return null;
    const verdict = await hubUserForToken(c.env, token);
    return "user" in verdict ? { user: verdict.user, via: this.name } : "invalid";
  },
};

/** The gateway's session cookie, set after the student logged in through hub OAuth. */
export const sessionAuthenticator: Authenticator = {
  name: "hub-session",
  configured: (env) => Boolean(env.SESSION_SECRET && env.HUB_API_URL),
  async authenticate(c) {
    const user = await sessionUser(c);
    return user === null || user === "invalid" ? user : { user, via: this.name };
  },
};

export const authenticators: Authenticator[] = [devTokenAuthenticator, hubTokenAuthenticator, sessionAuthenticator];

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
      let refused = false;
      for (const authenticator of active) {
        const identity = await authenticator.authenticate(c);
        if (identity === "invalid") refused = true;
        else if (identity) {
          c.set("identity", identity);
          return next();
        }
      }
      if (refused) throw new ApiError(401, "invalid_credentials", "The credential sent is not valid (unknown, revoked or expired); sign in again.");
      throw new ApiError(401, "unauthenticated", "Sign in first: open /auth/login, or send your JupyterHub token in the Authorization header.", {
        "WWW-Authenticate": 'Bearer realm="otter-edge"',
      });
    } catch (err) {
      if (err instanceof ApiError) {
        log.warn("authentication refused", { path: c.req.path, error: err.code });
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
