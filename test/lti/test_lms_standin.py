"""Proves the stand-in LMS really verifies what it claims to verify.

Run: pip install -r test/lti/requirements.txt && python -m pytest test/lti

Requests are signed two ways: with oauthlib's Client, and with a hand-written
RFC 5849 signer that builds the signature base string the way the npm package
`oauth-1.0a` does, so acceptance does not just mean "oauthlib agrees with
itself".
"""

import base64
import hashlib
import hmac
import http.client
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import pytest
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, Client

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lms_standin import IMS_NS, Config, StandinServer, body_hash  # noqa: E402

KEY = "otter-edge-test-key"
SECRET = "s3cret/with+odd&chars"
SPEC_EXAMPLE = (HERE / "ims-replace-result-request.xml").read_bytes()


def envelope(score="0.85", sourced_id="course-v1:X+Y+Z:lms-abc:user1", message_id="msg-1"):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<imsx_POXEnvelopeRequest xmlns="{IMS_NS}"><imsx_POXHeader><imsx_POXRequestHeaderInfo>'
        f"<imsx_version>V1.0</imsx_version><imsx_messageIdentifier>{message_id}</imsx_messageIdentifier>"
        "</imsx_POXRequestHeaderInfo></imsx_POXHeader><imsx_POXBody><replaceResultRequest><resultRecord>"
        f"<sourcedGUID><sourcedId>{sourced_id}</sourcedId></sourcedGUID><result><resultScore>"
        f"<language>en</language><textString>{score}</textString></resultScore></result>"
        "</resultRecord></replaceResultRequest></imsx_POXBody></imsx_POXEnvelopeRequest>"
    ).encode()


class _BodyHashClient(Client):
    """oauthlib's Client has no body-hash support; add the parameter so it is signed."""

    def __init__(self, *args, oauth_body_hash, **kwargs):
        super().__init__(*args, **kwargs)
        self._oauth_body_hash = oauth_body_hash

    def get_oauth_params(self, request):
        return super().get_oauth_params(request) + [("oauth_body_hash", self._oauth_body_hash)]


def oauthlib_header(url, body, key=KEY, secret=SECRET, timestamp=None):
    client = _BodyHashClient(key, client_secret=secret, signature_method=SIGNATURE_HMAC_SHA1,
                             oauth_body_hash=body_hash(body), timestamp=timestamp)
    _, headers, _ = client.sign(url, http_method="POST", body=body.decode(),
                                headers={"Content-Type": "application/xml"})
    return headers["Authorization"]


def _pct(text):
    return quote(text, safe="~")  # RFC 3986 unreserved characters stay as they are


def manual_header(url, body, key=KEY, secret=SECRET, realm=None):
    """RFC 5849 section 3.4 by hand, mirroring oauth-1.0a: base URL without the
    query, query parameters merged into the signed parameters."""
    base_url, _, query = url.partition("?")
    oauth = {
        "oauth_consumer_key": key,
        "oauth_nonce": secrets.token_hex(16),
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_version": "1.0",
        "oauth_body_hash": body_hash(body),
    }
    # Decoded like oauth-1.0a's deParam: %XX only ("+" is not a space there).
    query_params = [tuple(unquote(part) for part in pair.split("=", 1)) for pair in query.split("&") if pair]
    pairs = sorted((_pct(k), _pct(v)) for k, v in [*oauth.items(), *query_params])
    base_string = "&".join(["POST", _pct(base_url), _pct("&".join(f"{k}={v}" for k, v in pairs))])
    signing_key = f"{_pct(secret)}&"
    oauth["oauth_signature"] = base64.b64encode(
        hmac.new(signing_key.encode(), base_string.encode(), hashlib.sha1).digest()).decode()
    fields = ([f'realm="{realm}"'] if realm is not None else []) + [
        f'{_pct(k)}="{_pct(v)}"' for k, v in oauth.items()]
    return "OAuth " + ", ".join(fields)


