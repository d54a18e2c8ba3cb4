import { exportJWK, generateKeyPair } from "jose";

/**
 * The LTI13_TOOL_KEYS value after a rotation: a new RS256 key first (it signs from the next deploy
 * on), the current keys after it (still served in the JWKS until you drop them).
 */
export async function rotatedToolKeys(current: string | undefined, kid = `otter-edge-${new Date().toISOString().slice(0, 10)}-${crypto.randomUUID().slice(0, 8)}`): Promise<string> {
  const { privateKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
  const previous = current ? (JSON.parse(current) as Array<{ kid: string }>) : [];
  if (previous.some((k) => k.kid === kid)) throw new Error(`a key with kid "${kid}" is already in LTI13_TOOL_KEYS`);
  return JSON.stringify([jwk, ...previous]);
}

/**
 * A Canvas developer key (LTI Key, "Paste JSON") for this gateway: its login, launch and JWKS URLs,
 * and the AGS scopes it uses.
 */
export function canvasDeveloperKey(toolUrl: string, title = "otter-edge") {
  const base = toolUrl.replace(/\/+$/, "");
  return {
    title,
    description: "Autograded Jupyter notebook assignments (otter-grader); grades posted through LTI Assignment and Grade Services.",
    oidc_initiation_url: `${base}/lti/1p3/login`,
    target_link_uri: `${base}/lti/1p3/launch`,
    public_jwk_url: `${base}/.well-known/jwks.json`,
    scopes: ["https://purl.imsglobal.org/spec/lti-ags/scope/lineitem", "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly", "https://purl.imsglobal.org/spec/lti-ags/scope/score"],
    extensions: [
      {
        platform: "canvas.instructure.com",
        privacy_level: "anonymous",
        settings: { placements: [{ placement: "assignment_selection", message_type: "LtiResourceLinkRequest", target_link_uri: `${base}/lti/1p3/launch` }] },
      },
    ],
    custom_fields: { otter_course: "$Canvas.course.sisSourceId", otter_assignment: "$Canvas.assignment.title" },
  };
}
