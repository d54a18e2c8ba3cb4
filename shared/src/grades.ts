import { z } from "zod";

/** How a grading ended, from the student's point of view. Anything that is not the student's fault is not a verdict: it is retried. */
export const Verdict = z.enum([
  "graded", // the tests ran; score is what they gave
  "timeout", // the notebook ran past the wall-clock limit
  "out_of_memory", // the container hit its memory cap
  "autograder_failed", // otter ran but could not execute the notebook (it raised, the kernel died, ...)
]);
export type Verdict = z.infer<typeof Verdict>;

export const TestResult = z.object({
  name: z.string().max(500),
  score: z.number().finite(),
  maxScore: z.number().finite().nonnegative(),
  visibility: z.enum(["visible", "hidden", "after_due_date", "after_published"]).default("visible"),
  output: z.string().max(20_000).default(""),
  /**
   * Set when the assignment's tests run in the grader ("grader" isolation) but this one ran in the
   * student's kernel, as plain otter runs it, because the bridge could not carry it: why. Staff only.
   */
  ranInKernel: z.string().max(500).optional(),
});
export type TestResult = z.infer<typeof TestResult>;

/** A grade as the runner reports it. `score` is the fraction 0..1 rounded to 3 decimals, as the old service and LTI 1.1 expect. */
export const Grade = z.object({
  verdict: Verdict,
  score: z.number().min(0).max(1),
  points: z.number().finite().nonnegative(),
  maxPoints: z.number().finite().nonnegative(),
  message: z.string().max(2_000),
  tests: z.array(TestResult).max(500),
});
export type Grade = z.infer<typeof Grade>;

/** Fraction of points, clamped to 0..1 and rounded to 3 decimals. */
export function scoreFraction(points: number, maxPoints: number): number {
  if (!(maxPoints > 0) || !Number.isFinite(points)) return 0;
  const fraction = Math.min(1, Math.max(0, points / maxPoints));
  return Math.round(fraction * 1000) / 1000;
}
