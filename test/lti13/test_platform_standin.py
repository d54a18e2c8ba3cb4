"""Proves the stand-in LTI 1.3 platform really checks what it claims to check.

Run: .otter-edge/venv/bin/python -m pytest -q -p no:cacheprovider test/lti13

The tool side is played here: an RSA key pair made in the test, a tiny JWKS
server for it, client assertions signed with PyJWT, id_tokens verified with
PyJWT against the platform's /jwks.
"""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from platform_standin import (  # noqa: E402
    AGS_CLAIM, LEARNER, LTI, LTI1P1_CLAIM, PlatformServer, SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY,
    SCOPE_RESULT_READONLY, SCOPE_SCORE, lti1p1_consumer_key_sign,
)

CLIENT_ID = "otter-edge-client"
DEPLOYMENT_ID = "deployment-1"
REDIRECT_URI = "http://127.0.0.1:9/lti/launch"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# --- the tool side ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tool_keys():
    """Two tool key pairs (RSA keygen is slow enough to share across tests)."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def public_jwk(private_key, kid):
    jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class JwksServer:
    """The tool's JWKS endpoint. `pending` payloads are served once each, before `keys`."""

    def __init__(self):
        self.keys = []
        self.pending = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.fetches += 1
                keys = owner.pending.pop(0) if owner.pending else owner.keys
                payload = json.dumps({"keys": keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tool_jwks(tool_keys):
    server = JwksServer()
    server.keys = [public_jwk(tool_keys[0], "tool-1")]
    yield server
    server.close()


# --- the platform -------------------------------------------------------------------------

class Platform:
    def __init__(self, server):
        self.server = server
        self.port = server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=b"", headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def control(self, name, payload=None, expect=200):
        if payload is None:
            status, _, data = self.request("GET", f"/_control/{name}")
        else:
            status, _, data = self.request("POST", f"/_control/{name}", json.dumps(payload).encode(),
                                           {"Content-Type": "application/json"})
        assert status == expect, data
        return json.loads(data)

    def jwks(self):
        return json.loads(self.request("GET", "/jwks")[2])

    def rejected(self):
        return [(r["endpoint"], r["status"], r["error"]) for r in self.control("rejected")]

    # OIDC

    def auth(self, launch, method="GET", **changes):
        params = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post",
                  "prompt": "none", "client_id": launch["client_id"], "redirect_uri": REDIRECT_URI,
                  "login_hint": launch["login_hint"], "lti_message_hint": launch["lti_message_hint"],
                  "state": "state-123", "nonce": "nonce-456"}
        for name, value in changes.items():
            if value is None:
                params.pop(name)
            else:
                params[name] = value
        if method == "GET":
            return self.request("GET", "/auth?" + urlencode(params))
        return self.request("POST", "/auth", urlencode(params).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def launch_token(self, **launch_fields):
        """Prepare a launch, run /auth, return the id_token from the form."""
        launch = self.control("launch", {"client_id": CLIENT_ID, "sub": "user-1",
                                         "resource_link_id": "rl-1", **launch_fields})
        status, headers, data = self.auth(launch)
        assert status == 200, data
        return parse_form_post(data.decode())["inputs"]["id_token"]

    def verify(self, id_token, **kwargs):
        keys = {k["kid"]: RSAAlgorithm.from_jwk(k) for k in self.jwks()["keys"]}
        kid = jwt.get_unverified_header(id_token)["kid"]
        return jwt.decode(id_token, keys[kid], algorithms=["RS256"], audience=CLIENT_ID,
                          issuer=self.base, **kwargs)

    # OAuth

    def assertion(self, key, kid="tool-1", headers=None, drop=(), **claims):
        now = int(time.time())
        body = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": f"{self.base}/token", "iat": now,
                "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
        for name in drop:
            body.pop(name)
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid, **(headers or {})})

    def token_request(self, assertion, scope=SCOPE_SCORE, **fields):
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion, "scope": scope, **fields}
        form = {k: v for k, v in form.items() if v is not None}
        status, headers, data = self.request("POST", "/token", urlencode(form).encode(),
                                             {"Content-Type": "application/x-www-form-urlencoded"})
        return status, json.loads(data) if data.startswith(b"{") else data

    def token(self, key, scope=SCOPE_SCORE):
        status, answer = self.token_request(self.assertion(key), scope)
        assert status == 200, answer
        return answer["access_token"]

    # AGS

    def post_score(self, token, score=None, path="/lineitems/7/lineitem/scores",
                   content_type=SCORE_TYPE, timeout=10, **fields):
        body = {**(score or good_score()), **fields}
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        status, resp_headers, data = self.request("POST", path, json.dumps(body).encode(), headers, timeout)
        return status, resp_headers, data


