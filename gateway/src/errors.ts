import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { log } from "./log.js";

/**
 * An error a client can act on: an HTTP status, a machine-readable code and a sentence for people.
 * Every non-2xx answer of the gateway has this JSON shape: `{error, message}`.
 */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function errorResponse(c: Context, err: ApiError): Response {
  return c.json({ error: err.code, message: err.message }, err.status, err.headers);
}

/** Last resort: log the cause, tell the client nothing internal. */
export function internalErrorResponse(c: Context, err: unknown): Response {
  log.error("unhandled", { path: c.req.path, error: String(err), stack: (err as Error)?.stack });
  return c.json({ error: "internal_error", message: "The gateway failed to handle this request; it was logged." }, 500);
}
