#!/usr/bin/env python3
"""Validate the sample RealtimeRoutes in examples/k8s/ against the OpenAPI v3 schema in
crds/realtimeroutes.yaml (patterns, bounds, enums, required fields, maxItems), the part of the
CRD that the Rust tests do not evaluate. CEL rules are checked by `cargo test` (tests/crd.rs and
tests/examples.rs, through kube's client-side CEL evaluator).

Also checks that the schema refuses a handful of known-bad variants, so a pattern that stopped
matching anything would be noticed.

    python3 -m pip install jsonschema pyyaml   # once
    python3 operator/tests/validate_examples.py

The OpenAPI schema is turned into JSON Schema the way the API server reads it: `nullable` allows
null; `x-kubernetes-*` keys are dropped. Objects are made strict (no unknown fields) so a typo in
a sample fails here instead of being pruned silently by the API server.
"""
import copy
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "realtimeroutes.yaml"
EXAMPLES = ROOT / "examples" / "k8s"


def to_json_schema(node):
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def load_schema():
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = to_json_schema(version["schema"]["openAPIV3Schema"])
    # metadata is validated by the API server itself, not by the CRD schema.
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": "switchboard.dev/v1alpha1"}
    schema["properties"]["kind"] = {"const": "RealtimeRoute"}
    return schema


def samples():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "RealtimeRoute":
                yield path.name, doc


def bad_variants(chat):
    def variant(label, mutate):
        d = copy.deepcopy(chat)
        mutate(d["spec"])
        return label, d

    return [
        variant("origin with a path", lambda s: s["auth"].__setitem__("allowedOrigins", ["https://app.example.com/x"])),
        variant("origin without a scheme", lambda s: s["auth"].__setitem__("allowedOrigins", ["app.example.com"])),
        variant("uppercase hostname", lambda s: s.__setitem__("hostnames", ["Chat.Example.com"])),
        variant("hostname with a port", lambda s: s.__setitem__("hostnames", ["chat.example.com:443"])),
        variant("17 hostnames", lambda s: s.__setitem__("hostnames", [f"h{i}.example.com" for i in range(17)])),
        variant("port out of range", lambda s: s["backend"].__setitem__("port", 70000)),
        variant("bad duration", lambda s: s["drain"].__setitem__("window", "30 seconds")),
        variant("unknown mode", lambda s: s.__setitem__("mode", "tunnel")),
        variant("unknown algorithm", lambda s: s["auth"]["jwt"]["providers"][0].__setitem__("algorithms", ["none"])),
        variant("path without a leading slash", lambda s: s["path"].__setitem__("value", "ws")),
        variant("close reason over 123 characters", lambda s: s["drain"].__setitem__("closeReason", "x" * 124)),
        variant("unknown field", lambda s: s.__setitem__("backends", [])),
        variant("zero messages per second", lambda s: s["limits"].__setitem__("messagesPerSecond", 0)),
    ]


def main():
    schema = load_schema()
    validator = jsonschema.Draft7Validator(schema)
    passed = failed = 0
    chat = None
    for name, doc in samples():
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            failed += 1
            for e in errors:
                print(f"FAIL {name} {doc['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
        else:
            passed += 1
            print(f"ok   {name} {doc['metadata']['name']}")
        if doc["metadata"]["name"] == "chat":
            chat = doc
    if chat is None:
        print("FAIL the chat sample (examples/k8s/chat-proxy.yaml) is missing")
        failed += 1
    else:
        for label, doc in bad_variants(chat):
            if list(validator.iter_errors(doc)):
                passed += 1
                print(f"ok   refused: {label}")
            else:
                failed += 1
                print(f"FAIL accepted but should be refused: {label}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
