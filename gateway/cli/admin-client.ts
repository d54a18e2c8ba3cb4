import { readFile } from "node:fs/promises";

/** A small client for the gateway's admin API, shared by the `otter-edge` CLI and the local stack. */
export class AdminClient {
  constructor(
    readonly gatewayUrl: string,
    private readonly token: string,
  ) {}

  private async call<T>(method: string, path: string, body?: Buffer, contentType?: string, api = "/api/v1/admin"): Promise<T> {
    const res = await fetch(new URL(`${api}${path}`, this.gatewayUrl), {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(contentType ? { "content-type": contentType } : {}) },
      body,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
    return JSON.parse(text) as T;
  }

  /** Loads a course config JSON file (course → section → {course_id, post_grade, assignments}). */
  async loadConfig(file: string) {
    return this.call<{ courses: number; sections: number; assignments: number }>("PUT", "/config", await readFile(file), "application/json");
  }

  async uploadAutograder(course: string, assignment: string, zipFile: string, timeoutSeconds = 600, isolation?: "kernel" | "grader") {
    return this.call<{ sha256: string; otter_version: string; timeout_seconds: number; isolation: string }>(
      "PUT",
      `/assignments/${encodeURIComponent(course)}/${encodeURIComponent(assignment)}/autograder?timeout_seconds=${timeoutSeconds}${isolation ? `&isolation=${isolation}` : ""}`,
      await readFile(zipFile),
      "application/zip",
    );
  }

  /** The assignment's current autograder.zip and the otter-grader version the gateway read from it. */
  async downloadAutograder(course: string, assignment: string): Promise<{ zip: Buffer; sha256: string; otterVersion: string }> {
    const path = `/api/v1/admin/assignments/${encodeURIComponent(course)}/${encodeURIComponent(assignment)}/autograder`;
    const res = await fetch(new URL(path, this.gatewayUrl), { headers: { authorization: `Bearer ${this.token}` } });
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status} ${await res.text()}`);
    return { zip: Buffer.from(await res.arrayBuffer()), sha256: res.headers.get("x-otter-edge-sha256") ?? "", otterVersion: res.headers.get("x-otter-edge-otter-version") ?? "" };
  }

  listPassbacks(state?: string) {
    return this.call<{ passbacks: Array<Record<string, unknown>> }>("GET", `/passbacks${state ? `?state=${encodeURIComponent(state)}` : ""}`);
  }

  retryPassback(id: number) {
    return this.call<Record<string, unknown>>("POST", `/passbacks/${id}/retry`);
  }

  createToken(kind: "runner" | "staff" | "admin", name: string, course?: string) {
    const body = Buffer.from(JSON.stringify({ kind, name, ...(course ? { course } : {}) }));
    return this.call<{ id: string; kind: string; name: string; course: string | null; token: string }>("POST", "/tokens", body, "application/json");
  }

  listTokens() {
    return this.call<{ tokens: Array<Record<string, unknown>> }>("GET", "/tokens");
  }

  revokeToken(id: string) {
    return this.call<{ id: string; revoked_at: string; disconnected: number }>("DELETE", `/tokens/${encodeURIComponent(id)}`);
  }

  stats() {
    return this.call<Record<string, unknown>>("GET", "/stats");
  }

  /** Starts a regrade of an assignment (staff API: an admin token or the course's staff token). */
  startRegrade(course: string, assignment: string, request: Record<string, unknown>) {
    const path = `/courses/${encodeURIComponent(course)}/assignments/${encodeURIComponent(assignment)}/regrades`;
    return this.call<RegradeProgress>("POST", path, Buffer.from(JSON.stringify(request)), "application/json", "/api/v1/staff");
  }

  regrade(id: number) {
    return this.call<RegradeProgress>("GET", `/regrades/${id}`, undefined, undefined, "/api/v1/staff");
  }

  cancelRegrade(id: number) {
    return this.call<RegradeProgress>("POST", `/regrades/${id}/cancel`, undefined, undefined, "/api/v1/staff");
  }

  listRegrades(course: string) {
    return this.call<{ regrades: Array<Record<string, unknown>> }>("GET", `/courses/${encodeURIComponent(course)}/regrades`, undefined, undefined, "/api/v1/staff");
  }

  /** A course's grades as CSV, streamed from the staff API (an admin token or that course's staff token). */
  async gradesCsv(filters: { course: string; section?: string; assignment?: string; since?: string; until?: string; policy?: string }): Promise<ReadableStream<Uint8Array>> {
    const { course, ...rest } = filters;
    const query = new URLSearchParams(Object.entries(rest).filter((e): e is [string, string] => Boolean(e[1]))).toString();
    const path = `/api/v1/staff/courses/${encodeURIComponent(course)}/grades.csv${query ? `?${query}` : ""}`;
    const res = await fetch(new URL(path, this.gatewayUrl), { headers: { authorization: `Bearer ${this.token}` } });
    if (!res.ok || !res.body) throw new Error(`GET ${path}: HTTP ${res.status} ${await res.text()}`);
    return res.body;
  }

  /** Registers (or updates) an LTI 1.3 platform. */
  async registerLti13Platform(platform: { issuer: string; client_id: string; auth_url: string; token_url: string; jwks_url: string; deployment_ids: string[] }) {
    return this.call<Record<string, unknown>>("PUT", "/lti13/platforms", Buffer.from(JSON.stringify(platform)), "application/json");
  }

  async listLti13Platforms() {
    return this.call<{ platforms: Array<Record<string, unknown>> }>("GET", "/lti13/platforms");
  }
}

/** The parts of the gateway's regrade answer the CLI reads (the rest is printed as it comes). */
export interface RegradeProgress {
  id: number;
  state: "running" | "finished" | "cancelled";
  total: number;
  done: number;
  outcomes: Record<string, number>;
  progress: Record<string, number>;
  [key: string]: unknown;
}
