import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { scoreBody, scoresUrl } from "../src/lti13/ags.js";
import { BASE, adminFetch, issueToken } from "./helpers.js";

/** The parts of LTI 1.3 that need no platform; the whole flow runs against a platform stand-in in test/lti13.test.ts. */
describe("LTI 1.3 AGS messages", () => {
  it("puts /scores after the line item's path and before its query (Moodle's line items carry one)", () => {
    expect(scoresUrl("https://moodle.example/mod/lti/services.php/2/lineitems/7/lineitem?type_id=3")).toBe("https://moodle.example/mod/lti/services.php/2/lineitems/7/lineitem/scores?type_id=3");
    expect(scoresUrl("https://canvas.example/api/lti/courses/1/line_items/5/")).toBe("https://canvas.example/api/lti/courses/1/line_items/5/scores");
  });

  it("sends a completed, fully graded score with a millisecond timestamp", () => {
    expect(scoreBody("sub-1", 0.75, new Date("2026-12-05T10:00:00.123Z"))).toEqual({
      userId: "sub-1",
      scoreGiven: 0.75,
      scoreMaximum: 1,
      activityProgress: "Completed",
      gradingProgress: "FullyGraded",
      timestamp: "2026-12-05T10:00:00.123Z",
    });
  });
});

describe("LTI 1.3 registration and refusals", () => {
  const platform = { issuer: "https://lms.example", client_id: "c-1", auth_url: "https://lms.example/auth", token_url: "https://lms.example/token", jwks_url: "https://lms.example/jwks", deployment_ids: ["d-1"] };
  const put = (body: unknown, token?: string) =>
    token
      ? SELF.fetch(`${BASE}/api/v1/admin/lti13/platforms`, { method: "PUT", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) })
      : adminFetch("/lti13/platforms", { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

  it("registers a platform, lists it, and refuses a registration without a deployment", async () => {
    expect((await put(platform)).status).toBe(200);
    const listed = (await (await adminFetch("/lti13/platforms")).json()) as { platforms: Array<Record<string, unknown>> };
    expect(listed.platforms).toContainEqual(expect.objectContaining({ issuer: "https://lms.example", client_id: "c-1", deployment_ids: ["d-1"] }));
    const bad = await put({ ...platform, deployment_ids: [] });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toBe("invalid_platform");
  });

  it("lets only admins register platforms", async () => {
    const staff = await issueToken({ kind: "staff", name: "lti13-staff", course: "c-lti13" });
    const refused = await put(platform, staff.token);
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: string }).error).toBe("admin_only");
  });

  it("refuses a login from an unregistered platform and a launch whose state it never issued", async () => {
    const login = await SELF.fetch(`${BASE}/lti/1p3/login?iss=https://other.example&client_id=x&login_hint=h&target_link_uri=${BASE}/lti/1p3/launch`, { redirect: "manual" });
    expect(login.status).toBe(401);
    expect(((await login.json()) as { error: string }).error).toBe("unknown_platform");
    const launch = await SELF.fetch(`${BASE}/lti/1p3/launch`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "id_token=a.b.c&state=never-issued" });
    expect(launch.status).toBe(401);
    expect(((await launch.json()) as { error: string }).error).toBe("unknown_state");
  });

  it("a registered login is sent on to the platform with a fresh state and nonce", async () => {
    expect((await put(platform)).status).toBe(200);
    const res = await SELF.fetch(`${BASE}/lti/1p3/login?iss=https://lms.example&client_id=c-1&login_hint=h1&lti_message_hint=m1&target_link_uri=${BASE}/lti/1p3/launch`, { redirect: "manual" });
    expect(res.status).toBe(302);
    const to = new URL(res.headers.get("location")!);
    expect(to.origin + to.pathname).toBe("https://lms.example/auth");
    expect(Object.fromEntries(to.searchParams)).toMatchObject({ scope: "openid", response_type: "id_token", response_mode: "form_post", prompt: "none", client_id: "c-1", redirect_uri: `${BASE}/lti/1p3/launch`, login_hint: "h1", lti_message_hint: "m1" });
    const second = await SELF.fetch(`${BASE}/lti/1p3/login?iss=https://lms.example&client_id=c-1&login_hint=h1&target_link_uri=x`, { redirect: "manual" });
    const again = new URL(second.headers.get("location")!);
    expect(again.searchParams.get("state")).not.toBe(to.searchParams.get("state"));
    expect(again.searchParams.get("nonce")).not.toBe(to.searchParams.get("nonce"));
  });

  it("says plainly that no tool key is configured, rather than serving an empty JWKS", async () => {
    const res = await SELF.fetch(`${BASE}/.well-known/jwks.json`);
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: string }).error).toBe("lti13_not_configured");
  });
});
