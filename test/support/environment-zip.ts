import { readFileSync } from "node:fs";
import { join } from "node:path";
import { strToU8, unzipSync, zipSync } from "fflate";
import { ROOT } from "../../scripts/local-stack.js";

const SAMPLE_ZIP = readFileSync(join(ROOT, "assignments", "sample", "dist", "autograder.zip"));

/**
 * The sample's autograder.zip with one more test, qenv, that imports tabulate (absent from the
 * grading image) and checks its version, and with `requirements` as its requirements.txt (null:
 * none). The full sample notebook scores 6/6 only in an environment with tabulate at `version`.
 */
export function sampleZipNeedingTabulate(requirements: string | null, version: string): Buffer {
  const files = unzipSync(new Uint8Array(SAMPLE_ZIP));
  const test = `OK_FORMAT = True

test = {'name': 'qenv', 'points': 1, 'suites': [{'cases': [{'code': ">>> import tabulate\\n>>> tabulate.__version__\\n'${version}'", 'hidden': False, 'locked': False}], 'scored': True, 'setup': '', 'teardown': '', 'type': 'doctest'}]}
`;
  files["tests/qenv.py"] = strToU8(test);
  if (requirements !== null) files["requirements.txt"] = strToU8(requirements);
  return Buffer.from(zipSync(files));
}
