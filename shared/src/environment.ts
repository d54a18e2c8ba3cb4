import { satisfies, validRange } from "@renovatebot/pep440";
import { unzipSync } from "fflate";
import { parse as parseYaml } from "yaml";

/**
 * An assignment's grading environment: the pip requirements its autograder.zip asks for, on top of
 * the grading image of its otter-grader version. Read by the gateway at upload (to refuse what
 * cannot be built, and to answer what will be) and by the runner (to build the image).
 *
 * Sources, as otter assign writes them and as `otter grade` / Gradescope install them:
 * requirements.txt, and environment.yml's conda dependencies and its `pip:` list. No conda channel
 * is reachable from the grading nodes, so conda packages are mapped to pip packages of the same name
 * (a few well-known renames aside); `python` is checked against the image's interpreter.
 */

/** The interpreter every grading image runs (Debian bookworm's CPython); see grading-image/Dockerfile. */
export const GRADING_PYTHON = "3.11.2";

/** Bumped when the runner's recipe for an environment image changes, so that images are rebuilt. */
export const ENVIRONMENT_RECIPE = 1;

export interface Environment {
  /** Normalised pip requirement lines, sorted and without duplicates; never otter-grader itself. */
  requirements: string[];
  /** What environment.yml asked of `python`, if anything (already checked against GRADING_PYTHON). */
  python: string | null;
  /** Conda packages that were turned into pip requirements, for the upload's answer. */
  fromConda: Array<{ conda: string; pip: string }>;
  /** What differs from `otter grade` without changing what can be built, for the upload's answer. */
  warnings: string[];
}

export type EnvironmentErrorCode = "invalid_requirement" | "unsupported_requirement" | "conda_only_package" | "python_version" | "invalid_environment_yml";

