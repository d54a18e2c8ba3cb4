import type { Isolation, JobSpec } from "@otter-edge/shared";

/** What an assignment grades with: its autograders row, as drizzle names the columns. */
export interface GraderSettings {
  autograderSha256: string;
  otterVersion: string;
  timeoutSeconds: number;
  isolation: Isolation;
}

/** A submission as a job needs it. */
export interface JobSubmission {
  id: string;
  course: string;
  section: string;
  assignment: string;
  notebookSha256: string;
  notebookBytes: number;
}

/** The one place a job is made from a submission and its assignment's grader (intake, regrades, the sweeper). */
export function jobSpec(submission: JobSubmission, grader: GraderSettings, regradeId?: number): JobSpec {
  return {
    submissionId: submission.id,
    course: submission.course,
    section: submission.section,
    assignment: submission.assignment,
    notebook: { sha256: submission.notebookSha256, bytes: submission.notebookBytes },
    autograder: { sha256: grader.autograderSha256, otterVersion: grader.otterVersion },
    timeoutMs: grader.timeoutSeconds * 1000,
    isolation: grader.isolation,
    ...(regradeId === undefined ? {} : { regradeId }),
  };
}
