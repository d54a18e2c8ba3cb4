import { z } from "zod";
import type { Env } from "../env.js";
import { intSetting } from "../env.js";
import { ApiError } from "../errors.js";
import { sha256Hex } from "../autograder.js";

const HubUser = z.object({ kind: z.string().optional(), name: z.string().min(1) });

/**
 * The person a `GET {hub}/hub/api/user` answer names, or null. A service's token also identifies
 * itself there; only a person may submit.
 */
export async function personFromHubAnswer(res: Response): Promise<string | null> {
  const user = HubUser.safeParse(await res.json().catch(() => null));
  return user.success && (!user.data.kind || user.data.kind === "user") ? user.data.name : null;
}

type Verdict = { user: string } | { invalid: true };

/** The hub's own words about a token: `GET {HUB_API_URL}/user` with it. 403 is the hub's "no such token". */
async function askHub(env: Env, token: string): Promise<Verdict> {
  let res: Response;
  try {
    res = await fetch(`${env.HUB_API_URL!.replace(/\/+$/, "")}/user`, { headers: { authorization: `token ${token}` }, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new ApiError(503, "hub_unavailable", `The course's JupyterHub could not be reached to verify you (${String(err)}); try again shortly.`, { "Retry-After": "10" });
  }
  if (res.status === 401 || res.status === 403 || res.status === 404) return { invalid: true };
  if (!res.ok) throw new ApiError(503, "hub_unavailable", `The course's JupyterHub answered ${res.status} when asked to verify you; try again shortly.`, { "Retry-After": "10" });
  const user = await personFromHubAnswer(res);
  return user ? { user } : { invalid: true };
}

/**
 * Who a hub token belongs to, with answers (positive and negative) cached briefly in the Workers
 * Cache so a burst of submissions does not become a burst of hub calls. The cache key is a hash:
 * tokens never appear in it.
 */
export async function hubUserForToken(env: Env, token: string): Promise<Verdict> {
  const ttl = intSetting(env.HUB_TOKEN_CACHE_SECONDS, 60);
  const key = new Request(`https://hub-token.otter-edge.invalid/${await sha256Hex(new TextEncoder().encode(`${env.HUB_API_URL}\n${token}`))}`);
  const cache = (caches as unknown as { default: Cache }).default;
  const hit = await cache.match(key);
  if (hit) return (await hit.json()) as Verdict;
  const verdict = await askHub(env, token);
  await cache.put(key, Response.json(verdict, { headers: { "cache-control": `max-age=${ttl}` } }));
  return verdict;
}
