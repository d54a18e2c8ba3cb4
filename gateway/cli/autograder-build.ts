import { readFile } from "node:fs/promises";
import type { AdminClient } from "./admin-client.js";

export interface BuildOptions {
  /** The fleet's registry repository (host:port/path) the image is pushed to, for runners to pull. */
  registry?: string;
  /** JSON {username, password, serveraddress} for that registry (e.g. GKE Artifact Registry). */
  registryAuthFile?: string;
  /** A CA bundle pip must trust (a TLS-inspecting proxy to the package index). */
  caBundle?: string;
  /** Where the build log is written (<hash>.log). */
  logDir?: string;
}

/**
 * `otter-edge autograder build COURSE ASSIGNMENT`: builds the assignment's environment image on this
 * machine's Docker engine, from the zip the gateway holds, as a runner would for its first job, and
 * pushes it to the fleet's registry, so that no node has to build it while students wait. The
 * runner's own code does the work (loaded only for this command): same image, same labels, same tag.
 */
export async function buildAutograderEnvironment(client: AdminClient, course: string, assignment: string, options: BuildOptions) {
  const { zip, sha256, otterVersion } = await client.downloadAutograder(course, assignment);
  const [{ default: Docker }, { DockerSandbox }, { environmentHash, environmentOfZip }] = await Promise.all([
    import("dockerode"),
    import("../../runner/src/grading/docker-sandbox.js"),
    import("@otter-edge/shared"),
  ]);
  const docker = new Docker();
  // Limits of grading containers: this command runs none (a build's pip runs with Docker's defaults).
  const sandbox = new DockerSandbox(
    docker,
    { memoryBytes: 0, nanoCpus: 0, pidsLimit: 0, tmpfsBytes: 0 },
    {
      runnerName: "otter-edge-autograder-build",
      environments: {
        registry: options.registry,
        registryAuth: options.registryAuthFile ? JSON.parse(await readFile(options.registryAuthFile, "utf8")) : undefined,
        caBundle: options.caBundle,
        logDir: options.logDir,
      },
    },
  );
  const requirements = environmentOfZip(zip).requirements;
  const image = await sandbox.prepareEnvironment(zip, otterVersion);
  const stats = sandbox.environments.stats;
  return {
    course,
    assignment,
    autograder_sha256: sha256,
    otter_version: otterVersion,
    environment: requirements.length ? await environmentHash(otterVersion, requirements) : null,
    requirements,
    image: image.ref,
    // What happened: the grading image as it is (nothing to install), found here, pulled, or built.
    outcome: stats.baseSatisfied ? "grading_image_suffices" : stats.reused ? "already_here" : stats.pulled ? "pulled" : stats.builds ? "built" : "grading_image_suffices",
    pushed: stats.pushed > 0,
  };
}
