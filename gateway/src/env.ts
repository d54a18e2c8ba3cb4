import type { Dispatcher } from "./dispatcher/dispatcher.js";

/** Bindings and settings of the gateway Worker (see wrangler.toml; secrets come from `.dev.vars` or `wrangler secret`). */
export interface Env {
  DB: D1Database;
  BLOBS: R2Bucket;
  DISPATCHER: DurableObjectNamespace<Dispatcher>;
  MAX_SUBMISSION_BYTES: string;
  LEASE_TTL_MS: string;
  HEARTBEAT_MS: string;
  MAX_ATTEMPTS: string;
  /** Local-development student credentials, `user:token,user2:token2`. Unset in production. */
  DEV_USER_TOKENS?: string;
  /** Runner credentials, `runner-name:token,...`. */
  RUNNER_TOKENS?: string;
  /** Credential for the admin API (course config, autograder upload). */
  ADMIN_TOKEN?: string;
}

export function intSetting(value: string | undefined, fallback: number): number {
  const n = Number.parseInt(value ?? "", 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}
