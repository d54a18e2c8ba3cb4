import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Docker from "dockerode";
import { type Environment, type EnvironmentPrepared, environmentHash } from "@otter-edge/shared";
import { bounded, exitOf } from "./container-exit.js";
import { EnvironmentBuildError } from "./errors.js";
import { packFiles } from "./tar.js";

/** Environment images carry the hash of what they install and the id of the grading image they were built on. */
export const ENVIRONMENT_LABEL = "org.otter-edge.environment";
export const ENVIRONMENT_BASE_LABEL = "org.otter-edge.environment-base";
const ENVIRONMENT_REPO = "otter-edge/env";
/** The grading image's container-contract label (docker-sandbox.ts SANDBOX_LABEL), overridden on environment images. */
const SANDBOX_LABEL = "org.otter-edge.sandbox";
/** On every image of an environment build, intermediate ones included, so that a failed build's are found and removed. */
const BUILD_LABEL = "org.otter-edge.environment-build";
/** Build logs are kept whole on disk; errors and staff pages show their end. */
const BUILD_ERROR_TAIL = 1500;
const BUILD_LOG_TAIL = 6000;
/** pip's offline dry run in the grading image takes seconds; beyond this the engine is wedged. */
const DRY_RUN_LIMIT_MS = 120_000;
/** How often that dry run's container is inspected, in case the engine's answer to wait is lost. */
const DRY_RUN_POLL_MS = 1_000;
const seconds = (since: number) => Math.round(performance.now() - since) / 1000;

export interface GradingImage {
  ref: string;
  id: string;
  /** Whether its containers may start before their job (the warm pool): only grading images proper. */
  warm: boolean;
  /** Set on the image a call waited for while it was built or pulled (not on one found on the node). */
  prepared?: EnvironmentPrepared;
}

export interface EnvironmentImagesOptions {
  /**
   * A CA bundle (PEM file) that pip in the build must trust, for nodes whose way to the package
   * index goes through a TLS-inspecting proxy. Copied into the build only for the install step.
   */
  caBundle?: string;
  /** Where each build's full log is written (`<hash>.log`). */
  logDir?: string;
  /** Environment images together may add at most this many bytes on top of their grading images; the least recently used go first. */
  budgetBytes?: number;
  buildTimeoutMs?: number;
  /**
   * A registry repository (e.g. "registry.internal:5000/otter-edge") shared by the fleet: a node
   * pulls an environment image another node (or `otter-edge autograder build`) built, and pushes
   * the ones it builds. Unset: each node builds its own.
   */
  registry?: string;
  /**
   * Credentials for that registry, as the Engine API takes them (e.g. for GKE Artifact Registry,
   * username "oauth2accesstoken" and a token). The engine does not read a client's docker login.
   */
  registryAuth?: { username?: string; password?: string; serveraddress?: string };
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

/** pip settings passed from the runner's environment into the build, when set (a node's proxy or mirror). */
export const PASSED_BUILD_ARGS = ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"];

/** pip's words for a package index it could not reach, as opposed to requirements it could not satisfy. */
const NETWORK_FAILURE = /Could not fetch URL|NewConnectionError|ConnectTimeout|ReadTimeout|Temporary failure in name resolution|Max retries exceeded|SSLError|Network is unreachable|Connection refused|timed out/i;

/**
 * An assignment's grading environment as a Docker image: its grading image with the packages of
 * its autograder.zip installed on top, as `otter grade` and Gradescope install them. The image is
 * content-addressed (otter version + requirements + recipe, see environmentHash), built on first
 * use with the package index reachable (grading containers never are), built once however many
 * jobs ask at the same time, and removed least recently used beyond the disk budget. When the
 * grading image already satisfies every requirement (otter assign lists numpy, pandas, ...), it
 * is used as it is, warm pool included.
 */
export class EnvironmentImages {
  private readonly inFlight = new Map<string, Promise<GradingImage>>();
  /** Per hash and grading image: whether the grading image already has everything (asked once). */
  private readonly satisfiedByBase = new Map<string, boolean>();
  private readonly lastUsed = new Map<string, number>();
  /** Keys being pulled or built now, and the jobs to tell once that starts (see imageFor's onPreparing). */
  private readonly preparing = new Map<string, { started: boolean; listeners: Array<() => void> }>();
  readonly stats = { builds: 0, buildFailures: 0, baseSatisfied: 0, reused: 0, removed: 0, pulled: 0, pushed: 0 };

  constructor(
    private readonly docker: Docker,
    private readonly options: EnvironmentImagesOptions = {},
  ) {}

