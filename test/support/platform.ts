import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { ROOT, stopProcess } from "../../scripts/local-stack.js";

const PYTHON = join(ROOT, ".otter-edge", "venv", "bin", "python");
const SCRIPT = join(ROOT, "test", "lti13", "platform_standin.py");

export interface ReceivedScore {
  lineitem: string;
  userId: string;
  scoreGiven: number;
  scoreMaximum: number;
  activityProgress: string;
  gradingProgress: string;
  timestamp: string;
  client_id: string;
}

export interface LoginInitiation {
  iss: string;
  login_hint: string;
  lti_message_hint: string;
  client_id: string;
  lti_deployment_id: string;
  target_link_uri?: string;
}

/**
 * The LTI 1.3 platform stand-in (test/lti13/platform_standin.py): a real HTTP server, written with
 * PyJWT and cryptography apart from the gateway, that signs launches, verifies the tool's client
 * assertions against the tool's JWKS, issues tokens and records AGS scores.
 */
export class PlatformStandin {
  private constructor(
    readonly url: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(args: string[] = []): Promise<PlatformStandin> {
    const child = spawn(PYTHON, [SCRIPT, "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"], detached: true });
    const stderr: string[] = [];
    child.stderr!.on("data", (d: Buffer) => stderr.push(d.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        const match = /^LISTENING (\d+)$/.exec(line.trim());
        if (match) resolve(Number(match[1]));
      });
      child.once("exit", (code) => reject(new Error(`platform stand-in exited (${code}): ${stderr.join("")}`)));
    });
    return new PlatformStandin(`http://127.0.0.1:${port}`, child);
  }

  async control<T>(path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}/_control/${path}`, body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`platform control ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  registerTool(tool: { client_id: string; deployment_id: string; jwks_url: string; redirect_uris: string[] }) {
    return this.control("tool", tool);
  }
  /** Prepares a launch; answers the fields of the third-party login the tool's login URL takes. */
  prepareLaunch(launch: Record<string, unknown>): Promise<LoginInitiation> {
    return this.control("launch", launch);
  }
  sign(claims: Record<string, unknown>, signWith: "current" | "unknown" | "previous" = "current"): Promise<{ id_token: string }> {
    return this.control("sign", { claims, sign_with: signWith });
  }
  rotate(keepOld: boolean): Promise<{ kid: string }> {
    return this.control("rotate", { keep_old: keepOld });
  }
  scores(): Promise<ReceivedScore[]> {
    return this.control("scores");
  }
  rejected(): Promise<Array<{ endpoint: string; status: number; error: string; description: string }>> {
    return this.control("rejected");
  }
  tokenRequests(): Promise<Array<{ client_id: string; scope: string; jti: string; ok: boolean }>> {
    return this.control("token-requests");
  }
  expireTokens() {
    return this.control("expire-tokens", {});
  }
  failNext(endpoint: "scores" | "token", mode: "http_500" | "http_503" | "hang", count: number) {
    return this.control("fail-next", { endpoint, mode, count });
  }
  notStudent(userId: string) {
    return this.control("not-student", { userId });
  }

  async stop(): Promise<void> {
    await stopProcess(this.child);
  }
}
