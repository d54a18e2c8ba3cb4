import { maxSatisfying } from "@renovatebot/pep440";
import { parseRequirement } from "@otter-edge/shared";
import { ApiError } from "./errors.js";

/**
 * Checks an environment's requirements against the package index the runners build from (its
 * simple API, PEP 691 JSON with PEP 700 `versions`), so that a misspelt package or a version that
 * does not exist is refused at upload instead of being found by the first student's job.
 * What only an install can find (a wheel missing for the image's platform, conflicting pins) is
 * found by the runner's build.
 */
export async function checkAgainstIndex(requirements: string[], indexUrl: string, timeoutMs = 10_000): Promise<void> {
  const base = indexUrl.replace(/\/+$/, "");
  await Promise.all(
    requirements.map(async (line) => {
      const requirement = parseRequirement(line, "requirements");
      let response: Response;
      try {
        response = await fetch(`${base}/${requirement.name}/`, {
          headers: { accept: "application/vnd.pypi.simple.v1+json" },
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (err) {
        throw new ApiError(503, "package_index_unavailable", `The package index did not answer about "${requirement.name}" (${String(err)}); try the upload again.`);
      }
      if (response.status === 404) {
        throw new ApiError(400, "unknown_package", `"${line}": the package index has no package named "${requirement.name}". Check the spelling in requirements.txt or environment.yml.`);
      }
      if (!response.ok) throw new ApiError(503, "package_index_unavailable", `The package index answered ${response.status} about "${requirement.name}"; try the upload again.`);
      const body = (await response.json().catch(() => null)) as { versions?: unknown } | null;
      const versions = Array.isArray(body?.versions) ? body.versions.filter((v): v is string => typeof v === "string") : null;
      // An index without PEP 700 version lists: the name exists, the version is left to the build.
      if (!versions || !requirement.specifier) return;
      if (!maxSatisfying(versions, requirement.specifier)) {
        const recent = versions.slice(-5).join(", ");
        throw new ApiError(400, "no_matching_version", `"${line}": no version of ${requirement.name} matches ${requirement.specifier} on the package index (latest: ${recent}).`);
      }
    }),
  );
}
