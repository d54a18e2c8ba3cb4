import { unzipSync } from "fflate";
import { ApiError } from "./errors.js";

/**
 * Checks that an upload is an otter autograder.zip and reads the otter-grader version it pins in
 * requirements.txt: runners pick the grading image by that version.
 */
export function inspectAutograder(zip: Uint8Array): { otterVersion: string } {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(zip, { filter: (f) => f.name === "otter_config.json" || f.name === "requirements.txt" });
  } catch {
    throw new ApiError(400, "invalid_autograder", "The upload is not a zip archive.");
  }
  if (!files["otter_config.json"]) {
    throw new ApiError(400, "invalid_autograder", "The zip has no otter_config.json at its top level; upload the autograder.zip that `otter assign` made.");
  }
  const requirements = new TextDecoder().decode(files["requirements.txt"] ?? new Uint8Array());
  const pin = /^\s*otter-grader\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*$/im.exec(requirements);
  if (!pin) {
    throw new ApiError(400, "otter_version_unpinned", "requirements.txt in the zip must pin otter-grader (otter-grader==X.Y.Z) so the right grading image is used.");
  }
  return { otterVersion: pin[1]! };
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
