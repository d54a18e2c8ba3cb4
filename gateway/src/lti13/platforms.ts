import { and, eq } from "drizzle-orm";
import { type JSONWebKeySet, createLocalJWKSet } from "jose";
import { z } from "zod";
import { type Database, nowIso } from "../db/client.js";
import { lti13Platforms } from "../db/schema.js";
import { ApiError } from "../errors.js";

/** What staff register for a platform (admin API and `otter-edge lti13 register`). */
export const PlatformRegistration = z.object({
  issuer: z.string().min(1).max(500),
  client_id: z.string().min(1).max(500),
  auth_url: z.url(),
  token_url: z.url(),
  jwks_url: z.url(),
  deployment_ids: z.array(z.string().min(1).max(500)).min(1),
});
export type PlatformRegistration = z.infer<typeof PlatformRegistration>;
export type Platform = typeof lti13Platforms.$inferSelect;

/** A platform's JWKS is fetched again for an unknown kid at most this often (a forged kid costs no fetch storm). */
const JWKS_REFETCH_MIN_MS = 10_000;
const JWKS_FETCH_TIMEOUT_MS = 10_000;

export async function registerPlatform(db: Database, p: PlatformRegistration): Promise<Platform> {
  const now = nowIso();
  const values = { issuer: p.issuer, clientId: p.client_id, authUrl: p.auth_url, tokenUrl: p.token_url, jwksUrl: p.jwks_url, deploymentIds: p.deployment_ids };
  const [row] = await db
    .insert(lti13Platforms)
    .values({ ...values, createdAt: now, updatedAt: now })
    // A changed JWKS URL drops the cached keys; the rest of the cache stays valid.
    .onConflictDoUpdate({ target: [lti13Platforms.issuer, lti13Platforms.clientId], set: { ...values, jwks: null, jwksFetchedAt: null, updatedAt: now } })
    .returning();
  return row!;
}

export async function findPlatform(db: Database, issuer: string, clientId: string): Promise<Platform | undefined> {
  const [row] = await db.select().from(lti13Platforms).where(and(eq(lti13Platforms.issuer, issuer), eq(lti13Platforms.clientId, clientId))).limit(1);
  return row;
}

/** The registration as staff see it (no cached keys). */
export function platformView(p: Platform) {
  return { issuer: p.issuer, client_id: p.clientId, auth_url: p.authUrl, token_url: p.tokenUrl, jwks_url: p.jwksUrl, deployment_ids: p.deploymentIds, updated_at: p.updatedAt };
}

async function fetchJwks(db: Database, platform: Platform): Promise<JSONWebKeySet> {
  let res: Response;
  try {
    res = await fetch(platform.jwksUrl, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(JWKS_FETCH_TIMEOUT_MS) });
  } catch (err) {
    throw new ApiError(502, "platform_jwks_unreachable", `The platform's JWKS (${platform.jwksUrl}) could not be fetched: ${String(err)}.`);
  }
  const body = (await res.json().catch(() => null)) as JSONWebKeySet | null;
  if (!res.ok || !body || !Array.isArray(body.keys)) throw new ApiError(502, "platform_jwks_invalid", `The platform's JWKS (${platform.jwksUrl}) answered HTTP ${res.status} without a key set.`);
  await db
    .update(lti13Platforms)
    .set({ jwks: JSON.stringify(body), jwksFetchedAt: Date.now() })
    .where(and(eq(lti13Platforms.issuer, platform.issuer), eq(lti13Platforms.clientId, platform.clientId)));
  return body;
}

/**
 * The platform key for a launch's `kid`: from the cached JWKS, or fetched again when the kid is
 * unknown (the platform rotated its key), at most once per JWKS_REFETCH_MIN_MS.
 */
export async function platformKeySet(db: Database, platform: Platform, kid: string | undefined, refetchMinMs = JWKS_REFETCH_MIN_MS) {
  let jwks = platform.jwks ? (JSON.parse(platform.jwks) as JSONWebKeySet) : undefined;
  const known = (set: JSONWebKeySet | undefined) => Boolean(set?.keys.some((k) => k.kid === kid));
  if (!known(jwks) && (!platform.jwksFetchedAt || Date.now() - platform.jwksFetchedAt >= refetchMinMs)) jwks = await fetchJwks(db, platform);
  if (!known(jwks)) throw new ApiError(401, "unknown_kid", `The launch is signed with key "${kid ?? "(none)"}", which is not in the platform's JWKS.`);
  return createLocalJWKSet(jwks!);
}
