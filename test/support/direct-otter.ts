import { execFile } from "node:child_process";
import { chmod, chown, copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

export const GRADING_IMAGE = "otter-edge/grading:otter-7.0.0";

export interface DirectResult {
  points: number;
  maxPoints: number;
  tests: Array<{ name: string; score?: number; max_score?: number }>;
}

/**
 * Grades a notebook with plain `otter run` in the grading image, outside otter-edge entirely
 * (a bind-mounted directory, the image's default command): the reference the service must match.
 */
export async function otterRunDirectly(notebookPath: string, autograderZip: string): Promise<DirectResult> {
  const dir = await mkdtemp(join(tmpdir(), "otter-direct-"));
  try {
    await copyFile(notebookPath, join(dir, "submission.ipynb"));
    await copyFile(autograderZip, join(dir, "autograder.zip"));
    await mkdir(join(dir, "out"));
    for (const p of [dir, join(dir, "out"), join(dir, "submission.ipynb"), join(dir, "autograder.zip")]) await chown(p, 10001, 10001);
    await chmod(dir, 0o755);
    await promisify(execFile)("docker", ["run", "--rm", "--network", "none", "-v", `${dir}:/job`, GRADING_IMAGE], { maxBuffer: 16 * 1024 * 1024 });
    const results = JSON.parse(await readFile(join(dir, "out", "results.json"), "utf8")) as { score?: number; tests: DirectResult["tests"] };
    // Gradescope format: a top-level score when otter gives one, else the sum over the tests.
    const points = results.score ?? results.tests.reduce((s, t) => s + (t.score ?? 0), 0);
    return { points, maxPoints: results.tests.reduce((s, t) => s + (t.max_score ?? 0), 0), tests: results.tests };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