  /**
   * The image to grade an assignment with this environment in (building it if needed).
   * `onPreparing` is called if the job has to wait for a pull or a build (its own or another job's).
   */
  async imageFor(base: GradingImage, otterVersion: string, environment: Environment, onPreparing?: () => void): Promise<GradingImage> {
    if (environment.requirements.length === 0) return base;
    const hash = await environmentHash(otterVersion, environment.requirements);
    const key = `${hash}:${base.id}`;
    let pending = this.inFlight.get(key);
    if (!pending) {
      this.preparing.set(key, { started: false, listeners: [] });
      pending = this.resolve(base, hash, otterVersion, environment.requirements).finally(() => {
        this.inFlight.delete(key);
        this.preparing.delete(key);
      });
      this.inFlight.set(key, pending);
    }
    const preparing = this.preparing.get(key);
    if (onPreparing && preparing) {
      if (preparing.started) onPreparing();
      else preparing.listeners.push(onPreparing);
    }
    const image = await pending;
    this.lastUsed.set(image.id, Date.now());
    return image;
  }

  private async resolve(base: GradingImage, hash: string, otterVersion: string, requirements: string[]): Promise<GradingImage> {
    const key = `${hash}:${base.id}`;
    const existing = await this.find(hash, base.id);
    if (existing) {
      this.stats.reused += 1;
      return existing;
    }
    if (!this.satisfiedByBase.has(key)) this.satisfiedByBase.set(key, await this.baseSatisfies(base, requirements));
    if (this.satisfiedByBase.get(key)) {
      this.stats.baseSatisfied += 1;
      return base;
    }
    this.startedPreparing(key);
    const t0 = performance.now();
    const pulled = await this.pull(hash, base);
    if (pulled) {
      this.stats.pulled += 1;
      return { ...pulled, prepared: { hash, how: "pulled", seconds: seconds(t0), log: "" } };
    }
    const image = await this.build(base, hash, otterVersion, requirements);
    await this.push(hash, base);
    await this.prune(image.id).catch((err) => this.options.log?.warn({ err: String(err) }, "could not prune environment images"));
    const log = (await this.buildLog(hash)) ?? "";
    return { ...image, prepared: { hash, how: "built", seconds: seconds(t0), log: log.slice(-BUILD_LOG_TAIL) } };
  }

  private startedPreparing(key: string): void {
    const preparing = this.preparing.get(key);
    if (!preparing || preparing.started) return;
    preparing.started = true;
    for (const listener of preparing.listeners.splice(0)) listener();
  }

  /** The image's name: content-addressed by the environment and the grading image it is built on. */
  private tagOf(hash: string, base: GradingImage): string {
    return `${hash.slice(0, 16)}-${base.id.replace(/^sha256:/, "").slice(0, 12)}`;
  }

  private remoteRef(hash: string, base: GradingImage): string | undefined {
    return this.options.registry ? `${this.options.registry.replace(/\/+$/, "")}/env:${this.tagOf(hash, base)}` : undefined;
  }

  /** Runs a pull or push to its end; rejects with the engine's error. */
  private follow(stream: NodeJS.ReadableStream): Promise<void> {
    return new Promise((resolve, reject) =>
      this.docker.modem.followProgress(
        stream,
        (err) => (err ? reject(err) : resolve()),
        (event: { error?: string }) => {
          if (event.error) reject(new Error(event.error));
        },
      ),
    );
  }

  /** The environment image from the fleet's registry, if some node pushed it; never fatal. */
  private async pull(hash: string, base: GradingImage): Promise<GradingImage | undefined> {
    const ref = this.remoteRef(hash, base);
    if (!ref) return undefined;
    try {
      await this.follow(await this.docker.pull(ref, { authconfig: this.options.registryAuth ?? {} }));
    } catch (err) {
      this.options.log?.info({ environment: hash.slice(0, 16), ref, err: String(err).slice(0, 200) }, "environment image not in the registry: building it");
      return undefined;
    }
    // Only an image that says it is this environment on this grading image is used.
    const pulled = await this.find(hash, base.id);
    if (!pulled) this.options.log?.warn({ environment: hash.slice(0, 16), ref }, "the registry's image is not this environment: building it");
    else this.options.log?.info({ environment: hash.slice(0, 16), ref }, "environment image pulled from the registry");
    return pulled;
  }

