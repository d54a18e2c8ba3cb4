import { SELF } from "cloudflare:test";
import { type GatewayMessage, GatewayMessage as GatewayMessageSchema, type RunnerMessage } from "@otter-edge/shared";
import { zipSync, strToU8 } from "fflate";

export const ADMIN = "admin-token";
export const ALICE = "alice-token";
export const BOB = "bob-token";
export const BASE = "http://gateway.test";

let counter = 0;
/**
 * Storage is shared by the tests of one file, so each test makes its own course with its own
 * otter-grader version: jobs then only ever go to the runners that test connects.
 */
export function uniqueAssignment(label: string) {
  counter += 1;
  const stamp = `${Date.now() % 1_000_000}${counter}`;
  return { course: `c-${label}-${stamp}`, section: "1", assignment: "lab01", otterVersion: `7.0.${stamp}` };
}
export type TestAssignment = ReturnType<typeof uniqueAssignment>;

export async function adminFetch(path: string, init: RequestInit = {}) {
  return SELF.fetch(`${BASE}/api/v1/admin${path}`, { ...init, headers: { authorization: `Bearer ${ADMIN}`, ...(init.headers ?? {}) } });
}

const issued = new Map<string, Promise<{ id: string; token: string }>>();

/** A token from the admin API, issued once per kind/name/course in a test file. */
export function issueToken(t: { kind: "runner" | "staff" | "admin"; name: string; course?: string }): Promise<{ id: string; token: string }> {
  const key = JSON.stringify(t);
  if (!issued.has(key)) {
    issued.set(
      key,
      adminFetch("/tokens", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(t) }).then(async (res) => {
        if (res.status !== 201) throw new Error(`token: ${res.status} ${await res.text()}`);
        return (await res.json()) as { id: string; token: string };
      }),
    );
  }
  return issued.get(key)!;
}

export function autograderZip(otterVersion: string): Uint8Array {
  return zipSync({ "otter_config.json": strToU8("{}"), "requirements.txt": strToU8(`otter-grader==${otterVersion}\n`), "tests/q1.py": strToU8("OK_FORMAT = True\n") });
}

/** Configures the course and uploads an autograder for it. */
export async function setUpAssignment(a: TestAssignment, timeoutSeconds = 60) {
  const config = await adminFetch("/config", {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ [a.course]: { [a.section]: { course_id: "DemoX+D101+2026", assignments: { [a.assignment]: "block-1" } } } }),
  });
  if (config.status !== 200) throw new Error(`config: ${config.status} ${await config.text()}`);
  const upload = await adminFetch(`/assignments/${a.course}/${a.assignment}/autograder?timeout_seconds=${timeoutSeconds}`, {
    method: "PUT",
    body: autograderZip(a.otterVersion),
  });
  if (upload.status !== 200) throw new Error(`upload: ${upload.status} ${await upload.text()}`);
  return (await upload.json()) as { sha256: string };
}

export function notebook(routing: { course: string; section: string; assignment: string } | undefined, extra: Record<string, unknown> = {}) {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "python3", display_name: "Python 3", language: "python" }, ...(routing ? { otter_service: routing } : {}) },
    cells: [{ cell_type: "code", source: "x = 1", metadata: {}, outputs: [], execution_count: null }],
    ...extra,
  };
}

export async function submit(a: TestAssignment, token = ALICE, path = "/api/v1/submissions") {
  const res = await SELF.fetch(`${BASE}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ nb: notebook({ course: a.course, section: a.section, assignment: a.assignment }) }),
  });
  if (res.status !== 202) throw new Error(`submit: ${res.status} ${await res.text()}`);
  return (await res.json()) as { id: string; status_url: string };
}

export async function status(id: string, token = ALICE) {
  const res = await SELF.fetch(`${BASE}/api/v1/submissions/${id}`, { headers: { authorization: `Bearer ${token}` } });
  return { code: res.status, body: (await res.json()) as Record<string, any> };
}

/** A runner's socket, driven by the test: it sends protocol messages and awaits the gateway's. */
export class TestRunner {
  private readonly inbox: GatewayMessage[] = [];
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (event) => {
      this.inbox.push(GatewayMessageSchema.parse(JSON.parse(event.data as string)));
      this.wake();
    });
    ws.addEventListener("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Connects as the named runner, with a runner token issued for it through the admin API. */
  static async connect(runner = "runner-a", hello: { capacity: number; otterVersions: string[]; holding?: unknown[]; offerAnswers?: boolean } = { capacity: 1, otterVersions: [] }) {
    return TestRunner.connectWithToken((await issueToken({ kind: "runner", name: runner })).token, hello);
  }

  static async connectWithToken(token: string, hello: { capacity: number; otterVersions: string[]; holding?: unknown[]; offerAnswers?: boolean } = { capacity: 1, otterVersions: [] }) {
    const res = await SELF.fetch(`${BASE}/runner/v1/connect`, { headers: { upgrade: "websocket", authorization: `Bearer ${token}` } });
    if (res.status !== 101 || !res.webSocket) throw new Error(`connect: ${res.status} ${await res.text()}`);
    res.webSocket.accept();
    const runner = new TestRunner(res.webSocket);
    runner.send({ type: "hello", protocol: 1, runner: "test", capacity: hello.capacity, otterVersions: hello.otterVersions, holding: (hello.holding ?? []) as never, offerAnswers: hello.offerAnswers ?? false });
    await runner.next("welcome");
    return runner;
  }

  send(message: RunnerMessage | Record<string, unknown>) {
    this.ws.send(JSON.stringify(message));
  }

  /** The next message of this type (earlier messages of other types stay in the inbox). */
  async next<T extends GatewayMessage["type"]>(type: T): Promise<Extract<GatewayMessage, { type: T }>> {
    for (;;) {
      const index = this.inbox.findIndex((m) => m.type === type);
      if (index >= 0) return this.inbox.splice(index, 1)[0] as Extract<GatewayMessage, { type: T }>;
      if (this.closed) throw new Error(`socket closed while waiting for ${type}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  has(type: GatewayMessage["type"]) {
    return this.inbox.some((m) => m.type === type);
  }

  close() {
    this.ws.close(1000, "test done");
  }
}

export function gradedOutcome(score: number) {
  return {
    kind: "graded" as const,
    grade: {
      verdict: "graded" as const,
      score,
      points: score * 5,
      maxPoints: 5,
      message: "",
      tests: [
        { name: "q1", score: 1, maxScore: 1, visibility: "visible" as const, output: "q1 passed" },
        { name: "q2", score: score * 4 - 0, maxScore: 4, visibility: "hidden" as const, output: "secret hidden output" },
      ],
    },
    timings: {},
  };
}
