import { createHash } from "node:crypto";
import { type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { type GatewayMessage, type RunnerMessage, RunnerMessage as RunnerMessageSchema } from "@otter-edge/shared";
import { type WebSocket, WebSocketServer } from "ws";

/**
 * A gateway whose side of the runner protocol the test scripts, message by message: a real
 * WebSocket server (and the blob routes) on loopback, so the agent runs with its real connection,
 * reconnects and downloads. It is NOT the Dispatcher: it leases, acks and revokes only when told to.
 * What the real Dispatcher does is tested against workerd (gateway/test) and end to end (test/).
 */
export class ScriptedGateway {
  readonly url: string;
  private readonly sockets = new Map<number, WebSocket>();
  private readonly inbox: Array<{ shard: number; message: RunnerMessage }> = [];
  private waiters: Array<() => void> = [];
  private readonly blobs = new Map<string, Buffer>();
  /** Connections accepted per shard, reconnects included. */
  readonly connections = new Map<number, number>();

  private constructor(
    private readonly server: Server,
    private readonly wss: WebSocketServer,
  ) {
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    wss.on("connection", (ws, req) => {
      const shard = Number(new URL(req.url ?? "/", this.url).searchParams.get("shard") ?? 0);
      this.sockets.set(shard, ws);
      this.connections.set(shard, (this.connections.get(shard) ?? 0) + 1);
      ws.on("message", (data) => {
        this.inbox.push({ shard, message: RunnerMessageSchema.parse(JSON.parse(data.toString())) });
        this.wake();
      });
      ws.on("close", () => {
        if (this.sockets.get(shard) === ws) this.sockets.delete(shard);
        this.wake();
      });
      this.wake();
    });
  }

  static async start(): Promise<ScriptedGateway> {
    let gateway: ScriptedGateway | undefined;
    const server = createServer((req, res) => {
      const blob = gateway?.blobs.get(req.url?.split("/").pop() ?? "");
      if (req.headers.authorization !== "Bearer runner-token" || !blob) return void res.writeHead(blob ? 401 : 404).end();
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(blob);
    });
    const wss = new WebSocketServer({ server, path: "/runner/v1/connect" });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    gateway = new ScriptedGateway(server, wss);
    return gateway;
  }

  /** Serves these bytes at /runner/v1/{notebooks,autograders}/<sha256>; returns the hash. */
  blob(bytes: Buffer): string {
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    this.blobs.set(sha256, bytes);
    return sha256;
  }

  send(shard: number, message: GatewayMessage): void {
    const ws = this.sockets.get(shard);
    if (!ws) throw new Error(`no runner socket on shard ${shard}`);
    ws.send(JSON.stringify(message));
  }

  /** Drops the runner's socket on a shard, as a gateway restart does. */
  drop(shard: number): void {
    this.sockets.get(shard)?.terminate();
  }

  connected(shard: number): boolean {
    return this.sockets.has(shard);
  }

  /** The next message of this type from the runner on this shard (earlier ones of other types stay queued). */
  async next<T extends RunnerMessage["type"]>(type: T, shard = 0): Promise<Extract<RunnerMessage, { type: T }>> {
    return this.until(() => {
      const i = this.inbox.findIndex((m) => m.shard === shard && m.message.type === type);
      return i >= 0 ? (this.inbox.splice(i, 1)[0]!.message as Extract<RunnerMessage, { type: T }>) : undefined;
    });
  }

  /** Messages received and not yet taken by `next`. */
  pending(shard = 0): RunnerMessage[] {
    return this.inbox.filter((m) => m.shard === shard).map((m) => m.message);
  }

  /** Resolves with `check()`'s first defined answer, re-checked on every message or connection change. */
  async until<T>(check: () => T | undefined): Promise<T> {
    for (;;) {
      const answer = check();
      if (answer !== undefined) return answer;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  async stop(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
