import type { EnvironmentPrepared, Isolation, ProgressStage } from "@otter-edge/shared";

/** What a sandbox gets for one job: the student's notebook and the assignment's autograder. */
export interface SandboxInput {
  jobId: string;
  notebook: Buffer;
  autograder: Buffer;
  otterVersion: string;
  timeoutMs: number;
  /** Where the tests run (the assignment's setting): in the student's kernel as otter does, or in the grader. */
  isolation: Isolation;
  /** Aborted when the gateway revokes the lease or the runner shuts down: stop at once. */
  signal: AbortSignal;
  /** Told when the job waits for something slow before grading (its environment being built). */
  onProgress?: (stage: ProgressStage) => void;
}

/** How the grading process ended. `results` is the raw results.json, already size-capped. */
export interface SandboxRun {
  exitCode: number | null;
  timedOut: boolean;
  oomKilled: boolean;
  results: Buffer | null;
  resultsTooLarge: boolean;
  /** The last lines the grader printed, for staff and for the student's failure message. */
  logTail: string;
  timings: Record<string, number>;
  /** The container that graded it (docker sandbox), for logs and tests. */
  container?: string;
  /**
   * Resolves when the sandbox has cleaned up after the job (the container, already stopped,
   * removed). `run` returns before that, so the grade is reported first. Never rejects.
   */
  cleanup?: Promise<void>;
  /** The job waited for its assignment's environment image to be built or pulled: how, for staff. */
  environment?: EnvironmentPrepared;
}

export interface Sandbox {
  /** Human description for logs ("docker (runc)", "UNSANDBOXED local venv"). */
  readonly description: string;
  /** otter-grader versions this sandbox can grade with. */
  otterVersions(): Promise<string[]>;
  /** Runs `otter run`; throws InfrastructureError when the sandbox itself failed. */
  run(input: SandboxInput): Promise<SandboxRun>;
  /** Releases what the sandbox holds between jobs (warm containers) and waits for cleanups under way. */
  close?(): Promise<void>;
}

/** results.json larger than this is not read: a notebook cannot make the runner hold unbounded data. */
export const MAX_RESULTS_BYTES = 2 * 1024 * 1024;
export const LOG_TAIL_BYTES = 8 * 1024;