def good_score(**fields):
    return {"userId": "user-1", "scoreGiven": 8.5, "scoreMaximum": 10, "activityProgress": "Completed",
            "gradingProgress": "FullyGraded", "timestamp": "2024-05-01T12:00:00.123+00:00", **fields}


class _FormParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.form = None
        self.inputs = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.form = attrs
        elif tag == "input" and attrs.get("type") == "hidden":
            self.inputs[attrs["name"]] = attrs["value"]


def parse_form_post(page):
    parser = _FormParser()
    parser.feed(page)
    return {"form": parser.form, "inputs": parser.inputs}


@pytest.fixture
def start_platform():
    servers = []

    def start(**kwargs):
        server = PlatformServer(("127.0.0.1", 0), **kwargs)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return Platform(server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def platform(start_platform, tool_jwks):
    lms = start_platform()
    lms.control("tool", {"client_id": CLIENT_ID, "deployment_id": DEPLOYMENT_ID, "jwks_url": tool_jwks.url,
                         "redirect_uris": [REDIRECT_URI, "http://127.0.0.1:9/other"],
                         "login_url": "http://127.0.0.1:9/lti/login"})
    return lms


# --- keys -----------------------------------------------------------------------------------

def test_jwks_and_rotation(platform):
    [key] = platform.jwks()["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "alg", "use"}
    assert (key["kty"], key["kid"], key["alg"], key["use"], key["e"]) == ("RSA", "platform-1", "RS256", "sig", "AQAB")
    assert RSAAlgorithm.from_jwk(key).key_size == 2048

    assert platform.control("rotate", {"keep_old": True}) == {"kid": "platform-2"}
    assert [k["kid"] for k in platform.jwks()["keys"]] == ["platform-2", "platform-1"]
    assert platform.control("rotate", {"keep_old": False}) == {"kid": "platform-3"}
    assert [k["kid"] for k in platform.jwks()["keys"]] == ["platform-3"]
    # New launches are signed with the new key.
    assert jwt.get_unverified_header(platform.launch_token())["kid"] == "platform-3"


def test_tool_registration_reports_endpoints_and_refuses_bad_requests(start_platform):
    lms = start_platform()
    answer = lms.control("tool", {"client_id": "c", "deployment_id": "d", "jwks_url": "http://localhost:1/j",
                                  "redirect_uris": ["http://127.0.0.1:1/l"]})
    assert answer == {"ok": True, "issuer": lms.base, "authorization_endpoint": f"{lms.base}/auth",
                      "token_endpoint": f"{lms.base}/token", "jwks_uri": f"{lms.base}/jwks"}
    base = {"client_id": "c", "deployment_id": "d", "jwks_url": "http://127.0.0.1:1/j", "redirect_uris": ["x"]}
    for bad in ({**base, "jwks_url": "https://tool.example.com/jwks"}, {**base, "redirect_uris": []},
                {**base, "redirect_url": "x"}, {k: v for k, v in base.items() if k != "deployment_id"}):
        assert lms.control("tool", bad, expect=400)["error"] == "bad_control_request"
    assert lms.control("launch", {"client_id": "nope", "sub": "u", "resource_link_id": "r"}, expect=400)


# --- OIDC launch ----------------------------------------------------------------------------

def test_launch_end_to_end(platform):
    launch = platform.control("launch", {
        "client_id": CLIENT_ID, "sub": "user-1", "resource_link_id": "rl-1", "resource_link_title": "HW 1",
        "context_id": "course-9", "context_label": "CS9", "context_title": "Data 9",
        "custom": {"otter_course": "c-9", "otter_assignment": "hw1"},
        "lineitem": f"{platform.base}/lineitems/7/lineitem?type_id=3", "name": "Ada L", "email": "ada@example.edu",
    })
    assert launch["iss"] == platform.base and launch["login_hint"] == "user-1"
    assert launch["client_id"] == CLIENT_ID and launch["lti_deployment_id"] == DEPLOYMENT_ID
    assert launch["target_link_uri"] == REDIRECT_URI and launch["lti_message_hint"]

    for method in ("GET", "POST"):
        status, headers, data = platform.auth(launch, method=method, redirect_uri="http://127.0.0.1:9/other")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        form = parse_form_post(data.decode())
        assert form["form"] == {"method": "post", "action": "http://127.0.0.1:9/other"}
        assert form["inputs"]["state"] == "state-123"
        assert '<form method="post" action="http://127.0.0.1:9/other">' in data.decode()
        header = jwt.get_unverified_header(form["inputs"]["id_token"])
        assert (header["alg"], header["kid"]) == ("RS256", "platform-1")
        claims = platform.verify(form["inputs"]["id_token"])
        now = time.time()
        assert claims["iss"] == platform.base and claims["aud"] == CLIENT_ID and claims["azp"] == CLIENT_ID
        assert claims["sub"] == "user-1" and claims["nonce"] == "nonce-456"
        assert abs(claims["iat"] - now) < 5 and claims["exp"] - claims["iat"] == 300
        assert claims[LTI + "message_type"] == "LtiResourceLinkRequest"
        assert claims[LTI + "version"] == "1.3.0"
        assert claims[LTI + "deployment_id"] == DEPLOYMENT_ID
        assert claims[LTI + "target_link_uri"] == REDIRECT_URI
        assert claims[LTI + "resource_link"] == {"id": "rl-1", "title": "HW 1"}
        assert claims[LTI + "roles"] == [LEARNER]
        assert claims[LTI + "context"] == {"id": "course-9", "label": "CS9", "title": "Data 9"}
        assert claims[LTI + "custom"] == {"otter_course": "c-9", "otter_assignment": "hw1"}
        assert claims[AGS_CLAIM] == {
            "scope": [SCOPE_LINEITEM, SCOPE_RESULT_READONLY, SCOPE_SCORE],
            "lineitem": f"{platform.base}/lineitems/7/lineitem?type_id=3",
            "lineitems": f"{platform.base}/contexts/course-9/lineitems",
        }
        assert claims["name"] == "Ada L" and claims["email"] == "ada@example.edu"
        assert LTI1P1_CLAIM not in claims
    assert platform.control("rejected") == []


def test_launch_defaults(platform):
    claims = platform.verify(platform.launch_token(lineitems=None))
    assert claims[AGS_CLAIM] == {"scope": [SCOPE_LINEITEM, SCOPE_RESULT_READONLY, SCOPE_SCORE],
                                 "lineitem": f"{platform.base}/lineitems/rl-1/lineitem"}
    assert claims[LTI + "context"] == {"id": "context-1", "label": "context-1", "title": "Course context-1"}
    assert LTI + "custom" not in claims and "email" not in claims
    claims = platform.verify(platform.launch_token(lineitem=None, roles=["http://x/#Instructor"]))
    assert "lineitem" not in claims[AGS_CLAIM] and claims[LTI + "roles"] == ["http://x/#Instructor"]


def test_lti1p1_claim_and_spec_signature():
    # The worked example of the LTI 1.3 Core spec's LTI 1.1 migration claim.
    assert lti1p1_consumer_key_sign("179248902", "my-lti11-secret", "689302", "https://lmsvendor.com",
                                    "PM48OJSfGDTAzAo", 1551290856, "172we8671fd8z") == \
        "lWd54kFo5qU7xshAna6v8BwoBm6tmUjc6GTax6+12ps="


def test_lti1p1_claim_in_launch(platform):
    claims = platform.verify(platform.launch_token(lti1p1_user_id="old-42", lti1p1_oauth_consumer_key="key11"))
    assert claims[LTI1P1_CLAIM] == {"user_id": "old-42", "oauth_consumer_key": "key11"}
    claims = platform.verify(platform.launch_token(lti1p1_user_id="old-42", lti1p1_oauth_consumer_key="key11",
                                                   lti1p1_oauth_consumer_secret="s"))
    assert claims[LTI1P1_CLAIM]["oauth_consumer_key_sign"] == lti1p1_consumer_key_sign(
        "key11", "s", DEPLOYMENT_ID, platform.base, CLIENT_ID, claims["exp"], claims["nonce"])


def test_launch_overrides(platform):
    token = platform.launch_token(overrides={LTI + "version": "1.2.0", LTI + "roles": None, "extra": 1},
                                  header_overrides={"typ": None, "x": "y"}, deployment_id="dep-2",
                                  audience=["someone-else", CLIENT_ID], nonce_override="fixed-nonce")
    header = jwt.get_unverified_header(token)
    assert "typ" not in header and header["x"] == "y"
    claims = platform.verify(token)
    assert claims[LTI + "version"] == "1.2.0" and LTI + "roles" not in claims and claims["extra"] == 1
    assert claims[LTI + "deployment_id"] == "dep-2" and claims["aud"] == ["someone-else", CLIENT_ID]
    assert claims["nonce"] == "fixed-nonce" and claims["azp"] == CLIENT_ID


def test_launch_signing_faults(platform):
    expired = platform.launch_token(exp_in=-10)
    with pytest.raises(jwt.ExpiredSignatureError):
        platform.verify(expired)
    assert platform.verify(expired, options={"verify_exp": False})["exp"] < time.time()

    unknown = platform.launch_token(sign_with="unknown")
    assert jwt.get_unverified_header(unknown)["kid"] == "unknown-kid"
    with pytest.raises(KeyError):
        platform.verify(unknown)
    # Claiming the published kid does not help a token signed by another key.
    forged = platform.launch_token(sign_with="unknown", header_overrides={"kid": "platform-1"})
    with pytest.raises(jwt.InvalidSignatureError):
        platform.verify(forged)

    assert platform.control("launch", {"client_id": CLIENT_ID, "sub": "u", "resource_link_id": "r",
                                       "sign_with": "previous"}, expect=400)
    platform.control("rotate", {"keep_old": True})
    previous = platform.launch_token(sign_with="previous")
    assert jwt.get_unverified_header(previous)["kid"] == "platform-1"
    platform.verify(previous)  # still published
    platform.control("rotate", {"keep_old": False})
    with pytest.raises(KeyError):  # platform-2 is no longer in the JWKS
        platform.verify(platform.launch_token(sign_with="previous"))


def test_control_sign(platform):
    now = int(time.time())
    claims = {"iss": platform.base, "aud": CLIENT_ID, "sub": "x", "iat": now, "exp": now + 60, "nonce": "n"}
    token = platform.control("sign", {"claims": claims})["id_token"]
    assert platform.verify(token) == claims
    token = platform.control("sign", {"claims": claims, "kid": "other"})["id_token"]
    assert jwt.get_unverified_header(token)["kid"] == "other"
    token = platform.control("sign", {"claims": claims, "sign_with": "unknown"})["id_token"]
    assert jwt.get_unverified_header(token)["kid"] == "unknown-kid"
    token = platform.control("sign", {"claims": claims, "header_overrides": {"alg": "none"}})["id_token"]
    assert token.endswith(".")  # alg none: empty signature


@pytest.mark.parametrize("changes, error", [
    ({"redirect_uri": "http://127.0.0.1:9/evil"}, "invalid_request"),
    ({"client_id": "unknown-client"}, "unauthorized_client"),
    ({"login_hint": "user-2"}, "login_required"),
    ({"lti_message_hint": "made-up"}, "invalid_request"),
    ({"nonce": None}, "invalid_request"),
    ({"state": None}, "invalid_request"),
    ({"scope": "profile"}, "invalid_scope"),
    ({"response_type": "code"}, "unsupported_response_type"),
    ({"response_mode": "query"}, "invalid_request"),
    ({"prompt": "login"}, "invalid_request"),
])
def test_auth_refusals(platform, changes, error):
    launch = platform.control("launch", {"client_id": CLIENT_ID, "sub": "user-1", "resource_link_id": "rl-1"})
    status, headers, data = platform.auth(launch, **changes)
    assert status == 400 and headers["Content-Type"] == "application/json"
    body = json.loads(data)
    assert body["error"] == error and body["error_description"]
    assert platform.rejected() == [("auth", 400, error)]


def test_auth_refuses_a_launch_of_another_client(platform, tool_jwks):
    platform.control("tool", {"client_id": "client-2", "deployment_id": "d2", "jwks_url": tool_jwks.url,
                              "redirect_uris": [REDIRECT_URI]})
    launch = platform.control("launch", {"client_id": "client-2", "sub": "u", "resource_link_id": "r"})
    assert platform.auth(launch, client_id=CLIENT_ID)[0] == 400
    assert platform.auth(launch)[0] == 200
    assert platform.rejected() == [("auth", 400, "invalid_request")]


# --- token endpoint -------------------------------------------------------------------------

def test_token_grant(platform, tool_keys):
    assertion = platform.assertion(tool_keys[0])
    status, answer = platform.token_request(assertion, scope=f"{SCOPE_SCORE} {SCOPE_RESULT_READONLY}")
    assert status == 200, answer
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600 and answer["access_token"]
    assert answer["scope"] == f"{SCOPE_SCORE} {SCOPE_RESULT_READONLY}"
    # The issuer itself is an accepted audience too, and so is a list containing the token URL.
    for aud in (platform.base, ["x", f"{platform.base}/token"]):
        assert platform.token_request(platform.assertion(tool_keys[0], aud=aud))[0] == 200
    # Replaying the same assertion is refused.
    status, answer = platform.token_request(assertion)
    assert (status, answer["error"]) == (400, "invalid_grant") and "already" in answer["error_description"]
    requests = platform.control("token-requests")
    jti = jwt.decode(assertion, options={"verify_signature": False})["jti"]
    assert requests[0] == {"client_id": CLIENT_ID, "scope": f"{SCOPE_SCORE} {SCOPE_RESULT_READONLY}",
                           "jti": jti, "ok": True}
    assert [r["ok"] for r in requests] == [True, True, True, False]


@pytest.mark.parametrize("make, status, error", [
    (lambda p, k: p.assertion(k[0], aud="http://127.0.0.1:1/token"), 400, "invalid_grant"),
    (lambda p, k: p.assertion(k[0], exp=int(time.time()) - 1), 400, "invalid_grant"),
    (lambda p, k: p.assertion(k[0], iat=int(time.time()) + 120), 400, "invalid_grant"),
    (lambda p, k: p.assertion(k[0], drop=["jti"]), 400, "invalid_grant"),
    (lambda p, k: p.assertion(k[0], drop=["exp"]), 400, "invalid_grant"),
    (lambda p, k: p.assertion(k[0], sub="someone-else"), 400, "invalid_grant"),
    (lambda p, k: p.assertion(k[0], iss="unknown-client", sub="unknown-client"), 401, "invalid_client"),
    (lambda p, k: p.assertion(k[1]), 401, "invalid_client"),  # right kid, wrong key
    (lambda p, k: p.assertion(k[0], kid="tool-9"), 401, "invalid_client"),
    (lambda p, k: jwt.encode({"iss": CLIENT_ID}, "secret-secret-secret-secret-32b!", algorithm="HS256",
                             headers={"kid": "tool-1"}), 401, "invalid_client"),
    (lambda p, k: "not-a-jwt", 401, "invalid_client"),
])
def test_bad_client_assertions(platform, tool_keys, make, status, error):
    got_status, answer = platform.token_request(make(platform, tool_keys))
    assert (got_status, answer["error"]) == (status, error), answer
    assert platform.rejected() == [("token", status, error)]
    assert [r["ok"] for r in platform.control("token-requests")] == [False]


def test_iat_slightly_ahead_is_tolerated(platform, tool_keys):
    assert platform.token_request(platform.assertion(tool_keys[0], iat=int(time.time()) + 30))[0] == 200


@pytest.mark.parametrize("fields, status, error", [
    ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
    ({"client_assertion_type": "urn:other"}, 401, "invalid_client"),
    ({"client_assertion": None}, 401, "invalid_client"),
    ({"client_id": "another"}, 401, "invalid_client"),
    ({"scope": f"{SCOPE_SCORE} https://example.com/scope/other"}, 400, "invalid_scope"),
    ({"scope": None}, 400, "invalid_scope"),
])
def test_bad_token_forms(platform, tool_keys, fields, status, error):
    fields = dict(fields)
    assertion = fields.pop("client_assertion", platform.assertion(tool_keys[0]))
    got_status, answer = platform.token_request(assertion, **fields)
    assert (got_status, answer["error"]) == (status, error), answer


def test_all_ags_scopes_can_be_requested(platform, tool_keys):
    scope = " ".join([SCOPE_LINEITEM, SCOPE_LINEITEM_READONLY, SCOPE_RESULT_READONLY, SCOPE_SCORE])
    assert platform.token_request(platform.assertion(tool_keys[0]), scope=scope)[1]["scope"] == scope


def test_token_needs_form_encoding(platform, tool_keys):
    status, _, data = platform.request("POST", "/token", json.dumps({"grant_type": "client_credentials"}).encode(),
                                       {"Content-Type": "application/json"})
    assert status == 400 and json.loads(data)["error"] == "invalid_request"


def test_unknown_kid_makes_the_platform_refetch_the_jwks_once(platform, tool_jwks, tool_keys):
    # The tool rotated to tool-2: the first fetch still shows the old set, the next the new.
    tool_jwks.keys = [public_jwk(tool_keys[1], "tool-2")]
    tool_jwks.pending = [[public_jwk(tool_keys[0], "tool-1")]]
    assert platform.token_request(platform.assertion(tool_keys[1], kid="tool-2"))[0] == 200
    assert tool_jwks.fetches == 2
    # A kid that is in neither fetch: exactly one refetch, then invalid_client.
    tool_jwks.fetches = 0
    status, answer = platform.token_request(platform.assertion(tool_keys[0], kid="tool-1"))
    assert (status, answer["error"], tool_jwks.fetches) == (401, "invalid_client", 2)


def test_unreachable_jwks_is_invalid_client(platform, tool_keys):
    platform.control("tool", {"client_id": CLIENT_ID, "deployment_id": DEPLOYMENT_ID,
                              "jwks_url": "http://127.0.0.1:1/jwks", "redirect_uris": [REDIRECT_URI]})
    status, answer = platform.token_request(platform.assertion(tool_keys[0]))
    assert (status, answer["error"]) == (401, "invalid_client") and "JWKS" in answer["error_description"]


# --- scores ---------------------------------------------------------------------------------

def test_score_is_recorded(platform, tool_keys):
    token = platform.token(tool_keys[0])
    status, headers, data = platform.post_score(token, path="/lineitems/7/lineitem/scores?type_id=3",
                                                content_type=SCORE_TYPE + "; charset=utf-8", comment="well done")
    assert (status, json.loads(data)) == (200, {})
    status, _, _ = platform.post_score(token, path="/lineitems/8/scores",
                                       timestamp="2024-05-01T12:00:00.123456789Z")
    assert status == 200
    first, second = platform.control("scores")
    assert first["lineitem"] == f"{platform.base}/lineitems/7/lineitem?type_id=3"
    assert {k: first[k] for k in ("userId", "scoreGiven", "scoreMaximum", "activityProgress", "gradingProgress",
                                  "timestamp", "comment", "client_id")} == {
        "userId": "user-1", "scoreGiven": 8.5, "scoreMaximum": 10, "activityProgress": "Completed",
        "gradingProgress": "FullyGraded", "timestamp": "2024-05-01T12:00:00.123+00:00", "comment": "well done",
        "client_id": CLIENT_ID}
    assert first["receivedAt"].endswith("Z")
    assert second["lineitem"] == f"{platform.base}/lineitems/8" and second["comment"] is None
    assert platform.control("rejected") == []


@pytest.mark.parametrize("changes", [
    {"userId": 42}, {"userId": ""}, {"scoreGiven": -1}, {"scoreGiven": "8"}, {"scoreGiven": True},
    {"scoreMaximum": 0}, {"scoreGiven": None}, {"activityProgress": "Done"}, {"gradingProgress": "Graded"},
    {"timestamp": "2024-05-01T12:00:00+00:00"},  # no fractional seconds
    {"timestamp": "2024-05-01T12:00:00.123"},  # no offset
    {"timestamp": "2024-05-01 12:00:00.123Z"}, {"timestamp": "2024-13-01T12:00:00.123Z"},
    {"timestamp": 1714564800}, {"comment": 5},
])
def test_invalid_scores_are_refused(platform, tool_keys, changes):
    body = {k: v for k, v in {**good_score(), **changes}.items() if v is not None}
    status, _, data = platform.post_score(platform.token(tool_keys[0]), score=body)
    assert status == 400 and json.loads(data)["error"] == "invalid_score"
    assert platform.control("scores") == [] and platform.rejected() == [("scores", 400, "invalid_score")]


def test_non_json_and_nan_bodies_are_refused(platform, tool_keys):
    token = platform.token(tool_keys[0])
    for body in (b"not json", b'{"userId": "u", "scoreGiven": NaN}', b"[]"):
        status, _, _ = platform.request("POST", "/lineitems/1/scores", body,
                                        {"Content-Type": SCORE_TYPE, "Authorization": f"Bearer {token}"})
        assert status == 400


def test_score_authorization(start_platform, tool_jwks, tool_keys):
    lms = start_platform(token_ttl=1)
    lms.control("tool", {"client_id": CLIENT_ID, "deployment_id": "d", "jwks_url": tool_jwks.url,
                         "redirect_uris": [REDIRECT_URI]})
    status, headers, data = lms.post_score(None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")
    assert lms.post_score("made-up-token")[0] == 401
    status, _, data = lms.post_score(lms.token(tool_keys[0], scope=SCOPE_RESULT_READONLY))
    assert status == 401 and json.loads(data)["error"] == "insufficient_scope"
    token = lms.token(tool_keys[0])
    assert lms.token_request(lms.assertion(tool_keys[0]))[1]["expires_in"] == 1
    assert lms.post_score(token, content_type="application/json")[0] == 415
    assert lms.post_score(token)[0] == 200
    time.sleep(1.1)
    status, _, data = lms.post_score(token, timestamp="2024-05-01T12:00:01.000Z")
    assert status == 401 and "expired" in json.loads(data)["error_description"]
    assert [r[1:] for r in lms.rejected()] == [(401, "invalid_token"), (401, "invalid_token"),
                                               (401, "insufficient_scope"), (415, "unsupported_media_type"),
                                               (401, "invalid_token")]


def test_expire_tokens(platform, tool_keys):
    token = platform.token(tool_keys[0])
    assert platform.control("expire-tokens", {}) == {"expired": 1}
    assert platform.post_score(token)[0] == 401
    assert platform.post_score(platform.token(tool_keys[0]))[0] == 200  # a fresh token works


def test_timestamps_must_increase_like_open_edx(platform, tool_keys):
    token = platform.token(tool_keys[0])
    assert platform.post_score(token, timestamp="2024-05-01T12:00:00.500+00:00")[0] == 200
    # Same instant written differently; then an earlier one.
    status, _, data = platform.post_score(token, timestamp="2024-05-01T14:00:00.5+02:00")
    assert (status, json.loads(data)) == (400, {"timestamp": ["Score already exists for the provided timestamp"]})
    status, _, data = platform.post_score(token, timestamp="2024-05-01T12:00:00.499999999Z")
    assert status == 400 and "later point in time" in json.loads(data)["timestamp"][0]
    # Newer by a nanosecond is fine; other users and other line items are independent.
    assert platform.post_score(token, timestamp="2024-05-01T12:00:00.500000001Z")[0] == 200
    assert platform.post_score(token, userId="user-2", timestamp="2024-01-01T00:00:00.0Z")[0] == 200
    assert platform.post_score(token, path="/lineitems/7/lineitem/scores?type_id=4",
                               timestamp="2024-01-01T00:00:00.0Z")[0] == 200
    assert platform.rejected() == [("scores", 400, "stale_timestamp")] * 2
    assert len(platform.control("scores")) == 4


def test_not_a_student_like_canvas(platform, tool_keys):
    platform.control("not-student", {"userId": "teacher-1"})
    token = platform.token(tool_keys[0])
    status, _, data = platform.post_score(token, userId="teacher-1")
    assert status == 422
    assert json.loads(data) == {"errors": {"type": "unprocessable_entity",
                                           "message": "User not found in course or is not a student"}}
    assert platform.post_score(token)[0] == 200
    assert platform.rejected() == [("scores", 422, "not_a_student")]


def test_unknown_paths(platform, tool_keys):
    token = platform.token(tool_keys[0])
    assert platform.post_score(token, path="/lineitems/7/lineitem")[0] == 404
    assert platform.post_score(token, path="/other/scores")[0] == 404
    assert platform.request("GET", "/nothing")[0] == 404


# --- faults and reset -----------------------------------------------------------------------

def test_fail_next_scores(platform, tool_keys):
    token = platform.token(tool_keys[0])
    platform.control("fail-next", {"endpoint": "scores", "mode": "http_503", "count": 2, "retry_after": 3})
    status, headers, _ = platform.post_score(token)
    assert (status, headers["Retry-After"]) == (503, "3")
    assert platform.post_score(token)[0] == 503
    assert platform.post_score(token)[0] == 200
    platform.control("fail-next", {"endpoint": "scores", "mode": "http_500"})
    status, headers, _ = platform.post_score(token, timestamp="2024-06-01T00:00:00.0Z")
    assert status == 500 and "Retry-After" not in headers
    assert len(platform.control("scores")) == 1 and platform.control("rejected") == []
    assert [(r["endpoint"], r["fault"], r["status"]) for r in platform.control("requests")
            if r["endpoint"] == "scores"] == [("scores", "http_503", 503), ("scores", "http_503", 503),
                                              ("scores", None, 200), ("scores", "http_500", 500)]


def test_fail_next_token_burns_the_jti(platform, tool_keys):
    platform.control("fail-next", {"endpoint": "token", "mode": "http_500", "count": 1})
    assertion = platform.assertion(tool_keys[0])
    assert platform.token_request(assertion)[0] == 500
    # Resending the same assertion is a replay; a fresh one works.
    assert platform.token_request(assertion)[1]["error"] == "invalid_grant"
    assert platform.token_request(platform.assertion(tool_keys[0]))[0] == 200
    assert [(r["ok"], r.get("fault")) for r in platform.control("token-requests")] == [
        (False, "http_500"), (False, None), (True, None)]


def test_hang_until_client_gives_up_and_reset_clears_everything(platform, tool_keys):
    token = platform.token(tool_keys[0])
    assert platform.post_score(token)[0] == 200
    platform.control("not-student", {"userId": "user-9"})
    platform.control("fail-next", {"endpoint": "scores", "mode": "hang"})
    with pytest.raises(socket.timeout):
        platform.post_score(token, timeout=0.5)

    assert platform.control("reset", {}) == {"ok": True}  # also releases the hung handler
    for name in ("scores", "rejected", "token-requests", "requests"):
        assert platform.control(name) == []
    # Tools, keys and tokens survive; the stored timestamp and not-student marks do not.
    assert platform.post_score(token)[0] == 200
    assert platform.post_score(token, userId="user-9")[0] == 200
    assert platform.jwks()["keys"][0]["kid"] == "platform-1"


def test_bad_control_requests(platform):
    for name, payload in (("fail-next", {"endpoint": "auth", "mode": "http_500"}),
                          ("fail-next", {"endpoint": "scores", "mode": "explode"}),
                          ("rotate", {"keep_old": "yes"}), ("sign", {}), ("not-student", {}),
                          ("launch", {"client_id": CLIENT_ID, "sub": "u", "resource_link_id": "r", "typo": 1})):
        assert platform.control(name, payload, expect=400)["error"] == "bad_control_request"
    status, _, _ = platform.request("POST", "/_control/reset", b"")  # bodiless POST is fine
    assert status == 200


def test_cli_prints_listening_and_serves():
    proc = subprocess.Popen([sys.executable, str(HERE / "platform_standin.py"), "--port", "0", "--token-ttl", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("LISTENING ")
        port = int(line.split()[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/.well-known/openid-configuration")
        config = json.loads(conn.getresponse().read())
        assert config["issuer"] == f"http://127.0.0.1:{port}"
        assert config["token_endpoint"] == f"http://127.0.0.1:{port}/token"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
