import { type Environment, EnvironmentError, readEnvironment } from "@otter-edge/shared";
import { unzipSync } from "fflate";
import { ApiError } from "./errors.js";

/**
 * Checks that an upload is an otter autograder.zip and reads the otter-grader version it pins
 * (runners pick the grading image by it) and the environment it asks for (installed on top).
 */
export function inspectAutograder(zip: Uint8Array): { otterVersion: string; environment: Environment } {
  const manifests = ["requirements.txt", "environment.yml"];
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(zip, { filter: (f) => f.name === "otter_config.json" || manifests.includes(f.name) });
  } catch {
    throw new ApiError(400, "invalid_autograder", "The upload is not a zip archive.");
  }
  if (!files["otter_config.json"]) {
    throw new ApiError(400, "invalid_autograder", "The zip has no otter_config.json at its top level; upload the autograder.zip that `otter assign` made.");
  }
  // otter assign pins itself in requirements.txt, or in environment.yml's pip section (otter 7 default).
  const text = manifests.map((name) => new TextDecoder().decode(files[name] ?? new Uint8Array())).join("\n");
  const pin = /^[\s-]*otter-grader(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*$/im.exec(text);
  if (!pin) {
    throw new ApiError(400, "otter_version_unpinned", "The zip's requirements.txt or environment.yml must pin otter-grader (otter-grader==X.Y.Z) so the right grading image is used.");
  }
  let environment: Environment;
  try {
    const text = (name: string) => (files[name] ? new TextDecoder().decode(files[name]) : undefined);
    environment = readEnvironment({ requirementsTxt: text("requirements.txt"), environmentYml: text("environment.yml") });
  } catch (err) {
    if (err instanceof EnvironmentError) throw new ApiError(400, err.code, err.message);
    throw err;
  }
  return { otterVersion: pin[1]!, environment };
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
