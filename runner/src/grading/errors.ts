/**
 * A failure that is not the student's: the engine is down, the image is missing, a download failed.
 * The job is handed back and retried; it is never graded as 0.
 */
export class InfrastructureError extends Error {
  override readonly name = "InfrastructureError";
}

/**
 * The build of an assignment's environment failed. `network` says the package index could not be
 * reached (the node's problem: retried like any infrastructure error); otherwise pip refused the
 * requirements themselves (the assignment's problem: its jobs wait for a fixed zip).
 */
export class EnvironmentBuildError extends InfrastructureError {
  constructor(
    message: string,
    readonly environment: string,
    readonly network: boolean,
  ) {
    super(message);
  }
}
