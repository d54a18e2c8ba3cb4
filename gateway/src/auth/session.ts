import type { Context } from "hono";
import { deleteCookie, getSignedCookie, setSignedCookie } from "hono/cookie";
import type { Env } from "../env.js";

export const SESSION_COOKIE = "oe_session";
const SESSION_SECONDS = 8 * 60 * 60;

/**
 * The gateway's own session, set after a hub OAuth login: a cookie signed with SESSION_SECRET,
 * HttpOnly and Secure, SameSite=None so the Submit button on the hub's origin can send it. `path` is
 * "/" on the gateway's origin, and the hub service's prefix on the hub's origin (never the whole hub:
 * the students' own servers live there too).
 */
export async function startSession(c: Context<{ Bindings: Env }>, user: string, path = "/"): Promise<void> {
  const value = JSON.stringify({ user, exp: Math.floor(Date.now() / 1000) + SESSION_SECONDS });
  await setSignedCookie(c, SESSION_COOKIE, value, c.env.SESSION_SECRET!, { httpOnly: true, secure: true, sameSite: "None", path, maxAge: SESSION_SECONDS });
}

export async function sessionUser(c: Context): Promise<string | null | "invalid"> {
  const secret = (c.env as Env).SESSION_SECRET;
  if (!secret) return null;
  const raw = await getSignedCookie(c, secret, SESSION_COOKIE);
  if (raw === undefined) return null; // no cookie
  if (raw === false) return "invalid"; // a cookie whose signature does not verify
  try {
    const { user, exp } = JSON.parse(raw) as { user: string; exp: number };
    return typeof user === "string" && exp > Date.now() / 1000 ? user : "invalid";
  } catch {
    return "invalid";
  }
}

export function endSession(c: Context, path = "/"): void {
  deleteCookie(c, SESSION_COOKIE, { path, secure: true, sameSite: "None" });
}
