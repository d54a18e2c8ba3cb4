import { InfrastructureError } from "../../src/grading/errors.js";
import type { Sandbox, SandboxInput, SandboxRun } from "../../src/grading/sandbox.js";

/**
 * A sandbox whose jobs end when the test says so: for the agent's protocol, not for grading (the
 * Docker and local-venv sandboxes grade real notebooks in test/). NOT a sandbox: it runs nothing.
 * A job's abort signal ends it at once with an infrastructure error, as the real sandboxes do.
 */
export class ScriptedSandbox implements Sandbox {
  readonly description = "scripted (tests only; runs nothing)";
  private readonly running = new Map<string, { input: SandboxInput; finish: (run: SandboxRun) => void }>();
  private waiters: Array<() => void> = [];
  readonly started: string[] = [];
  readonly aborted: string[] = [];

  async otterVersions(): Promise<string[]> {
    return ["7.0.0"];
  }

  run(input: SandboxInput): Promise<SandboxRun> {
    return new Promise<SandboxRun>((resolve, reject) => {
      const onAbort = () => {
        this.running.delete(input.jobId);
        this.aborted.push(input.jobId);
        this.wake();
        reject(new InfrastructureError("grading aborted: the lease was revoked or the runner is stopping"));
      };
      if (input.signal.aborted) return onAbort();
      input.signal.addEventListener("abort", onAbort, { once: true });
      this.running.set(input.jobId, {
        input,
        finish: (run) => {
          input.signal.removeEventListener("abort", onAbort);
          this.running.delete(input.jobId);
          resolve(run);
        },
      });
      this.started.push(input.jobId);
      this.wake();
    });
  }

  /** Resolves once the job is running in this sandbox. */
  async whenRunning(jobId: string): Promise<SandboxInput> {
    for (;;) {
      const job = this.running.get(jobId);
      if (job) return job.input;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Resolves once the job was aborted. */
  async whenAborted(jobId: string): Promise<void> {
    while (!this.aborted.includes(jobId)) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Ends a running job as otter would: these tests' scores in results.json. */
  finish(jobId: string, scores: Record<string, number>): void {
    const job = this.running.get(jobId);
    if (!job) throw new Error(`job ${jobId} is not running`);
    const tests = Object.entries(scores).map(([name, score]) => ({ name, score, max_score: 1, visibility: "visible", output: "" }));
    job.finish({ exitCode: 0, timedOut: false, oomKilled: false, results: Buffer.from(JSON.stringify({ tests })), resultsTooLarge: false, logTail: "", timings: {} });
  }

  isRunning(jobId: string): boolean {
    return this.running.has(jobId);
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
