import { Hono } from "hono";
import { getSignedCookie, setSignedCookie } from "hono/cookie";
import { z } from "zod";
import { personFromHubAnswer } from "../auth/hub.js";
import { endSession, startSession } from "../auth/session.js";
import type { Env } from "../env.js";
import { ApiError } from "../errors.js";
import { servicePrefixOf } from "../hub-service.js";
import { log } from "../log.js";

/**
 * Browser login through JupyterHub OAuth: the gateway is the hub service `otter_grade`.
 * /auth/login → hub authorize → /auth/callback exchanges the code, asks the hub who it is, and sets
 * the gateway's own session cookie.
 */
export const authRoutes = new Hono<{ Bindings: Env }>();

const STATE_COOKIE = "oe_oauth_state";

function hubOAuth(env: Env) {
  if (!env.HUB_API_URL || !env.HUB_OAUTH_CLIENT_ID || !env.HUB_OAUTH_CLIENT_SECRET || !env.SESSION_SECRET) {
    throw new ApiError(503, "oauth_not_configured", "Hub login is not configured on this gateway (HUB_API_URL, HUB_OAUTH_CLIENT_ID, HUB_OAUTH_CLIENT_SECRET, SESSION_SECRET).");
  }
  const api = env.HUB_API_URL.replace(/\/+$/, "");
  // The browser goes to the hub's public address; the token exchange may use an internal one.
  const publicApi = env.HUB_PUBLIC_URL ? `${env.HUB_PUBLIC_URL.replace(/\/+$/, "")}/hub/api` : api;
  return { api, publicApi, clientId: env.HUB_OAUTH_CLIENT_ID, secret: env.HUB_OAUTH_CLIENT_SECRET, sessionSecret: env.SESSION_SECRET };
}

/** Only paths on this gateway: an open redirect would let a link carry a session to someone else's site. */
function safeNext(next: string | undefined, prefix: string): string {
  return next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : `${prefix}/auth/whoami`;
}

/**
 * Where the hub sends the browser back: on the gateway's origin, or under the hub service's prefix on
 * the hub's origin when the login started there (the hub's `oauth_redirect_uri` must say which).
 */
function callbackUri(c: { req: { url: string; path: string } }): string {
  return new URL(`${servicePrefixOf(c.req.path)}/auth/callback`, c.req.url).toString();
}

authRoutes.get("/login", async (c) => {
  const oauth = hubOAuth(c.env);
  const prefix = servicePrefixOf(c.req.path);
  const state = crypto.randomUUID();
  const redirectUri = callbackUri(c);
  await setSignedCookie(c, STATE_COOKIE, JSON.stringify({ state, next: safeNext(c.req.query("next"), prefix) }), oauth.sessionSecret, {
    httpOnly: true,
    secure: true,
    sameSite: "Lax",
    path: `${prefix}/auth`,
    maxAge: 600,
  });
  const q = new URLSearchParams({ client_id: oauth.clientId, redirect_uri: redirectUri, response_type: "code", state });
  return c.redirect(`${oauth.publicApi}/oauth2/authorize?${q}`, 302);
});

const TokenAnswer = z.object({ access_token: z.string().min(1) });

authRoutes.get("/callback", async (c) => {
  const oauth = hubOAuth(c.env);
  const raw = await getSignedCookie(c, oauth.sessionSecret, STATE_COOKIE);
  const saved = raw ? (JSON.parse(raw) as { state: string; next: string }) : null;
  const code = c.req.query("code");
  if (!saved || !code || c.req.query("state") !== saved.state) {
    throw new ApiError(400, "invalid_oauth_state", "This login link is stale or was not started here; open /auth/login again.");
  }
  const redirectUri = callbackUri(c);
  const exchange = await fetch(`${oauth.api}/oauth2/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: oauth.clientId, client_secret: oauth.secret, grant_type: "authorization_code", code, redirect_uri: redirectUri }),
  });
  const token = TokenAnswer.safeParse(await exchange.json().catch(() => null));
  if (!exchange.ok || !token.success) throw new ApiError(401, "oauth_exchange_failed", `The hub did not accept the login code (HTTP ${exchange.status}); open /auth/login again.`);
  const who = await fetch(`${oauth.api}/user`, { headers: { authorization: `Bearer ${token.data.access_token}` } });
  const user = who.ok ? await personFromHubAnswer(who) : null;
  if (!user) throw new ApiError(401, "oauth_user_unknown", "The hub did not say who you are; open /auth/login again.");
  await startSession(c, user, servicePrefixOf(c.req.path) || "/");
  log.info("hub login", { user });
  return c.redirect(saved.next, 302);
});

authRoutes.get("/logout", (c) => {
  endSession(c, servicePrefixOf(c.req.path) || "/");
  return c.json({ signed_out: true });
});
