import { and, eq } from "drizzle-orm";
import { SignJWT } from "jose";
import { z } from "zod";
import type { Database } from "../db/client.js";
import { lti13Tokens } from "../db/schema.js";
import type { Env } from "../env.js";
import { requestFailure } from "../passback/request-failure.js";
import { AGS_SCORE_SCOPE, SCORE_MEDIA_TYPE } from "./claims.js";
import type { Platform } from "./platforms.js";
import { signingKey } from "./tool-keys.js";

/** A cached token is not used this close to its expiry: the score POST must not race it. */
const TOKEN_MARGIN_MS = 60_000;
const ASSERTION_LIFETIME_S = 300;

const TokenResponse = z.object({ access_token: z.string().min(1), token_type: z.string(), expires_in: z.coerce.number().positive().optional() });

/** The scores endpoint of a line item: `/scores` appended to its path, before any query (Moodle's carry one). */
export function scoresUrl(lineitem: string): string {
  const url = new URL(lineitem);
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/scores`;
  return url.toString();
}

/** An AGS Score (AGS 2.0 §3.4): the grade as a fraction of 1, as LTI 1.1 posts it. */
export function scoreBody(userId: string, score: number, now = new Date()) {
  return {
    userId,
    scoreGiven: score,
    scoreMaximum: 1,
    activityProgress: "Completed",
    gradingProgress: "FullyGraded",
    // Fresh on every try, with milliseconds: Open edX refuses a timestamp not newer than the one it holds.
    timestamp: now.toISOString(),
  };
}

/** The tool's client assertion (RFC 7523) for the platform's token endpoint; jti unique per request. */
async function clientAssertion(env: Env, platform: Platform): Promise<string> {
  const { kid, key } = await signingKey(env);
  return new SignJWT({})
    .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
    .setIssuer(platform.clientId)
    .setSubject(platform.clientId)
    .setAudience(platform.tokenUrl)
    .setIssuedAt()
    .setExpirationTime(`${ASSERTION_LIFETIME_S}s`)
    .setJti(crypto.randomUUID())
    .sign(key);
}

export class AgsError extends Error {}

/** An access token for `scope`: the cached one until shortly before it expires, else a new one. */
export async function accessToken(env: Env, db: Database, platform: Platform, scope = AGS_SCORE_SCOPE, timeoutMs = 15_000): Promise<string> {
  const key = and(eq(lti13Tokens.issuer, platform.issuer), eq(lti13Tokens.clientId, platform.clientId), eq(lti13Tokens.scope, scope));
  const [cached] = await db.select().from(lti13Tokens).where(key).limit(1);
  if (cached && cached.expiresAtMs - TOKEN_MARGIN_MS > Date.now()) return cached.accessToken;

  const form = new URLSearchParams({
    grant_type: "client_credentials",
    client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    client_assertion: await clientAssertion(env, platform),
    scope,
  });
  let res: Response;
  try {
    res = await fetch(platform.tokenUrl, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" }, body: form, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new AgsError(`token endpoint: ${requestFailure(err, timeoutMs)}`);
  }
  const text = await res.text();
  const parsed = res.ok ? TokenResponse.safeParse(safeJson(text)) : undefined;
  if (!parsed?.success) throw new AgsError(`token endpoint: HTTP ${res.status} ${text.slice(0, 300)}`);
  const expiresAtMs = Date.now() + (parsed.data.expires_in ?? 3600) * 1000;
  const row = { issuer: platform.issuer, clientId: platform.clientId, scope, accessToken: parsed.data.access_token, expiresAtMs };
  await db.insert(lti13Tokens).values(row).onConflictDoUpdate({ target: [lti13Tokens.issuer, lti13Tokens.clientId, lti13Tokens.scope], set: { accessToken: row.accessToken, expiresAtMs } });
  return row.accessToken;
}

export async function forgetToken(db: Database, platform: Platform, scope = AGS_SCORE_SCOPE): Promise<void> {
  await db.delete(lti13Tokens).where(and(eq(lti13Tokens.issuer, platform.issuer), eq(lti13Tokens.clientId, platform.clientId), eq(lti13Tokens.scope, scope)));
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export interface ScorePosted {
  url: string;
  httpStatus: number | null;
  delivered: boolean;
  description: string;
}

/**
 * Posts one score. A 401 means the platform no longer takes the cached token (expired or revoked
 * early): it is dropped and the score posted once more with a new one, within this try.
 */
export async function postScore(env: Env, db: Database, platform: Platform, link: { lineitem: string; sub: string }, score: number, timeoutMs: number): Promise<ScorePosted> {
  const url = scoresUrl(link.lineitem);
  for (let round = 0; ; round++) {
    let token: string;
    try {
      token = await accessToken(env, db, platform, AGS_SCORE_SCOPE, timeoutMs);
    } catch (err) {
      return { url, httpStatus: null, delivered: false, description: (err as Error).message };
    }
    let res: Response;
    try {
      res = await fetch(url, {
        method: "POST",
        headers: { "content-type": SCORE_MEDIA_TYPE, authorization: `Bearer ${token}` },
        body: JSON.stringify(scoreBody(link.sub, score)),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      return { url, httpStatus: null, delivered: false, description: requestFailure(err, timeoutMs) };
    }
    const text = (await res.text()).slice(0, 500);
    if (res.status === 401 && round === 0) {
      await forgetToken(db, platform);
      continue;
    }
    return { url, httpStatus: res.status, delivered: res.ok, description: res.ok ? `AGS score accepted (HTTP ${res.status})` : `AGS score refused: HTTP ${res.status} ${text}` };
  }
}
