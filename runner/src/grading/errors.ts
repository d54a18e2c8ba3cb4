/**
 * A failure that is not the student's: the engine is down, the image is missing, a download failed.
 * The job is handed back and retried; it is never graded as 0.
 */
export class InfrastructureError extends Error {
  override readonly name = "InfrastructureError";
}