  private async push(hash: string, base: GradingImage): Promise<void> {
    const ref = this.remoteRef(hash, base);
    if (!ref) return;
    const [repo, tag] = [ref.slice(0, ref.lastIndexOf(":")), ref.slice(ref.lastIndexOf(":") + 1)];
    const authconfig = this.options.registryAuth ?? {};
    try {
      // As the docker CLI pushes: repository and tag apart. The engine refuses a push without an
      // X-Registry-Auth header, even an empty one.
      await this.follow(await this.docker.getImage(repo).push({ tag, authconfig }));
      this.stats.pushed += 1;
      this.options.log?.info({ environment: hash.slice(0, 16), ref }, "environment image pushed");
    } catch (err) {
      this.options.log?.warn({ environment: hash.slice(0, 16), ref, err: String(err).slice(0, 300) }, "could not push the environment image (other nodes will build it)");
    }
  }

  private async find(hash: string, baseId: string): Promise<GradingImage | undefined> {
    const images = await this.docker.listImages({ filters: { label: [`${ENVIRONMENT_LABEL}=${hash}`, `${ENVIRONMENT_BASE_LABEL}=${baseId}`] } });
    const image = images.sort((a, b) => b.Created - a.Created)[0];
    return image && { ref: image.RepoTags?.find((t) => t !== "<none>:<none>") ?? image.Id, id: image.Id, warm: false };
  }

  /** Whether pip, offline in the grading image, finds every requirement already installed. */
  private async baseSatisfies(base: GradingImage, requirements: string[]): Promise<boolean> {
    const container = await this.docker.createContainer({
      Image: base.id,
      Entrypoint: ["/opt/otter/bin/python", "-m", "pip", "install", "--dry-run", "--no-index", "--no-cache-dir", "--quiet", "--disable-pip-version-check", ...requirements],
      Cmd: [],
      User: "10001:10001",
      HostConfig: { NetworkMode: "none", AutoRemove: false, ReadonlyRootfs: true, Tmpfs: { "/tmp": "rw,size=64m" } },
    });
    try {
      await container.start();
      const exit = exitOf(container, DRY_RUN_POLL_MS);
      try {
        return (await bounded(exit.exited, DRY_RUN_LIMIT_MS, "pip's dry run of the requirements")) === 0;
      } finally {
        exit.stop();
      }
    } finally {
      await container.remove({ force: true, v: true }).catch(() => undefined);
    }
  }

  private dockerfile(base: GradingImage, hash: string, otterVersion: string, buildArgs: string[], withCa: boolean): string {
    const pipEnv = withCa ? "PIP_CERT=/tmp/otter-edge-env/ca.pem " : "";
    return [
      `FROM ${base.id}`,
      // First, so that every intermediate image of the build carries it too: a build that fails
      // leaves its intermediate images behind (newer than the grading image, with its otter
      // version label), and a runner listing grading images by the sandbox label must never take
      // one for its otter version's newest. The same goes for runners that predate environments.
      `LABEL ${SANDBOX_LABEL}=environment ${BUILD_LABEL}=${hash}`,
      ...buildArgs.map((name) => `ARG ${name}`),
      "USER 0:0",
      "COPY . /tmp/otter-edge-env/",
      // As otter grade's environment does: pip installs the zip's requirements into otter's own
      // environment. The grading driver must still import and be the zip's otter version.
      `RUN ${pipEnv}/opt/otter/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off -r /tmp/otter-edge-env/requirements.txt \\`,
      ` && /opt/otter/bin/otter --version | grep -q "version: ${otterVersion}" \\`,
      " && /opt/otter/bin/python -c 'import otter.api, ipykernel' \\",
      " && rm -rf /tmp/otter-edge-env",
      "USER 10001:10001",
      // Last: only a complete build is this environment's image (find() looks for these).
      `LABEL ${ENVIRONMENT_LABEL}=${hash} ${ENVIRONMENT_BASE_LABEL}=${base.id}`,
      "",
    ].join("\n");
  }

