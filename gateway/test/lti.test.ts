import { describe, expect, it } from "vitest";
import OAuth from "oauth-1.0a";
import imsExample from "../../test/lti/ims-replace-result-request.xml?raw";
import { hmacSha1Base64, sha1Base64, signBodyRequest } from "../src/lti/oauth.js";
import { formatScore, parseOutcomeResponse, replaceResultXml } from "../src/lti/outcomes-xml.js";
import { backoffMs as retryDelayMs } from "@otter-edge/shared";

describe("LTI 1.1 outcome messages", () => {
  it("builds replaceResultRequest exactly as the IMS implementation guide's example", () => {
    expect(replaceResultXml({ messageId: "999999123", sourcedId: "3124567", score: 0.92 })).toBe(imsExample);
  });

  it("escapes XML in identifiers", () => {
    expect(replaceResultXml({ messageId: "m", sourcedId: "a<b>&\"c'", score: 1 })).toContain("<sourcedId>a&lt;b&gt;&amp;&quot;c&apos;</sourcedId>");
  });

  it("sends scores clamped to 0.0..1.0 with at most 3 decimals, never in exponent form", () => {
    expect([0.6, 1, 0, 1.7, -0.2, 0.12345, 0.0004, Number.NaN].map(formatScore)).toEqual(["0.6", "1", "0", "1", "0", "0.123", "0", "0"]);
  });

  it("reads codeMajor from edX's reply and from the IMS layout, and refuses what is not a reply", () => {
    const edx = `<?xml version="1.0" encoding="UTF-8"?>
<imsx_POXEnvelopeResponse xmlns = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">
  <imsx_POXHeader><imsx_POXResponseHeaderInfo><imsx_version>V1.0</imsx_version><imsx_messageIdentifier>m1</imsx_messageIdentifier>
  <imsx_statusInfo><imsx_codeMajor>success</imsx_codeMajor><imsx_severity>status</imsx_severity>
  <imsx_description>Score for x is now 0.6</imsx_description><imsx_messageRefIdentifier></imsx_messageRefIdentifier></imsx_statusInfo>
  </imsx_POXResponseHeaderInfo></imsx_POXHeader><imsx_POXBody><replaceResultResponse/></imsx_POXBody></imsx_POXEnvelopeResponse>`;
    expect(parseOutcomeResponse(edx)).toMatchObject({ codeMajor: "success", description: "Score for x is now 0.6" });
    expect(parseOutcomeResponse(edx.replace(">success<", ">failure<"))?.codeMajor).toBe("failure");
    expect(parseOutcomeResponse("<html><body>502 Bad Gateway</body></html>")).toBeNull();
    expect(parseOutcomeResponse("not xml at all <<<")).toBeNull();
  });
});

describe("OAuth 1.0a signing", () => {
  it("hashes the body as the OAuth Request Body Hash draft's example does", async () => {
    expect(await sha1Base64(new TextEncoder().encode("Hello World!"))).toBe("Lve95gjOVATpfV8EL5X4nxwjKHE=");
  });

  it("reproduces a published HMAC-SHA1 signature base string and signature", async () => {
    // The worked example of Twitter's "Creating a signature" guide: a fixed request, base string and signature.
    const oauth = new OAuth({ consumer: { key: "xvz1evFS4wEEPTGEFPHBog", secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw" }, signature_method: "HMAC-SHA1", hash_function: () => "" });
    const data = {
      oauth_consumer_key: "xvz1evFS4wEEPTGEFPHBog",
      oauth_nonce: "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
      oauth_signature_method: "HMAC-SHA1",
      oauth_timestamp: 1318622958,
      oauth_token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
      oauth_version: "1.0",
    };
    const base = oauth.getBaseString(
      { url: "https://api.twitter.com/1/statuses/update.json?include_entities=true", method: "POST", data: { status: "Hello Ladies + Gentlemen, a signed OAuth request!" } },
      data,
    );
    expect(base).toBe(
      "POST&https%3A%2F%2Fapi.twitter.com%2F1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521",
    );
    expect(await hmacSha1Base64(oauth.getSigningKey("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"), base)).toBe("tnnArxj06cWHq44gCs1OSKk/jLY=");
  });

  it("signs the outcome body through oauth_body_hash, with HMAC-SHA1, version 1.0 and an integer timestamp", async () => {
    const body = new TextEncoder().encode(replaceResultXml({ messageId: "1", sourcedId: "s", score: 0.5 }));
    const { authorization, baseString } = await signBodyRequest({ url: "https://lms.example/outcomes", body, key: "k", secret: "s", nonce: "abc", timestamp: 1700000000 });
    expect(authorization).toMatch(/^OAuth /);
    expect(authorization).toContain(`oauth_body_hash="${encodeURIComponent(await sha1Base64(body))}"`);
    expect(authorization).toContain('oauth_signature_method="HMAC-SHA1"');
    expect(authorization).toContain('oauth_version="1.0"');
    expect(authorization).toContain('oauth_timestamp="1700000000"');
    expect(baseString.startsWith("POST&https%3A%2F%2Flms.example%2Foutcomes&oauth_body_hash%3D")).toBe(true);
  });
});

describe("passback retry schedule", () => {
  it("doubles from the base, is capped, and jitters within the upper half", () => {
    const timing = { baseMs: 30_000, maxMs: 3_600_000 };
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, timing, 1))).toEqual([30_000, 60_000, 120_000, 240_000]);
    expect(retryDelayMs(30, timing, 1)).toBe(3_600_000);
    expect(retryDelayMs(1, timing, 0)).toBe(15_000);
  });
});
