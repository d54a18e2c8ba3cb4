import { describe, expect, it } from "vitest";
import { EnvironmentError, condaToPip, readEnvironment } from "@otter-edge/shared";

/** The reading of requirements.txt and environment.yml that the gateway (upload) and runner (build) share. */
describe("readEnvironment", () => {
  it("normalises names, extras, specifiers and markers, and drops comments, continuations and otter-grader", () => {
    const env = readEnvironment({
      requirementsTxt: "Otter_Grader[plugins]==7.0.0\n# a comment\nSeaborn >= 0.12 , <1  # inline\nrequests[socks,Security]\\\n  ==2.32.3\nfoo; python_version >= '3.8'\n\n",
    });
    expect(env.requirements).toEqual(["foo; python_version >= '3.8'", "requests[security,socks]==2.32.3", "seaborn>=0.12,<1"]);
  });

  it.each([
    ["numpy", "numpy"],
    ["numpy=1.26", "numpy==1.26.*"],
    ["numpy=1.26.4", "numpy==1.26.4"],
    ["numpy==1.26.4", "numpy==1.26.4"],
    ["numpy >=1.2,<2", "numpy>=1.2,<2"],
    ["numpy 1.26.* py311h64a7726_0", "numpy==1.26.*"],
    ["numpy=1.26.4=py311h64a7726_0", "numpy==1.26.4"],
    ["conda-forge::seaborn>=0.12", "seaborn>=0.12"],
    ["pytorch=2.1", "torch==2.1.*"],
  ])("maps the conda spec %s to the pip requirement %s", (conda, pip) => {
    const { requirement } = condaToPip(conda);
    expect(requirement && `${requirement.name}${requirement.specifier}`).toBe(pip);
  });

  it("skips conda tooling and refuses R", () => {
    expect(condaToPip("nb_conda_kernels").requirement).toBeNull();
    expect(condaToPip("pip").requirement).toBeNull();
    expect(() => condaToPip("r-ggplot2")).toThrow(EnvironmentError);
  });
});