  private async build(base: GradingImage, hash: string, otterVersion: string, requirements: string[]): Promise<GradingImage> {
    const t0 = performance.now();
    const tag = `${ENVIRONMENT_REPO}:${this.tagOf(hash, base)}`;
    const remote = this.remoteRef(hash, base);
    const buildArgs = PASSED_BUILD_ARGS.filter((name) => process.env[name]);
    const ca = this.options.caBundle ? await readFile(this.options.caBundle) : undefined;
    const context = packFiles(
      [
        { name: "Dockerfile", content: Buffer.from(this.dockerfile(base, hash, otterVersion, buildArgs, Boolean(ca))) },
        { name: "requirements.txt", content: Buffer.from(requirements.join("\n") + "\n") },
        ...(ca ? [{ name: "ca.pem", content: ca }] : []),
      ],
      0,
    );
    this.options.log?.info({ environment: hash.slice(0, 16), tag, requirements }, "building an environment image");
    const lines: string[] = [];
    let failure: string | undefined;
    try {
      const stream = await this.docker.buildImage(context, {
        t: tag,
        forcerm: true,
        buildargs: Object.fromEntries(buildArgs.map((name) => [name, process.env[name]!])),
      });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the build took longer than ${Math.round((this.options.buildTimeoutMs ?? 900_000) / 1000)} s`)), this.options.buildTimeoutMs ?? 900_000);
        this.docker.modem.followProgress(
          stream,
          (err) => {
            clearTimeout(timer);
            if (err) reject(err);
            else resolve();
          },
          (event: { stream?: string; error?: string }) => {
            if (event.stream) lines.push(event.stream);
            if (event.error) failure = event.error;
          },
        );
      });
    } catch (err) {
      failure ??= String(err);
    }
    const log = lines.join("");
    await this.keepLog(hash, log + (failure ? `\nERROR: ${failure}\n` : ""));
    if (failure) {
      this.stats.buildFailures += 1;
      // The steps that succeeded left dangling intermediate images: of no use, and on disk.
      await this.docker.pruneImages({ filters: { dangling: ["true"], label: [`${BUILD_LABEL}=${hash}`] } }).catch(() => undefined);
      const network = NETWORK_FAILURE.test(log) || NETWORK_FAILURE.test(failure);
      throw new EnvironmentBuildError(`installing the assignment's requirements failed (environment ${hash.slice(0, 16)}): ${failure.trim()}\n${log.slice(-BUILD_ERROR_TAIL)}`, hash, network);
    }
    const built = await this.find(hash, base.id);
    if (built && remote) {
      const [repo, remoteTag] = [remote.slice(0, remote.lastIndexOf(":")), remote.slice(remote.lastIndexOf(":") + 1)];
      await this.docker.getImage(built.id).tag({ repo, tag: remoteTag });
    }
    if (!built) throw new EnvironmentBuildError(`the environment image ${tag} was built but is not on the engine`, hash, true);
    this.stats.builds += 1;
    this.options.log?.info({ environment: hash.slice(0, 16), tag, seconds: Math.round(performance.now() - t0) / 1000 }, "environment image built");
    return built;
  }

  private async keepLog(hash: string, log: string): Promise<void> {
    if (!this.options.logDir) return;
    await mkdir(this.options.logDir, { recursive: true });
    await writeFile(join(this.options.logDir, `${hash}.log`), log);
  }

  /** The full log of the last build of an environment on this runner, if kept. */
  async buildLog(hash: string): Promise<string | undefined> {
    if (!this.options.logDir) return undefined;
    return readFile(join(this.options.logDir, `${hash}.log`), "utf8").catch(() => undefined);
  }

  /**
   * Removes environment images, least recently used first, until the bytes they add on top of their
   * grading images fit the budget. An image a container still uses is skipped (the engine refuses).
   */
  async prune(keep?: string): Promise<void> {
    const budget = this.options.budgetBytes;
    if (budget === undefined) return;
    const images = await this.docker.listImages({ filters: { label: [ENVIRONMENT_LABEL] } });
    const baseSizes = new Map<string, number>();
    for (const image of images) {
      const baseId = image.Labels?.[ENVIRONMENT_BASE_LABEL];
      if (baseId && !baseSizes.has(baseId)) baseSizes.set(baseId, await this.docker.getImage(baseId).inspect().then((i) => i.Size, () => 0));
    }
    const added = (image: Docker.ImageInfo) => Math.max(0, image.Size - (baseSizes.get(image.Labels?.[ENVIRONMENT_BASE_LABEL] ?? "") ?? 0));
    let total = images.reduce((sum, image) => sum + added(image), 0);
    const oldestFirst = images.sort((a, b) => (this.lastUsed.get(a.Id) ?? a.Created * 1000) - (this.lastUsed.get(b.Id) ?? b.Created * 1000));
    for (const image of oldestFirst) {
      if (total <= budget) break;
      if (image.Id === keep) continue;
      const removed = await this.docker.getImage(image.Id).remove({ force: false }).then(() => true, () => false);
      if (!removed) continue;
      total -= added(image);
      this.stats.removed += 1;
      this.lastUsed.delete(image.Id);
      this.options.log?.info({ image: image.RepoTags?.[0] ?? image.Id.slice(7, 19), addedBytes: added(image) }, "removed an environment image (disk budget)");
    }
  }
}
