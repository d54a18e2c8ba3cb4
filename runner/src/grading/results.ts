import { type Grade, type TestResult, scoreFraction } from "@otter-edge/shared";
import { z } from "zod";
import type { SandboxRun } from "./sandbox.js";

const MAX_TEST_OUTPUT = 4_000;

/**
 * otter's results.json (Gradescope format), as far as we read it. Parsed as JSON and checked, never
 * unpickled: otter's own Docker mode unpickles container output on the host, which we do not copy.
 */
const ResultsJson = z.object({
  score: z.number().finite().optional(),
  /** grade.py's own block: the tests that ran in the kernel although the assignment runs them in the grader, and why. */
  otter_edge: z
    .object({ kernel_tests: z.array(z.object({ name: z.string().max(500), reason: z.string() })).max(500).default([]) })
    .optional(),
  tests: z
    .array(
      z.object({
        name: z.string().max(500).optional(),
        score: z.number().finite().optional(),
        max_score: z.number().finite().nonnegative().optional(),
        visibility: z.enum(["visible", "hidden", "after_due_date", "after_published"]).optional(),
        output: z.string().optional(),
      }),
    )
    .max(500),
});

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}\n… (output truncated)`;
}

function zero(verdict: Grade["verdict"], message: string): Grade {
  return { verdict, score: 0, points: 0, maxPoints: 0, message: clip(message, 1_900), tests: [] };
}

/**
 * Turns a finished sandbox run into the student's grade. Only student-caused endings reach here:
 * a time-out, memory exhaustion or an autograder that could not run the notebook score 0 with a
 * message that says which.
 */
export function gradeFromRun(run: SandboxRun, timeoutMs: number): Grade {
  if (run.timedOut) return zero("timeout", `Grading stopped after ${Math.round(timeoutMs / 1000)} s: the notebook ran too long (an infinite loop?).`);
  if (run.oomKilled) return zero("out_of_memory", "The notebook used more memory than grading allows and was stopped.");
  if (run.resultsTooLarge) return zero("autograder_failed", "The grader's results were larger than allowed and were discarded.");
  if (!run.results) {
    return zero("autograder_failed", `The autograder could not finish (exit code ${run.exitCode}). Last output:\n${run.logTail.slice(-1_500)}`);
  }
  let parsed: z.infer<typeof ResultsJson>;
  try {
    parsed = ResultsJson.parse(JSON.parse(run.results.toString("utf8")));
  } catch {
    return zero("autograder_failed", "The autograder's results file was not in the expected format and was discarded.");
  }
  const inKernel = new Map((parsed.otter_edge?.kernel_tests ?? []).map((k) => [k.name, clip(k.reason, 450)]));
  const tests: TestResult[] = parsed.tests.map((t, i) => ({
    name: t.name ?? `test ${i + 1}`,
    score: t.score ?? 0,
    maxScore: t.max_score ?? 0,
    visibility: t.visibility ?? "visible",
    output: clip(t.output ?? "", MAX_TEST_OUTPUT),
    ...(t.name && inKernel.has(t.name) ? { ranInKernel: inKernel.get(t.name)! } : {}),
  }));
  // otter's own total when it gives one, so our score is exactly otter's.
  const points = parsed.score ?? tests.reduce((sum, t) => sum + t.score, 0);
  const maxPoints = tests.reduce((sum, t) => sum + t.maxScore, 0);
  // otter reports a notebook it could not execute as one "Autograder Failed" entry worth 0.
  const failed = tests.some((t) => /autograder failed/i.test(t.name));
  return {
    verdict: failed ? "autograder_failed" : "graded",
    score: scoreFraction(points, maxPoints),
    points: Math.round(points * 1000) / 1000,
    maxPoints: Math.round(maxPoints * 1000) / 1000,
    message: failed ? "The autograder could not run your notebook; see the test output for the error." : "",
    tests,
  };
}
