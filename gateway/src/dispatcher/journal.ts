import type { Grade, JobSpec, ProgressStage } from "@otter-edge/shared";
import type { Env } from "../env.js";
import { repostPolicyGrade } from "../passback/repost.js";
import { recordRegradeFailed, recordRegradeGrade, recordRegradeRequeued, regradeLeasedWrites } from "../regrade/record.js";
import { leasedWrites, recordFailed, recordGrade, recordProgress, recordRequeued, recordWaitingForEnvironment } from "./record.js";

/**
 * Where the Dispatcher writes what happens to a job: the submission's own row for a new submission,
 * the regrade's item row for a regrade job. The Dispatcher itself does not care which.
 */
export interface JobJournal {
  /** The D1 writes for a lease (`note`: how it came about, if not by a dispatch); the caller runs them. */
  leasedWrites(attempt: number, runner: string, note?: string): D1PreparedStatement[];
  requeued(reason: string): Promise<void>;
  /** The job waits for a fixed autograder.zip (its environment cannot be installed). */
  waitingForEnvironment(reason: string): Promise<void>;
  failed(reason: string): Promise<void>;
  /** Where a leased job stands before its result (shown on the student's page). */
  progress(stage: ProgressStage): Promise<void>;
  /** Records a grade; `passbackDue` says the outbox has a new row to deliver. */
  graded(token: string, runner: string, grade: Grade): Promise<{ recorded: boolean; passbackDue: boolean }>;
}

export function journalFor(env: Env, job: JobSpec): JobJournal {
  const id = job.submissionId;
  const regradeId = job.regradeId;
  if (regradeId === undefined) {
    return {
      leasedWrites: (attempt, runner, note) => leasedWrites(env.DB, id, attempt, runner, note),
      requeued: (reason) => recordRequeued(env.DB, id, reason),
      waitingForEnvironment: (reason) => recordWaitingForEnvironment(env.DB, id, reason),
      failed: (reason) => recordFailed(env.DB, id, reason),
      progress: (stage) => recordProgress(env.DB, id, stage),
      graded: async (token, runner, grade) => {
        const recorded = await recordGrade(env.DB, id, token, runner, grade);
        return { recorded, passbackDue: recorded };
      },
    };
  }
  return {
    leasedWrites: (attempt) => regradeLeasedWrites(env.DB, regradeId, id, attempt),
    requeued: (reason) => recordRegradeRequeued(env.DB, regradeId, id, reason),
    waitingForEnvironment: (reason) => recordRegradeRequeued(env.DB, regradeId, id, reason),
    failed: (reason) => recordRegradeFailed(env.DB, regradeId, id, reason),
    // A regrade's submission keeps its grade on its page meanwhile: nothing to show.
    progress: async () => {},
    graded: async (token, runner, grade) => {
      const result = await recordRegradeGrade(env.DB, regradeId, id, token, runner, grade);
      // Only a score that actually changed can change what the LMS should hold.
      const passbackDue = result.recorded && result.outcome === "changed" && result.submission ? await repostPolicyGrade(env, result.submission) : false;
      return { recorded: result.recorded, passbackDue };
    },
  };
}