/** A requirement the service cannot install, found by reading the zip. */
export class EnvironmentError extends Error {
  constructor(
    readonly code: EnvironmentErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Installed by otter assign into every environment, or conda tooling: nothing to install here. */
const CONDA_TOOLING = new Set(["pip", "conda", "mamba", "nb-conda-kernels", "setuptools", "wheel"]);
/** Conda packages whose pip package has another name. */
const CONDA_RENAMES: Record<string, string> = {
  pytorch: "torch",
  "py-xgboost": "xgboost",
  "matplotlib-base": "matplotlib",
  pytables: "tables",
  "python-graphviz": "graphviz",
  "pyqt": "pyqt5",
};
/** Conda-only ecosystems that pip cannot provide: R, compilers and system libraries. */
const CONDA_ONLY = [/^r$/, /^r-/, /^rstudio/, /^cudatoolkit$/, /^nodejs$/, /^openjdk$/, /^gcc/, /^gxx/, /^compilers$/, /^libgcc/, /^_/];

const NAME = String.raw`[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`;
const VERSION = String.raw`[A-Za-z0-9.*+!_-]+`;
const SPECIFIER = String.raw`(?:~=|===|==|!=|<=|>=|<|>)\s*${VERSION}`;
const REQUIREMENT = new RegExp(String.raw`^(${NAME})\s*(\[\s*(?:${NAME}\s*(?:,\s*${NAME}\s*)*)?\])?\s*(\(?\s*(?:${SPECIFIER}\s*(?:,\s*${SPECIFIER}\s*)*)?\)?)?\s*(?:;\s*(.+))?$`);

/** PEP 503 normalisation: how the package index names a project. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

export interface Requirement {
  name: string;
  extras: string[];
  /** The version specifier without spaces ("" when any version will do). */
  specifier: string;
  marker: string | null;
}

/** Parses one PEP 508 requirement as pip reads it from requirements.txt; refuses what needs the network at grading time or an index option. */
export function parseRequirement(line: string, where: string): Requirement {
  const text = line.trim();
  if (text.startsWith("-")) {
    throw new EnvironmentError("unsupported_requirement", `${where}: "${text}": pip options (-r, -e, --index-url, ...) are not supported; list the packages themselves.`);
  }
  if (/^[a-z+]+:\/\//i.test(text) || /\s@\s|^[^;]*@/.test(text) || text.startsWith(".") || text.startsWith("/")) {
    throw new EnvironmentError("unsupported_requirement", `${where}: "${text}": direct URLs, VCS links and local paths are not supported; name a package from the package index with a version.`);
  }
  const match = REQUIREMENT.exec(text);
  if (!match) throw new EnvironmentError("invalid_requirement", `${where}: "${text}" is not a valid requirement (expected e.g. "tabulate==0.9.0" or "seaborn>=0.12").`);
  const [, name, extras, spec, marker] = match;
  const specifier = (spec ?? "").replace(/[()\s]/g, "");
  if (specifier && !validRange(specifier)) throw new EnvironmentError("invalid_requirement", `${where}: "${text}": "${specifier}" is not a valid version specifier.`);
  return {
    name: normalizeName(name!),
    extras: (extras ?? "").replace(/[[\]\s]/g, "").split(",").filter(Boolean).map(normalizeName).sort(),
    specifier,
    marker: marker?.trim() || null,
  };
}

export function formatRequirement(r: Requirement): string {
  return `${r.name}${r.extras.length ? `[${r.extras.join(",")}]` : ""}${r.specifier}${r.marker ? `; ${r.marker}` : ""}`;
}

/** requirements.txt lines, comments and line continuations handled as pip does. */
function requirementLines(text: string): string[] {
  return text
    .replace(/\\\r?\n/g, "")
    .split(/\r?\n/)
    .map((l) => l.replace(/(^|\s)#.*$/, "").trim())
    .filter(Boolean);
}

/** A conda match spec ("numpy", "numpy=1.26", "conda-forge::numpy>=1.2", "numpy 1.26.* py311_0") as a pip requirement. */
export function condaToPip(spec: string): { name: string; requirement: Requirement | null } {
  const text = spec.trim().replace(/^[^:\s]+::/, "");
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$/.exec(text);
  if (!m) throw new EnvironmentError("invalid_environment_yml", `environment.yml: "${spec}" is not a conda package spec.`);
  const conda = normalizeName(m[1]!);
  if (CONDA_ONLY.some((re) => re.test(conda))) {
    throw new EnvironmentError("conda_only_package", `environment.yml: "${spec}" is a conda-only package (no conda channel is reachable from the grading nodes, and pip has no package of that name). Remove it, or use a pip package.`);
  }
  // A build string ("1.26.* py311_0", "=1.26=py311_0") is conda's alone.
  let version = m[2]!.trim().split(/\s+/)[0]!;
  if (/^=?[^=<>!~]+=[^=]/.test(version)) version = version.replace(/^(=?[^=]+)=.*$/, "$1");
  let specifier = "";
  if (version) {
    if (/^[<>!~]|^==/.test(version)) specifier = version;
    else {
      // conda's "=1.26" and "1.26" mean 1.26.*; a full "1.26.4" is that version.
      const bare = version.replace(/^=/, "");
      specifier = bare.includes("*") || /^\d+(\.\d+){2,}$/.test(bare) ? `==${bare}` : `==${bare}.*`;
    }
    if (!validRange(specifier)) throw new EnvironmentError("invalid_environment_yml", `environment.yml: "${spec}": cannot read the version "${version}".`);
  }
  if (CONDA_TOOLING.has(conda) || conda === "python") return { name: conda, requirement: conda === "python" ? { name: "python", extras: [], specifier, marker: null } : null };
  return { name: conda, requirement: { name: CONDA_RENAMES[conda] ?? conda, extras: [], specifier, marker: null } };
}

function environmentYml(text: string): { conda: string[]; pip: string[] } {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new EnvironmentError("invalid_environment_yml", `environment.yml is not valid YAML: ${String(err).split("\n")[0]}`);
  }
  const deps = (doc as { dependencies?: unknown } | null)?.dependencies ?? [];
  if (!Array.isArray(deps)) throw new EnvironmentError("invalid_environment_yml", "environment.yml: `dependencies` must be a list.");
  const conda: string[] = [];
  const pip: string[] = [];
  for (const dep of deps) {
    if (typeof dep === "string" || typeof dep === "number") conda.push(String(dep));
    else if (dep && typeof dep === "object" && Array.isArray((dep as { pip?: unknown }).pip)) pip.push(...((dep as { pip: unknown[] }).pip.map(String)));
    else throw new EnvironmentError("invalid_environment_yml", `environment.yml: cannot read the dependency ${JSON.stringify(dep)}.`);
  }
  return { conda, pip };
}

/** The environment asked for by an autograder.zip's requirements.txt and environment.yml. */
export function readEnvironment(files: { requirementsTxt?: string; environmentYml?: string }): Environment {
  const requirements = new Map<string, Requirement>();
  const fromConda: Environment["fromConda"] = [];
  let python: string | null = null;
  const warnings: string[] = [];
  const add = (r: Requirement) => {
    if (r.name === "otter-grader") return; // the grading image is chosen by otter's version
    requirements.set(formatRequirement(r), r);
  };
  for (const line of requirementLines(files.requirementsTxt ?? "")) add(parseRequirement(line, "requirements.txt"));
  if (files.environmentYml !== undefined) {
    const yml = environmentYml(files.environmentYml);
    for (const line of yml.pip.flatMap(requirementLines)) add(parseRequirement(line, "environment.yml (pip)"));
    for (const spec of yml.conda) {
      const { name, requirement } = condaToPip(spec);
      if (!requirement) continue;
      if (name === "python") {
        python = requirement.specifier || null;
        if (python && !satisfies(GRADING_PYTHON, python)) {
          // otter assign writes its own default (python=3.13 in otter 7.0) whatever the course used:
          // another Python 3 is graded on the image's and said so; another major version cannot be.
          const asked = python.replace(/^[=<>!~]+/, "");
          if (!asked.startsWith("3")) {
            throw new EnvironmentError("python_version", `environment.yml asks for python ${asked}; the grading images run CPython ${GRADING_PYTHON}.`);
          }
          warnings.push(`environment.yml asks for python ${asked}; graded with CPython ${GRADING_PYTHON}, the grading image's (as plain \`otter run\` in that image would).`);
        }
        continue;
      }
      fromConda.push({ conda: spec.trim(), pip: formatRequirement(requirement) });
      add(requirement);
    }
  }
  return { requirements: [...requirements.keys()].sort(), python, fromConda, warnings };
}

/** Reads the environment files at the top of an autograder.zip. */
export function environmentOfZip(zip: Uint8Array): Environment {
  const files = unzipSync(zip, { filter: (f) => f.name === "requirements.txt" || f.name === "environment.yml" });
  const text = (name: string) => (files[name] ? new TextDecoder().decode(files[name]) : undefined);
  return readEnvironment({ requirementsTxt: text("requirements.txt"), environmentYml: text("environment.yml") });
}

/**
 * The content address of an environment image: the otter version (its base image), the
 * requirements and the recipe. The same zip contents give the same hash on every node.
 */
export async function environmentHash(otterVersion: string, requirements: string[]): Promise<string> {
  const canonical = JSON.stringify({ recipe: ENVIRONMENT_RECIPE, otterVersion, requirements: [...requirements].sort() });
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
