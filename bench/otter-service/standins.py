"""
STAND-INS for the two services otter-service 2.2.8 talks to while it takes a submission, on loopback,
for bench/intake-vs-otter-service.ts. Neither is the real service; both answer the exact requests
otter-service's code makes, so that its own code runs unmodified and its per-submission work is done:

- A STAND-IN JUPYTERHUB API (HTTP), at JUPYTERHUB_API_URL = http://127.0.0.1:<port>/hub/api:
  - GET /hub/api/user, `Authorization: token <t>`: what jupyterhub.services.auth.HubAuth asks to
    identify the bearer of a token (OtterHandler.get_current_user). A student's token (from the
    --tokens file) gets that student's model, with the access scope a JupyterHub-managed service named
    otter_grade requires; any other token gets 403, which HubAuth reads as "no user".
  - GET /hub/api/users/<name>, `Authorization: token <service token>`: ags.fetch_user_auth_state,
    which OtterHandler.post calls for every submission when JUPYTERHUB_API_URL and
    JUPYTERHUB_API_TOKEN are set (as they are for a hub-managed service). The model carries an LTI 1.3
    auth_state whose lineitem and token URLs are on 127.0.0.1:9; nothing reaches them, since grading
    fails before any grade would be posted.
  - GET /bench/stats: this process's counters, for the bench.
- A STAND-IN CLOUD FIRESTORE (gRPC), at FIRESTORE_EMULATOR_HOST = 127.0.0.1:<port>: the one RPC
  `CollectionReference.add` makes, google.firestore.v1.Firestore/Commit, answered with a WriteResult
  per write (nothing is kept but counters per collection and the first document's message in each).
  Every other method answers UNIMPLEMENTED. The Firestore emulator proper needs Java and the gcloud
  SDK, which this machine cannot fetch; a closed port would not do either: the client's default retry
  for Commit backs off for up to a minute on UNAVAILABLE, synchronously on otter-service's event loop.

Prints one JSON line {"hub": port, "firestore": port} on stdout once both listen. Stops on SIGTERM.
Runs with the otter-service venv's Python (tornado, grpcio, google-cloud-firestore are there).
"""
import argparse
import asyncio
import json
import signal
import time

import grpc
import tornado.httpserver
import tornado.netutil
import tornado.web
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.protobuf import timestamp_pb2

CommitRequest = firestore_types.CommitRequest.pb()
CommitResponse = firestore_types.CommitResponse.pb()

STATS = {
    "hubUserLookups": 0,
    "hubUserUnknownToken": 0,
    "hubAuthStateLookups": 0,
    "hubAuthStateRefused": 0,
    "firestoreCommits": 0,
    "firestoreWrites": {},
    # Documents whose `type` field is "error" (write_logs' error entries: a failed grading is one).
    "firestoreErrorDocuments": 0,
    "firestoreFirstErrorMessage": None,
    # The first document's `message` field written to each collection (the -logs collection tells
    # why grading stopped).
    "firestoreFirstMessage": {},
}


def user_model(name):
    return {
        "kind": "user",
        "name": name,
        "admin": False,
        "groups": [],
        "scopes": ["access:services!service=otter_grade"],
        "session_id": None,
    }


class UserHandler(tornado.web.RequestHandler):
    def get(self):
        STATS["hubUserLookups"] += 1
        auth = self.request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        name = self.settings["tokens"].get(token)
        if name is None:
            STATS["hubUserUnknownToken"] += 1
            self.set_status(403)
            self.finish({"status": 403, "message": "not authenticated"})
            return
        self.finish(user_model(name))


class UsersHandler(tornado.web.RequestHandler):
    def get(self, name):
        STATS["hubAuthStateLookups"] += 1
        if self.request.headers.get("Authorization") != f"token {self.settings['service_token']}" or name not in self.settings["names"]:
            STATS["hubAuthStateRefused"] += 1
            self.set_status(404 if name not in self.settings["names"] else 403)
            self.finish({"status": self.get_status(), "message": "no such user or not allowed"})
            return
        model = user_model(name)
        model["auth_state"] = {
            "lti13_ags": {
                "lineitem": f"http://127.0.0.1:9/lineitems/{name}",
                "token_url": "http://127.0.0.1:9/token",
                "client_id": "bench-client",
                "sub": f"sub-{name}",
            }
        }
        self.finish(model)


class StatsHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish(STATS)


async def commit(request_bytes, _context):
    request = CommitRequest.FromString(request_bytes)
    STATS["firestoreCommits"] += 1
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    response = CommitResponse()
    response.commit_time.CopyFrom(now)
    for write in request.writes:
        # projects/<p>/databases/<d>/documents/<collection>/<id>
        parts = write.update.name.split("/documents/", 1)[-1].split("/")
        collection = parts[0] if parts else "?"
        STATS["firestoreWrites"][collection] = STATS["firestoreWrites"].get(collection, 0) + 1
        if "type" in write.update.fields and write.update.fields["type"].string_value == "error":
            STATS["firestoreErrorDocuments"] += 1
            if STATS["firestoreFirstErrorMessage"] is None and "message" in write.update.fields:
                STATS["firestoreFirstErrorMessage"] = write.update.fields["message"].string_value[:500]
        if collection not in STATS["firestoreFirstMessage"] and "message" in write.update.fields:
            STATS["firestoreFirstMessage"][collection] = write.update.fields["message"].string_value[:500]
        response.write_results.add().update_time.CopyFrom(now)
    return response.SerializeToString()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", required=True, help="JSON file: {token: student name}")
    parser.add_argument("--service-token", required=True, help="otter-service's own JUPYTERHUB_API_TOKEN")
    args = parser.parse_args()
    with open(args.tokens, encoding="utf8") as f:
        tokens = json.load(f)

    app = tornado.web.Application(
        [
            (r"/hub/api/user", UserHandler),
            (r"/hub/api/users/([^/]+)", UsersHandler),
            (r"/bench/stats", StatsHandler),
        ],
        tokens=tokens,
        names=set(tokens.values()),
        service_token=args.service_token,
    )
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    tornado.httpserver.HTTPServer(app).add_sockets(sockets)
    hub_port = sockets[0].getsockname()[1]

    # Identity (de)serializers: commit() parses and builds the protobufs itself.
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("google.firestore.v1.Firestore", {"Commit": grpc.unary_unary_rpc_method_handler(commit)}),)
    )
    firestore_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"hub": hub_port, "firestore": firestore_port, "startedAt": time.time()}), flush=True)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
