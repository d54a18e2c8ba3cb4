import { GatewayMessage, type LeaseMessage, PROTOCOL_VERSION, type RunnerMessage } from "@otter-edge/shared";
import WebSocket from "ws";

/**
 * A runner driven by the test: it speaks the real runner protocol over a real WebSocket, but grades
 * nothing. The test decides each grade, so passback tests control scores and their order exactly.
 */
export class ScriptedRunner {
  private readonly leases: LeaseMessage[] = [];
  private waiters: Array<() => void> = [];

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data) => {
      const message = GatewayMessage.parse(JSON.parse(data.toString()));
      if (message.type === "lease") this.leases.push(message);
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
    });
  }

  static async connect(gatewayUrl: string, token: string, capacity: number, otterVersions = ["7.0.0"]): Promise<ScriptedRunner> {
    const socket = new WebSocket(`${gatewayUrl.replace(/^http/, "ws")}/runner/v1/connect`, { headers: { authorization: `Bearer ${token}` } });
    await new Promise<void>((resolve, reject) => {
      socket.once("open", () => resolve());
      socket.once("error", reject);
    });
    const runner = new ScriptedRunner(socket);
    runner.send({ type: "hello", protocol: PROTOCOL_VERSION, runner: "scripted", capacity, otterVersions, holding: [], offerAnswers: false });
    return runner;
  }

  private send(message: RunnerMessage): void {
    this.socket.send(JSON.stringify(message));
  }

  /** The lease for this submission, once the gateway has handed it out. */
  async leaseFor(submissionId: string): Promise<LeaseMessage> {
    for (;;) {
      const index = this.leases.findIndex((l) => l.job.submissionId === submissionId);
      if (index >= 0) return this.leases.splice(index, 1)[0]!;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Reports a grade of `score` (as points out of 10) for the lease. */
  grade(lease: LeaseMessage, score: number): void {
    this.send({
      type: "result",
      lease: lease.lease,
      outcome: {
        kind: "graded",
        grade: { verdict: "graded", score, points: score * 10, maxPoints: 10, message: "", tests: [{ name: "q1", score: score * 10, maxScore: 10, visibility: "visible", output: "" }] },
        timings: {},
      },
    });
  }

  close(): void {
    this.socket.close();
  }
}
