import { describe, expect, it } from "vitest";
import { gradeFromRun } from "../runner/src/grading/results.js";
import type { SandboxRun } from "../runner/src/grading/sandbox.js";

const base: SandboxRun = { exitCode: 0, timedOut: false, oomKilled: false, results: null, resultsTooLarge: false, logTail: "", timings: {} };
const results = (value: unknown) => ({ ...base, results: Buffer.from(JSON.stringify(value)) });

/** How a finished container becomes a student's grade. */
describe("gradeFromRun", () => {
  it("sums otter's per-question scores and rounds the fraction to 3 decimals", () => {
    const grade = gradeFromRun(
      results({
        tests: [
          { name: "Public Tests", visibility: "visible", output: "q1 passed", status: "passed" },
          { name: "q1", score: 1, max_score: 1, visibility: "hidden", output: "ok" },
          { name: "q2", score: 1, max_score: 2, visibility: "hidden", output: "failed" },
          { name: "q3", score: 0, max_score: 3, visibility: "visible", output: "failed" },
        ],
      }),
      60_000,
    );
    expect(grade).toMatchObject({ verdict: "graded", points: 2, maxPoints: 6, score: 0.333 });
    expect(grade.tests.map((t) => [t.name, t.score, t.maxScore, t.visibility])).toEqual([
      ["Public Tests", 0, 0, "visible"],
      ["q1", 1, 1, "hidden"],
      ["q2", 1, 2, "hidden"],
      ["q3", 0, 3, "visible"],
    ]);
  });

  it("uses otter's top-level score when it gives one", () => {
    expect(gradeFromRun(results({ score: 4, tests: [{ name: "q1", score: 1, max_score: 5 }] }), 1).points).toBe(4);
  });

  it("clamps a score above the maximum to 1", () => {
    expect(gradeFromRun(results({ tests: [{ name: "q1", score: 7, max_score: 5 }] }), 1).score).toBe(1);
  });

  it("gives 0 with a timeout verdict when the wall clock ran out, whatever the results say", () => {
    const grade = gradeFromRun({ ...results({ tests: [{ name: "q1", score: 5, max_score: 5 }] }), timedOut: true }, 90_000);
    expect(grade).toMatchObject({ verdict: "timeout", score: 0 });
    expect(grade.message).toMatch(/90 s/);
  });

  it("gives 0 with an out-of-memory verdict when the container was OOM-killed", () => {
    expect(gradeFromRun({ ...base, exitCode: 137, oomKilled: true }, 1)).toMatchObject({ verdict: "out_of_memory", score: 0 });
  });

  it("reports an autograder that wrote no results, with the end of its output", () => {
    const grade = gradeFromRun({ ...base, exitCode: 1, logTail: "x".repeat(10_000) + "\nNameError: boom" }, 1);
    expect(grade).toMatchObject({ verdict: "autograder_failed", score: 0 });
    expect(grade.message).toMatch(/exit code 1/);
    expect(grade.message).toMatch(/NameError: boom/);
    expect(grade.message.length).toBeLessThanOrEqual(2_000);
  });

  it("discards results that are oversized or not otter's format", () => {
    expect(gradeFromRun({ ...base, resultsTooLarge: true }, 1)).toMatchObject({ verdict: "autograder_failed", score: 0 });
    expect(gradeFromRun({ ...base, results: Buffer.from("not json") }, 1)).toMatchObject({ verdict: "autograder_failed", score: 0 });
    expect(gradeFromRun(results({ tests: "all passed" }), 1)).toMatchObject({ verdict: "autograder_failed", score: 0 });
    expect(gradeFromRun(results({ tests: [{ name: "q1", score: "5", max_score: 5 }] }), 1)).toMatchObject({ verdict: "autograder_failed", score: 0 });
  });

  it("marks otter's 'Autograder Failed' entry as a failure verdict", () => {
    const grade = gradeFromRun(results({ tests: [{ name: "Autograder Failed", score: 0, max_score: 0, output: "Traceback…" }] }), 1);
    expect(grade).toMatchObject({ verdict: "autograder_failed", score: 0 });
  });

  it("truncates long test output", () => {
    const grade = gradeFromRun(results({ tests: [{ name: "q1", score: 1, max_score: 1, output: "y".repeat(50_000) }] }), 1);
    expect(grade.tests[0]!.output.length).toBeLessThan(5_000);
  });
});
