import { execFile, spawn } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { InfrastructureError } from "./errors.js";
import { LOG_TAIL_BYTES, MAX_RESULTS_BYTES, type Sandbox, type SandboxInput, type SandboxRun } from "./sandbox.js";

/**
 * UNSANDBOXED: runs `otter run` from a local Python environment, as the runner's own user, with the
 * network and the runner's files in reach of student code. For a developer's laptop without Docker
 * only; the runner refuses it unless `--unsandboxed` is given, and logs a warning for every job.
 * It always grades as `otter run` does (the tests in the notebook's kernel), whatever the
 * assignment's isolation: the grader-side checks need the grading image.
 */
export class LocalVenvSandbox implements Sandbox {
  readonly description = "UNSANDBOXED local otter (development only)";

  constructor(private readonly otterBin: string) {}

  async otterVersions(): Promise<string[]> {
    try {
      const { stdout } = await promisify(execFile)(this.otterBin, ["--version"]);
      const match = /Otter-Grader version:\s*v?([0-9]\S*)/i.exec(stdout);
      return match ? [match[1]!] : [];
    } catch (err) {
      throw new InfrastructureError(`cannot run ${this.otterBin}: ${(err as Error).message}`);
    }
  }

  async run(input: SandboxInput): Promise<SandboxRun> {
    const dir = await mkdtemp(join(tmpdir(), "otter-edge-job-"));
    const t0 = performance.now();
    try {
      await Promise.all([writeFile(join(dir, "submission.ipynb"), input.notebook), writeFile(join(dir, "autograder.zip"), input.autograder), mkdir(join(dir, "out"))]);
      // Only what otter needs: no runner token or gateway address in the child's environment.
      const child = spawn(this.otterBin, ["run", "--no-logo", "-a", "autograder.zip", "-o", "out", "submission.ipynb"], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, MPLBACKEND: "Agg", LANG: "C.UTF-8" },
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let log = "";
      const keep = (chunk: Buffer) => (log = (log + chunk.toString("utf8")).slice(-LOG_TAIL_BYTES));
      child.stdout.on("data", keep);
      child.stderr.on("data", keep);
      let timedOut = false;
      const killGroup = () => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup();
      }, input.timeoutMs);
      input.signal.addEventListener("abort", killGroup);
      const exitCode = await new Promise<number | null>((resolve, reject) => {
        child.on("error", reject);
        child.on("close", (code) => resolve(code));
      }).finally(() => {
        clearTimeout(timer);
        input.signal.removeEventListener("abort", killGroup);
      });
      if (input.signal.aborted) throw new InfrastructureError("grading aborted");
      const resultsPath = join(dir, "out", "results.json");
      const size = await stat(resultsPath).then((s) => s.size).catch(() => -1);
      const tooLarge = size > MAX_RESULTS_BYTES;
      const results = size >= 0 && !tooLarge ? await readFile(resultsPath) : null;
      return { exitCode, timedOut, oomKilled: false, results, resultsTooLarge: tooLarge, logTail: log, timings: { totalMs: performance.now() - t0 } };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