@pytest.fixture
def start_lms():
    """Start in-process stand-ins on free ports; keyword arguments override Config."""
    servers = []

    def start(**config):
        server = StandinServer(("127.0.0.1", 0), Config(KEY, SECRET, **config))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return Lms(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def lms(start_lms):
    return start_lms()


class Lms:
    def __init__(self, port):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method, path, body=b"", headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type"), resp.read()
        finally:
            conn.close()

    def post_outcome(self, body, authorization, path="/outcomes/course-1",
                     content_type="application/xml", timeout=10):
        return self.request("POST", path, body,
                            {"Content-Type": content_type, "Authorization": authorization}, timeout)

    def control(self, name, payload=None):
        if payload is None:
            status, _, data = self.request("GET", f"/_control/{name}")
        else:
            status, _, data = self.request("POST", f"/_control/{name}", json.dumps(payload).encode(),
                                           {"Content-Type": "application/json"})
        assert status == 200, data
        return json.loads(data)


def status_of(xml_bytes):
    root = ElementTree.fromstring(xml_bytes)
    ns = {"i": IMS_NS}
    info = root.find("i:imsx_POXHeader/i:imsx_POXResponseHeaderInfo", ns)
    return {
        "codeMajor": info.findtext("i:imsx_statusInfo/i:imsx_codeMajor", namespaces=ns),
        "description": info.findtext("i:imsx_statusInfo/i:imsx_description", namespaces=ns),
        "messageIdentifier": info.findtext("i:imsx_messageIdentifier", namespaces=ns),
        "messageRef": info.findtext("i:imsx_statusInfo/i:imsx_messageRefIdentifier", namespaces=ns).strip(),
        "operationRef": info.findtext("i:imsx_statusInfo/i:imsx_operationRefIdentifier", namespaces=ns),
        "replaceResultResponse": root.find("i:imsx_POXBody/i:replaceResultResponse", ns) is not None,
    }


def reasons(lms):
    return [r["reason"] for r in lms.control("rejected")]


@pytest.mark.parametrize("sign", [oauthlib_header, manual_header], ids=["oauthlib", "manual"])
def test_correctly_signed_request_is_accepted_like_edx(lms, sign):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope(score="0.85", message_id="m-42")
    status, content_type, data = lms.post_outcome(body, sign(url, body))

    assert (status, content_type) == (200, "application/xml; charset=UTF-8")
    assert status_of(data) == {
        "codeMajor": "success",
        "description": "Score for course-v1:X+Y+Z:lms-abc:user1 is now 0.85",
        "messageIdentifier": "m-42",  # edX echoes the request id here ...
        "messageRef": "",  # ... and leaves imsx_messageRefIdentifier blank
        "operationRef": None,
        "replaceResultResponse": True,
    }
    [grade] = lms.control("grades")
    assert grade["sourcedId"] == "course-v1:X+Y+Z:lms-abc:user1"
    assert grade["score"] == 0.85 and grade["textString"] == "0.85"
    assert grade["messageId"] == "m-42" and grade["receivedAt"].endswith("Z")
    assert lms.control("rejected") == []


def test_realm_and_query_parameters(lms):
    url = f"{lms.base}/outcomes/course-1?context=a%20b&x=1"
    body = envelope()
    # realm is excluded from the signature; query parameters are included.
    assert status_of(lms.post_outcome(body, manual_header(url, body, realm="edx"),
                                      path="/outcomes/course-1?context=a%20b&x=1")[2])["codeMajor"] == "success"
    # A signature that left the query out does not verify.
    unsigned_query = manual_header(f"{lms.base}/outcomes/course-1", body)
    lms.post_outcome(body, unsigned_query, path="/outcomes/course-1?context=a%20b&x=1")
    assert reasons(lms) == ["bad_signature"]


def test_tampered_body_is_rejected_with_bad_body_hash(lms):
    url = f"{lms.base}/outcomes/course-1"
    header = oauthlib_header(url, envelope(score="0.10"))
    status, _, data = lms.post_outcome(envelope(score="1.0"), header)

    assert status == 200  # edX reports OAuth failures in the envelope, not the status
    assert status_of(data)["codeMajor"] == "failure"
    assert status_of(data)["description"] == "OAuth verification error: OAuth body hash verification has failed."
    assert reasons(lms) == ["bad_body_hash"]
    assert lms.control("grades") == []


def test_wrong_secret_is_rejected_with_bad_signature(lms):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope(message_id="m-7")
    status, _, data = lms.post_outcome(body, oauthlib_header(url, body, secret="not-the-secret"))

    assert status == 200
    assert status_of(data)["codeMajor"] == "failure"
    assert status_of(data)["messageIdentifier"] == "m-7"
    assert status_of(data)["description"] == "OAuth verification error: OAuth signature verification has failed."
    assert reasons(lms) == ["bad_signature"]


def test_wrong_url_and_unknown_key_are_rejected(lms):
    body = envelope()
    lms.post_outcome(body, oauthlib_header(f"{lms.base}/outcomes/other", body))
    lms.post_outcome(body, oauthlib_header(f"{lms.base}/outcomes/course-1", body, key="someone-else"))
    assert reasons(lms) == ["bad_signature", "unknown_consumer_key"]


def test_replayed_nonce_is_rejected(lms):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope()
    header = oauthlib_header(url, body)
    first = lms.post_outcome(body, header)
    second = lms.post_outcome(body, header)

    assert status_of(first[2])["codeMajor"] == "success"
    assert status_of(second[2])["codeMajor"] == "failure"
    assert reasons(lms) == ["replayed_nonce"]
    assert len(lms.control("grades")) == 1


def test_stale_timestamp_is_rejected(lms):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope()
    lms.post_outcome(body, oauthlib_header(url, body, timestamp=str(int(time.time()) - 301)))
    assert reasons(lms) == ["stale_timestamp"]


def test_auth_failure_status_can_be_401(start_lms):
    lms = start_lms(auth_failure_status=401)
    url = f"{lms.base}/outcomes/course-1"
    body = envelope()
    status, _, data = lms.post_outcome(body, oauthlib_header(url, body, secret="wrong"))
    assert status == 401 and status_of(data)["codeMajor"] == "failure"


def test_missing_authorization_and_wrong_content_type(lms):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope()
    lms.post_outcome(body, "")
    lms.post_outcome(body, oauthlib_header(url, body), content_type="application/json")
    assert reasons(lms) == ["bad_oauth_params", "bad_content_type"]


@pytest.mark.parametrize("score", ["1.5", "-0.1", "1e-1", "abc", "NaN"])
def test_score_outside_decimal_range_is_rejected(lms, score):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope(score=score)
    data = lms.post_outcome(body, oauthlib_header(url, body))[2]
    assert status_of(data)["codeMajor"] == "failure"
    assert reasons(lms) == ["bad_score"]


def test_bad_xml_and_unsupported_operation(lms):
    url = f"{lms.base}/outcomes/course-1"
    no_namespace = envelope().replace(f' xmlns="{IMS_NS}"'.encode(), b"")
    read_result = envelope().replace(b"replaceResultRequest", b"readResultRequest")
    for body in (b"<not xml", no_namespace, read_result):
        lms.post_outcome(body, oauthlib_header(url, body))
    assert reasons(lms) == ["bad_xml", "bad_xml", "unsupported_operation"]
    body = read_result
    assert status_of(lms.post_outcome(body, oauthlib_header(url, body))[2])["codeMajor"] == "unsupported"


def test_ims_spec_example_is_accepted_with_spec_style_response(start_lms):
    lms = start_lms(style="ims")
    url = f"{lms.base}/outcomes/course-1"
    data = lms.post_outcome(SPEC_EXAMPLE, manual_header(url, SPEC_EXAMPLE))[2]
    assert status_of(data) == {
        "codeMajor": "success",
        "description": "Score for 3124567 is now 0.92",
        "messageIdentifier": "1",
        "messageRef": "999999123",
        "operationRef": "replaceResult",
        "replaceResultResponse": True,
    }
    [grade] = lms.control("grades")
    assert (grade["sourcedId"], grade["score"], grade["language"]) == ("3124567", 0.92, "en")


def test_fault_modes_apply_to_the_next_n_requests(lms):
    url = f"{lms.base}/outcomes/course-1"

    def send():
        body = envelope()
        return lms.post_outcome(body, oauthlib_header(url, body))

    lms.control("mode", {"mode": "http_500", "count": 2})
    assert [send()[0] for _ in range(3)] == [500, 500, 200]

    lms.control("mode", {"mode": "failure", "count": 1})
    assert status_of(send()[2])["codeMajor"] == "failure"

    lms.control("mode", {"mode": "unparseable", "count": 1})
    status, content_type, data = send()
    assert status == 200 and content_type.startswith("text/html")
    with pytest.raises(ElementTree.ParseError):
        ElementTree.fromstring(data)

    assert len(lms.control("grades")) == 1  # injected faults record nothing
    assert [r["mode"] for r in lms.control("requests")] == [
        "http_500", "http_500", "ok", "failure", "unparseable"]


def test_resending_a_request_after_a_fault_is_a_replay(lms):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope()
    header = oauthlib_header(url, body)
    lms.control("mode", {"mode": "http_500", "count": 1})
    assert lms.post_outcome(body, header)[0] == 500
    lms.post_outcome(body, header)
    assert reasons(lms) == ["replayed_nonce"]


def test_hang_until_client_gives_up_and_reset_clears_everything(lms):
    url = f"{lms.base}/outcomes/course-1"
    body = envelope()
    lms.post_outcome(body, oauthlib_header(url, body))
    lms.control("mode", {"mode": "hang", "count": 1})
    with pytest.raises(socket.timeout):
        lms.post_outcome(body, oauthlib_header(url, body), timeout=0.5)

    assert lms.control("reset", {}) == {"ok": True}  # also releases the hung handler
    assert lms.control("grades") == [] and lms.control("requests") == []
    assert lms.post_outcome(body, oauthlib_header(url, body))[0] == 200


def test_bad_mode_request_is_refused(lms):
    status, _, _ = lms.request("POST", "/_control/mode", b'{"mode": "explode"}')
    assert status == 400


def test_sign_launch_cli_produces_a_verifiable_form_signature():
    url = "https://tool.example.edu/lti/launch?course=42"
    out = subprocess.run(
        [sys.executable, str(HERE / "lms_standin.py"), "sign-launch", "--url", url, "--key", KEY,
         "--secret", SECRET, "--param", "resource_link_id=rl-1", "--param", "user_id=u 1",
         "--param", "lis_outcome_service_url=http://127.0.0.1:1/outcomes/x",
         "--timestamp", "1700000000", "--nonce", "fixed-nonce"],
        check=True, capture_output=True, text=True).stdout
    fields = json.loads(out)

    assert fields["oauth_timestamp"] == "1700000000" and fields["oauth_nonce"] == "fixed-nonce"
    assert fields["lti_message_type"] == "basic-lti-launch-request" and fields["lti_version"] == "LTI-1p0"
    assert fields["oauth_callback"] == "about:blank" and fields["user_id"] == "u 1"
    # Recompute by hand: every form field but the signature, plus the URL's query.
    signed = {k: v for k, v in fields.items() if k != "oauth_signature"}
    signed["course"] = "42"
    pairs = sorted((_pct(k), _pct(v)) for k, v in signed.items())
    base_url = urlsplit(url)._replace(query="").geturl()
    base_string = "&".join(["POST", _pct(base_url), _pct("&".join(f"{k}={v}" for k, v in pairs))])
    expected = base64.b64encode(hmac.new(f"{_pct(SECRET)}&".encode(), base_string.encode(),
                                         hashlib.sha1).digest()).decode()
    assert fields["oauth_signature"] == expected
