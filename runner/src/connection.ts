import { EventEmitter } from "node:events";
import { type GatewayMessage, GatewayMessage as GatewayMessageSchema, type RunnerMessage, backoffMs } from "@otter-edge/shared";
import WebSocket from "ws";
import type { Logger } from "./log.js";

export interface ConnectionOptions {
  gatewayUrl: string;
  token: string;
  /** Which of the gateway's Dispatcher shards this socket serves (0 unless the gateway has several). */
  shard?: number;
  log: Logger;
  /** Reconnect backoff bounds. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * The runner's socket to the gateway. Reconnects by itself with jittered exponential backoff; emits
 * `open` on each (re)connection, `message` for each valid gateway message, `close` when it drops.
 */
export class GatewayConnection extends EventEmitter<{ open: []; message: [GatewayMessage]; close: [] }> {
  private socket: WebSocket | null = null;
  private stopped = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: ConnectionOptions) {
    super();
  }

  get connected(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  send(message: RunnerMessage): boolean {
    if (!this.connected) return false;
    this.socket!.send(JSON.stringify(message));
    return true;
  }

  /** Closes for good (no reconnect); resolves when the socket is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const socket = this.socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      socket.once("close", () => resolve());
      socket.close(1000, "runner stopping");
    });
  }

  private connect(): void {
    const url = new URL("/runner/v1/connect", this.options.gatewayUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const shard = this.options.shard ?? 0;
    if (shard > 0) url.searchParams.set("shard", String(shard));
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${this.options.token}` }, handshakeTimeout: 15_000 });
    this.socket = socket;
    socket.on("open", () => {
      this.failures = 0;
      this.options.log.info({ gateway: url.origin, shard }, "connected to gateway");
      this.emit("open");
    });
    socket.on("message", (data) => {
      let message: GatewayMessage;
      try {
        message = GatewayMessageSchema.parse(JSON.parse(data.toString()));
      } catch (err) {
        this.options.log.warn({ err: String(err).slice(0, 300) }, "ignored a malformed gateway message");
        return;
      }
      this.emit("message", message);
    });
    socket.on("unexpected-response", (_req, res) => {
      this.options.log.error({ status: res.statusCode }, res.statusCode === 401 ? "the gateway refused the runner token" : "gateway refused the connection");
      socket.terminate();
    });
    socket.on("error", (err) => this.options.log.warn({ err: err.message, shard }, "gateway socket error"));
    socket.on("close", () => {
      if (this.socket === socket) this.socket = null;
      this.emit("close");
      if (!this.stopped) this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    this.failures += 1;
    const delay = backoffMs(this.failures, { baseMs: this.options.minBackoffMs ?? 500, maxMs: this.options.maxBackoffMs ?? 30_000 });
    this.options.log.info({ delayMs: Math.round(delay), shard: this.options.shard ?? 0 }, "reconnecting to gateway");
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
