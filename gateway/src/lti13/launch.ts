import { Hono } from "hono";
import { eq, lt } from "drizzle-orm";
import { type JWTPayload, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from "jose";
import { z } from "zod";
import { database, nowIso } from "../db/client.js";
import { lti13Links, lti13Logins } from "../db/schema.js";
import type { Env } from "../env.js";
import { ApiError } from "../errors.js";
import { findLaunchAssignment, launchPage } from "../lti/launch.js";
import { AGS_SCORE_SCOPE, CLAIM } from "./claims.js";
import { findPlatform, platformKeySet } from "./platforms.js";
import { log } from "../log.js";

/** A login's state and nonce are good for this long: the platform answers within seconds. */
const LOGIN_TTL_MS = 5 * 60_000;
/** Clock skew allowed on the id_token's exp/iat. */
const CLOCK_TOLERANCE_S = 60;

/** Third-party initiated login (LTI Security Framework §5.1.1), by GET or form POST. */
const LoginParams = z.object({
  iss: z.string().min(1),
  login_hint: z.string().min(1),
  target_link_uri: z.string().min(1),
  lti_message_hint: z.string().optional(),
  client_id: z.string().min(1),
  lti_deployment_id: z.string().optional(),
});

const LaunchForm = z.object({ id_token: z.string().min(1), state: z.string().min(1) });

const AgsClaim = z.object({ lineitem: z.url().optional(), scope: z.array(z.string()).default([]) });

export const lti13Routes = new Hono<{ Bindings: Env }>();

async function formOrQuery(c: { req: { method: string; query: () => Record<string, string>; parseBody: () => Promise<Record<string, unknown>> } }) {
  if (c.req.method === "GET") return c.req.query();
  const body = await c.req.parseBody().catch(() => ({}));
  return Object.fromEntries(Object.entries(body).filter((e): e is [string, string] => typeof e[1] === "string"));
}

/** `/lti/1p3/login`: keeps a fresh state and nonce, and sends the browser to the platform's auth endpoint. */
lti13Routes.on(["GET", "POST"], "/login", async (c) => {
  const parsed = LoginParams.safeParse(await formOrQuery(c));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ApiError(400, "invalid_login", `LTI 1.3 login parameter ${issue?.path.join(".")}: ${issue?.message}.`);
  }
  const p = parsed.data;
  const db = database(c.env.DB);
  const platform = await findPlatform(db, p.iss, p.client_id);
  if (!platform) throw new ApiError(401, "unknown_platform", `No LTI 1.3 platform is registered for issuer "${p.iss}" and client_id "${p.client_id}".`);
  if (p.lti_deployment_id && !platform.deploymentIds.includes(p.lti_deployment_id)) {
    throw new ApiError(401, "unknown_deployment", `Deployment "${p.lti_deployment_id}" is not registered for this platform.`);
  }
  const state = crypto.randomUUID();
  const nonce = crypto.randomUUID();
  const now = Date.now();
  await db.insert(lti13Logins).values({ state, nonce, issuer: platform.issuer, clientId: platform.clientId, createdAtMs: now });
  c.executionCtx.waitUntil(db.delete(lti13Logins).where(lt(lti13Logins.createdAtMs, now - LOGIN_TTL_MS)).then(() => undefined));
  const auth = new URL(platform.authUrl);
  const params: Record<string, string> = {
    scope: "openid",
    response_type: "id_token",
    response_mode: "form_post",
    prompt: "none",
    client_id: platform.clientId,
    redirect_uri: new URL("/lti/1p3/launch", c.req.url).toString(),
    login_hint: p.login_hint,
    state,
    nonce,
    ...(p.lti_message_hint ? { lti_message_hint: p.lti_message_hint } : {}),
  };
  for (const [k, v] of Object.entries(params)) auth.searchParams.set(k, v);
  return c.redirect(auth.toString(), 302);
});

/**
 * `/lti/1p3/launch`: the platform's id_token, checked in this order: state (single use, fresh),
 * nonce, registration (iss, aud, azp), kid, RS256 signature, exp/iat, deployment, message type,
 * version. A resource link launch with an AGS line item links the student's grades to it.
 */
