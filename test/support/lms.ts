import { type ChildProcess, execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { ROOT, stopProcess } from "../../scripts/local-stack.js";

const PYTHON = join(ROOT, ".otter-edge", "venv", "bin", "python");
const SCRIPT = join(ROOT, "test", "lti", "lms_standin.py");

export interface ReceivedGrade {
  sourcedId: string;
  score: number;
  textString: string;
  messageId: string;
}

/**
 * The LTI 1.1 LMS stand-in (test/lti/lms_standin.py): a real HTTP server that verifies every
 * outcome request with oauthlib, an implementation independent of the gateway's signer.
 */
export class LmsStandin {
  private constructor(
    readonly url: string,
    readonly key: string,
    readonly secret: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(key = "otter-edge-test-key", secret = "otter-edge-test-secret"): Promise<LmsStandin> {
    const child = spawn(PYTHON, [SCRIPT, "--port", "0", "--key", key, "--secret", secret], { stdio: ["ignore", "pipe", "pipe"], detached: true });
    const stderr: string[] = [];
    child.stderr!.on("data", (d: Buffer) => stderr.push(d.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        const match = /^LISTENING (\d+)$/.exec(line.trim());
        if (match) resolve(Number(match[1]));
      });
      child.once("exit", (code) => reject(new Error(`LMS stand-in exited (${code}): ${stderr.join("")}`)));
    });
    return new LmsStandin(`http://127.0.0.1:${port}`, key, secret, child);
  }

  private async control<T>(path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}/_control/${path}`, body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`LMS control ${path}: ${res.status}`);
    return (await res.json()) as T;
  }

  grades(): Promise<ReceivedGrade[]> {
    return this.control("grades");
  }
  rejected(): Promise<Array<{ reason: string; description: string }>> {
    return this.control("rejected");
  }
  requests(): Promise<Array<{ path: string; mode: string }>> {
    return this.control("requests");
  }
  /** The next `count` outcome requests get this behaviour: http_500, hang, failure or unparseable. */
  async failNext(mode: "http_500" | "hang" | "failure" | "unparseable", count: number): Promise<void> {
    await this.control("mode", { mode, count });
  }
  async reset(): Promise<void> {
    await this.control("reset", {});
  }

  /** Form fields of an LTI 1.1 launch to `url`, signed by oauthlib inside the stand-in's own code. */
  async signLaunch(url: string, params: Record<string, string>, opts: { timestamp?: number; nonce?: string } = {}): Promise<Record<string, string>> {
    const args = [SCRIPT, "sign-launch", "--url", url, "--key", this.key, "--secret", this.secret, ...Object.entries(params).flatMap(([k, v]) => ["--param", `${k}=${v}`])];
    if (opts.timestamp !== undefined) args.push("--timestamp", String(opts.timestamp));
    if (opts.nonce !== undefined) args.push("--nonce", opts.nonce);
    const { stdout } = await promisify(execFile)(PYTHON, args);
    return JSON.parse(stdout) as Record<string, string>;
  }

  async stop(): Promise<void> {
    await stopProcess(this.child);
  }
}
