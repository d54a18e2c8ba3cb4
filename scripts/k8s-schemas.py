#!/usr/bin/env python3
"""Lays out offline JSON schemas for kubeconform, from registry packages only.

Kubernetes: the PyPI wheel kubernetes-validate ships the API's JSON schemas per minor version
(kubernetes-json-schema/vX.Y.0-local-strict/<kind>-<group>-<version>.json). Those files name
themselves https://kubernetes.io/api/... and point at "/api/_definitions.json", which would send
kubeconform to the web: here each file loses its $id and points at the _definitions.json beside it.

CRDs (KEDA's ScaledObject and TriggerAuthentication): the CustomResourceDefinition YAML in a Go
module, whose openAPIV3Schema becomes a JSON schema. With --strict every object that lists its
properties refuses others (what kubeconform -strict means for built-in kinds), unless the CRD
says x-kubernetes-preserve-unknown-fields.

Usage: k8s-schemas.py OUT --wheel WHEEL --kubernetes-version 1.33.0 [--crd CRD.yaml ...]
Layout (for kubeconform -schema-location):
  OUT/v1.33.0-standalone-strict/<kind>-<group>-<version>.json
  OUT/crds/<group>/<kind>_<version>.json
"""
import argparse
import json
import os
import sys
import zipfile

import yaml


def kubernetes_schemas(wheel: str, version: str, out: str) -> int:
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
    target = os.path.join(out, f"v{version}-standalone-strict")
    os.makedirs(target, exist_ok=True)
    written = 0
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not (name.startswith(prefix) and name.endswith(".json")):
                continue
            raw = z.read(name).replace(b'"/api/_definitions.json#', b'"_definitions.json#')
            doc = json.loads(raw)
            doc.pop("$id", None)
            with open(os.path.join(target, name[len(prefix):]), "w") as f:
                json.dump(doc, f)
            written += 1
    if written == 0:
        sys.exit(f"{wheel} has no schemas for Kubernetes {version}")
    return written


def strict(schema):
    """Refuses unknown fields wherever the schema lists the known ones."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schemas(crd_file: str, out: str) -> list[str]:
    written = []
    with open(crd_file) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                # kubeconform checks apiVersion and kind itself; metadata is ObjectMeta.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                schema["$schema"] = "http://json-schema.org/draft-04/schema#"
                path = os.path.join(out, "crds", group, f"{kind.lower()}_{version['name']}.json")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    json.dump(schema, f)
                written.append(f"{group}/{kind}/{version['name']}")
    return written


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--wheel", required=True)
    p.add_argument("--kubernetes-version", required=True)
    p.add_argument("--crd", action="append", default=[])
    a = p.parse_args()
    n = kubernetes_schemas(a.wheel, a.kubernetes_version, a.out)
    crds = [c for f in a.crd for c in crd_schemas(f, a.out)]
    print(f"{n} Kubernetes {a.kubernetes_version} schemas; CRDs: {', '.join(crds) or 'none'}")


main()
