import type { Dispatcher } from "./dispatcher/dispatcher.js";
import type { PassbackOutbox } from "./passback/outbox.js";

/** Bindings and settings of the gateway Worker (see wrangler.toml; secrets come from `.dev.vars` or `wrangler secret`). */
export interface Env {
  DB: D1Database;
  BLOBS: R2Bucket;
  DISPATCHER: DurableObjectNamespace<Dispatcher>;
  PASSBACK: DurableObjectNamespace<PassbackOutbox>;
  MAX_SUBMISSION_BYTES: string;
  SUBMIT_LIMIT_USER?: RateLimit;
  SUBMIT_LIMIT_COURSE?: RateLimit;
  SUBMIT_RATE_LIMITS?: string;
  LEASE_TTL_MS: string;
  HEARTBEAT_MS: string;
  MAX_ATTEMPTS: string;
  /** How many Dispatcher objects share the queue (see dispatcher/stub.ts); raise it, never lower it. */
  DISPATCHER_SHARDS?: string;
  /** Local-development student credentials, `user:token,user2:token2`. Unset in production. */
  DEV_USER_TOKENS?: string;
  /** The JupyterHub REST API that vouches for students, e.g. `https://hub.example.edu/hub/api`. */
  HUB_API_URL?: string;
  /** Seconds a hub answer about a token is cached (valid or not); revocation takes effect within it. */
  HUB_TOKEN_CACHE_SECONDS?: string;
  /** Hub OAuth client of the `otter_grade` service: client id and secret (the service's api_token). */
  HUB_OAUTH_CLIENT_ID?: string;
  HUB_OAUTH_CLIENT_SECRET?: string;
  /** The hub's public base URL for the browser's OAuth redirect, when it differs from HUB_API_URL's origin. */
  HUB_PUBLIC_URL?: string;
  /** Key that signs the gateway's session cookies. */
  SESSION_SECRET?: string;
  /** Browser origins (the course hubs) allowed to call the API with credentials, comma separated. */
  HUB_ORIGINS?: string;
  /** Root credential of the admin API; it issues the runner, staff and admin tokens kept (hashed) in D1. */
  ADMIN_TOKEN?: string;
  /** LTI 1.1 consumer credentials shared with the LMS, `key:secret,...`. */
  LTI_CONSUMERS?: string;
  /** Key (from LTI_CONSUMERS) used for grades whose target is built from the course config. */
  LTI_CONSUMER_KEY?: string;
  /** The edX host (or origin, with scheme) for outcome URLs built from the course config. */
  EDX_URL?: string;
  /** Passback timing: per-request timeout, backoff base and cap, and how long to keep retrying. */
  PASSBACK_TIMEOUT_MS?: string;
  PASSBACK_BACKOFF_BASE_MS?: string;
  PASSBACK_BACKOFF_MAX_MS?: string;
  PASSBACK_RETRY_WINDOW_MS?: string;
  /** How many students' grades are posted at once (each student's in order). */
  PASSBACK_CONCURRENCY?: string;
  /** How far an LTI launch's oauth_timestamp may be from now, in seconds. */
  LTI_TIMESTAMP_WINDOW_S?: string;
  /** LTI 1.3: the tool's private RS256 keys, a JSON list of JWKs with kid; the first signs (see lti13/tool-keys.ts). */
  LTI13_TOOL_KEYS?: string;
  /**
   * LTI 1.3: which id_token claim names the hub user a launch links. Unset: the `lti1p1` migration
   * claim's user_id when the platform sends it (the user an LTI 1.1 launch named), else `sub`.
   */
  LTI13_USER_CLAIM?: string;
  /** LTI 1.3: how soon a platform's JWKS may be fetched again for an unknown kid (default 10 s). */
  LTI13_JWKS_REFETCH_MIN_MS?: string;
  /**
   * The package index the runners install assignment requirements from (its simple API, the URL
   * pip's index-url names). When set, uploads are checked against it: unknown packages and
   * versions are refused at upload. Unset: only the requirements' syntax is checked.
   */
  PACKAGE_INDEX_URL?: string;
}

export function intSetting(value: string | undefined, fallback: number): number {
  const n = Number.parseInt(value ?? "", 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}
