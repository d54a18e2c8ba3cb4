import type { Context } from "hono";
import { deleteCookie, getSignedCookie, setSignedCookie } from "hono/cookie";
import { and, eq, isNull } from "drizzle-orm";
import { sha256Hex } from "../autograder.js";
import { database } from "../db/client.js";
import { apiTokens } from "../db/schema.js";
import type { Env } from "../env.js";
import { ApiError } from "../errors.js";
import type { Authenticator } from "./authenticate.js";
import { findToken } from "./api-tokens.js";
import type { Principal } from "./service-tokens.js";
import { findTokenOwner, parseTokenList, tokensEqual } from "./tokens.js";

/**
 * Cookies for the HTML pages. A browser cannot send a bearer token when it follows a link, so:
 *
 * - Staff sign in once on /staff/login with their staff (or admin) token; the gateway answers with
 *   `oe_staff`, a cookie signed with SESSION_SECRET that names the token's id, never the token. Each
 *   request looks the token up again, so revoking it ends the page session at once, and the course
 *   scope is the token's own.
 * - Students normally have the hub OAuth session (`oe_session`, ./session.ts). For local stacks and
 *   tests only, /auth/dev-login exchanges a DEV_USER_TOKENS token for `oe_dev_session`; it exists only
 *   while DEV_USER_TOKENS and SESSION_SECRET are both set, and the cookie stops counting when the
 *   user leaves DEV_USER_TOKENS.
 */
export const STAFF_COOKIE = "oe_staff";
export const DEV_SESSION_COOKIE = "oe_dev_session";
const BROWSER_SESSION_SECONDS = 8 * 60 * 60;

// Lax: sent on top-level links (a TA opening a page from an email) but not on cross-site POSTs; the
// staff page's POSTs also check Origin. Secure: browsers still keep it on http://localhost.
const cookieOptions = { httpOnly: true, secure: true, sameSite: "Lax", path: "/", maxAge: BROWSER_SESSION_SECONDS } as const;

function sessionSecret(env: Env): string {
  if (!env.SESSION_SECRET) throw new ApiError(503, "sessions_not_configured", "This gateway has no SESSION_SECRET, so it cannot keep anyone signed in to its pages.");
  return env.SESSION_SECRET;
}

async function readSigned<T>(c: Context, env: Env, name: string): Promise<T | null> {
  if (!env.SESSION_SECRET) return null;
  const raw = await getSignedCookie(c, env.SESSION_SECRET, name);
  if (!raw) return null;
  try {
    const value = JSON.parse(raw) as T & { exp: number };
    return typeof value.exp === "number" && value.exp > Date.now() / 1000 ? value : null;
  } catch {
    return null;
  }
}

const expiry = () => Math.floor(Date.now() / 1000) + BROWSER_SESSION_SECONDS;

/** Fingerprint of the root ADMIN_TOKEN: rotating the secret ends root page sessions. */
async function rootFingerprint(adminToken: string): Promise<string> {
  return (await sha256Hex(new TextEncoder().encode(`oe_staff_root:${adminToken}`))).slice(0, 32);
}

type StaffCookie = { tid: string; fp?: string };

/** Exchanges a staff or admin token for the staff page cookie. 401 for anything else. */
export async function startStaffSession(c: Context, presented: string): Promise<Principal> {
  const env = c.env as Env;
  const secret = sessionSecret(env);
  let cookie: StaffCookie | null = null;
  let principal: Principal | null = null;
  if (env.ADMIN_TOKEN && presented && (await tokensEqual(presented, env.ADMIN_TOKEN))) {
    cookie = { tid: "root", fp: await rootFingerprint(env.ADMIN_TOKEN) };
    principal = { role: "admin", name: "root" };
  } else if (presented) {
    const token = await findToken(database(env.DB), presented);
    if (token?.kind === "admin") principal = { role: "admin", name: token.name };
    if (token?.kind === "staff" && token.course) principal = { role: "staff", name: token.name, course: token.course };
    if (token && principal) cookie = { tid: token.id };
  }
  if (!cookie || !principal) throw new ApiError(401, "invalid_staff_token", "That is not a live staff or admin token.");
  await setSignedCookie(c, STAFF_COOKIE, JSON.stringify({ ...cookie, exp: expiry() }), secret, cookieOptions);
  return principal;
}

/** The staff principal behind the page cookie, re-checked against the live token; null without one. */
export async function staffFromCookie(c: Context): Promise<Principal | null> {
  const env = c.env as Env;
  const cookie = await readSigned<StaffCookie>(c, env, STAFF_COOKIE);
  if (!cookie) return null;
  if (cookie.tid === "root") {
    return env.ADMIN_TOKEN && cookie.fp === (await rootFingerprint(env.ADMIN_TOKEN)) ? { role: "admin", name: "root" } : null;
  }
  const [token] = await database(env.DB)
    .select()
    .from(apiTokens)
    .where(and(eq(apiTokens.id, cookie.tid), isNull(apiTokens.revokedAt)))
    .limit(1);
  if (token?.kind === "admin") return { role: "admin", name: token.name };
  if (token?.kind === "staff" && token.course) return { role: "staff", name: token.name, course: token.course };
  return null;
}

export function endBrowserSessions(c: Context): void {
  for (const name of [STAFF_COOKIE, DEV_SESSION_COOKIE]) deleteCookie(c, name, { path: "/", secure: true, sameSite: "Lax" });
}

export function devLoginEnabled(env: Env): boolean {
  return Boolean(env.DEV_USER_TOKENS && env.SESSION_SECRET);
}

/** Development only: a DEV_USER_TOKENS token becomes a page session for its user. */
export async function startDevSession(c: Context, presented: string): Promise<string> {
  const env = c.env as Env;
  if (!devLoginEnabled(env)) throw new ApiError(404, "dev_login_disabled", "Development sign-in is off on this gateway (it needs DEV_USER_TOKENS and SESSION_SECRET).");
  const user = presented ? await findTokenOwner(env.DEV_USER_TOKENS, presented) : null;
  if (!user) throw new ApiError(401, "invalid_credentials", "That is not a development token of this gateway.");
  await setSignedCookie(c, DEV_SESSION_COOKIE, JSON.stringify({ user, exp: expiry() }), sessionSecret(env), cookieOptions);
  return user;
}

/** Reads `oe_dev_session`; only while development sign-in is still enabled and the user still listed. */
export const devSessionAuthenticator: Authenticator = {
  name: "dev-session",
  configured: devLoginEnabled,
  async authenticate(c) {
    const session = await readSigned<{ user: string }>(c, c.env, DEV_SESSION_COOKIE);
    if (!session || typeof session.user !== "string") return null;
    return parseTokenList(c.env.DEV_USER_TOKENS).some((t) => t.name === session.user) ? { user: session.user, via: this.name } : null;
  },
};