lti13Routes.post("/launch", async (c) => {
  const parsed = LaunchForm.safeParse(await formOrQuery(c));
  if (!parsed.success) throw new ApiError(400, "invalid_launch", "An LTI 1.3 launch is a form POST with id_token and state.");
  const { id_token: idToken, state } = parsed.data;
  const db = database(c.env.DB);

  const [login] = await db.delete(lti13Logins).where(eq(lti13Logins.state, state)).returning();
  if (!login) throw new ApiError(401, "unknown_state", "This launch's state is unknown or was already used: start again from the course.");
  if (Date.now() - login.createdAtMs > LOGIN_TTL_MS) throw new ApiError(401, "expired_state", "This launch took too long: start again from the course.");

  let header: ReturnType<typeof decodeProtectedHeader>;
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(idToken);
    unverified = decodeJwt(idToken);
  } catch {
    throw new ApiError(400, "invalid_id_token", "The launch's id_token is not a JWT.");
  }
  if (unverified.nonce !== login.nonce) throw new ApiError(401, "nonce_mismatch", "The launch's nonce is not the one this login sent (a replayed launch?).");
  const audiences = typeof unverified.aud === "string" ? [unverified.aud] : (unverified.aud ?? []);
  if (unverified.iss !== login.issuer || !audiences.includes(login.clientId)) {
    throw new ApiError(401, "wrong_audience", "The launch's issuer or audience is not the platform this login was for.");
  }
  if (audiences.length > 1 && unverified.azp !== login.clientId) throw new ApiError(401, "wrong_audience", "The launch has several audiences and its azp is not this tool's client_id.");
  const platform = await findPlatform(db, login.issuer, login.clientId);
  if (!platform) throw new ApiError(401, "unknown_platform", "The platform's registration was removed during this login.");

  if (header.alg !== "RS256") throw new ApiError(401, "invalid_signature", `The launch is signed with ${String(header.alg)}; LTI 1.3 requires RS256.`);
  const refetchMinMs = Number.parseInt(c.env.LTI13_JWKS_REFETCH_MIN_MS ?? "", 10); // 0 is allowed: tests rotate keys back to back
  const keys = await platformKeySet(db, platform, header.kid, Number.isFinite(refetchMinMs) && refetchMinMs >= 0 ? refetchMinMs : undefined);
  let claims: JWTPayload;
  try {
    ({ payload: claims } = await jwtVerify(idToken, keys, {
      algorithms: ["RS256"],
      issuer: platform.issuer,
      audience: platform.clientId,
      clockTolerance: CLOCK_TOLERANCE_S,
      requiredClaims: ["exp", "iat", "sub"],
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new ApiError(401, "expired_id_token", "The launch's id_token has expired.");
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw new ApiError(401, "invalid_signature", "The launch's signature does not verify with the platform's key.");
    if (err instanceof joseErrors.JWKSNoMatchingKey) throw new ApiError(401, "unknown_kid", "No key of the platform's JWKS verifies this launch.");
    throw new ApiError(401, "invalid_id_token", `The launch's id_token is refused: ${(err as Error).message}.`);
  }
  const deploymentId = claims[CLAIM.deploymentId];
  if (typeof deploymentId !== "string" || !platform.deploymentIds.includes(deploymentId)) {
    throw new ApiError(401, "unknown_deployment", `Deployment "${String(deploymentId)}" is not registered for this platform.`);
  }
  if (claims[CLAIM.messageType] !== "LtiResourceLinkRequest") {
    throw new ApiError(400, "unsupported_message_type", `otter-edge takes resource link launches, not "${String(claims[CLAIM.messageType])}".`);
  }
  if (claims[CLAIM.version] !== "1.3.0") throw new ApiError(400, "unsupported_version", `LTI version "${String(claims[CLAIM.version])}" is not 1.3.0.`);

  const link = (claims[CLAIM.resourceLink] ?? {}) as { id?: string };
  const custom = (claims[CLAIM.custom] ?? {}) as Record<string, unknown>;
  if (typeof link.id !== "string") throw new ApiError(400, "invalid_launch", "The launch has no resource_link id.");
  const assignment = await findLaunchAssignment(c.env, {
    course: typeof custom.otter_course === "string" ? custom.otter_course : undefined,
    assignment: typeof custom.otter_assignment === "string" ? custom.otter_assignment : undefined,
    resourceLinkId: link.id,
  });
  if (!assignment) throw new ApiError(404, "unknown_assignment", `No assignment is configured for LTI resource link "${link.id}".`);

  const ags = AgsClaim.safeParse(claims[CLAIM.ags] ?? {});
  if (!ags.success || !ags.data.lineitem || !ags.data.scope.includes(AGS_SCORE_SCOPE)) {
    return c.html(launchPage(`Opened ${assignment.assignment}. This launch grants no gradebook column (AGS score scope and line item), so no grade will be posted for it.`));
  }
  const user = hubUser(c.env, claims);
  const row = {
    course: assignment.course,
    assignment: assignment.assignment,
    user,
    issuer: platform.issuer,
    clientId: platform.clientId,
    deploymentId,
    sub: claims.sub!,
    lineitem: ags.data.lineitem,
    resourceLinkId: link.id,
    updatedAt: nowIso(),
  };
  const { course: _c, assignment: _a, user: _u, ...changes } = row;
  await db.insert(lti13Links).values(row).onConflictDoUpdate({ target: [lti13Links.course, lti13Links.assignment, lti13Links.user], set: changes });
  log.info("lti 1.3 launch linked", { user, course: assignment.course, assignment: assignment.assignment, issuer: platform.issuer });
  return c.html(launchPage(`You are linked: grades for ${assignment.assignment} will be posted to your course's gradebook.`));
});

/**
 * The hub user a launch is for. Hubs that took their users from LTI 1.1 named them by its user_id,
 * which LTI 1.3 platforms send in the `lti1p1` migration claim; otherwise `sub`. LTI13_USER_CLAIM
 * names another claim (e.g. `email`, for a hub whose LTI 1.3 authenticator keys users by it).
 */
function hubUser(env: Env, claims: JWTPayload): string {
  if (env.LTI13_USER_CLAIM) {
    const value = claims[env.LTI13_USER_CLAIM];
    if (typeof value !== "string" || !value) throw new ApiError(400, "missing_user_claim", `The launch has no "${env.LTI13_USER_CLAIM}" claim (LTI13_USER_CLAIM) to name its user.`);
    return value;
  }
  const migrated = (claims[CLAIM.lti1p1] as { user_id?: unknown } | undefined)?.user_id;
  return typeof migrated === "string" && migrated ? migrated : claims.sub!;
}
