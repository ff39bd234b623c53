#!/usr/bin/env python3
"""Validate the sample RealtimeRoutes in examples/k8s/ against the OpenAPI v3 schema in
crds/realtimeroutes.yaml (patterns, bounds, enums, required fields, maxItems), the part of the
CRD that the Rust tests do not evaluate. CEL rules are checked by `cargo test` (tests/crd.rs and
tests/examples.rs, through kube's client-side CEL evaluator).

Also checks that the schema refuses a handful of known-bad variants, so a pattern that stopped
matching anything would be noticed, and that the room-pattern `pattern` accepts exactly the
gateway's grammar on a table of examples (the same table as `the_room_pattern_grammar_is_the_gateways`
in operator/src/compile.rs).

    python3 -m pip install jsonschema pyyaml   # once
    python3 operator/tests/validate_examples.py

The OpenAPI schema is turned into JSON Schema the way the API server reads it: `nullable` allows
null; `x-kubernetes-*` keys are dropped. Objects are made strict (no unknown fields) so a typo in
a sample fails here instead of being pruned silently by the API server.
"""
import copy
import pathlib
import re
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


def rooms_bad_variants(rooms):
    def variant(label, mutate):
        d = copy.deepcopy(rooms)
        mutate(d["spec"]["rooms"])
        return label, d

    return [
        variant("room pattern with `**`", lambda r: r.__setitem__("join", ["chat:**"])),
        variant("room pattern with a dot", lambda r: r.__setitem__("join", ["chat.lobby"])),
        variant("room pattern with an empty claim", lambda r: r.__setitem__("publish", ["user:{}"])),
        variant("room pattern with an unclosed claim", lambda r: r.__setitem__("publish", ["user:{sub"])),
        variant("empty room pattern", lambda r: r.__setitem__("join", [""])),
        variant("33 join patterns", lambda r: r.__setitem__("join", [f"r{i}" for i in range(33)])),
        variant("unknown protocol", lambda r: r.__setitem__("protocol", "socketio")),
        variant("pathRoom without {room}", lambda r: r.__setitem__("pathRoom", "/collab/doc")),
        variant("pathRoom with two {room}", lambda r: r.__setitem__("pathRoom", "/c/{room}/{room}")),
        variant("pathRoom without a leading slash", lambda r: r.__setitem__("pathRoom", "collab/{room}")),
        variant("namespace with a dot", lambda r: r.__setitem__("namespace", "a.b")),
        variant("maxQueueBytes below 4096", lambda r: r.__setitem__("maxQueueBytes", 1024)),
        variant("zero history messages", lambda r: r["history"].__setitem__("maxMessages", 0)),
        variant("publish hook without a scheme", lambda r: r["publishHook"].__setitem__("url", "collab-api:8080/x")),
        variant("notify timeout not a duration", lambda r: r["notify"].__setitem__("timeout", "2 seconds")),
        variant("authorization rules (replaced by join/publish)", lambda r: r.__setitem__("authorization", [{"pattern": "*", "actions": ["Join"]}])),
    ]


# Room patterns the gateway parses, and ones it refuses (see the module docstring).
GOOD_ROOM_PATTERNS = ["*", "chat:*", "user:{sub}", "org:{org}:*", "a*b*c", "*{sub}*", "x@y+z=w-v_u", "{a}{b}"]
BAD_ROOM_PATTERNS = ["chat:**", "user:{}", "user:{su b}", "user:{sub", "a.b", "a/b", "caf\u00e9", "a}b", "**"]


def room_pattern_table(schema):
    items = schema["properties"]["spec"]["properties"]["rooms"]["properties"]["join"]["items"]
    pattern = re.compile(items["pattern"])
    problems = []
    for p in GOOD_ROOM_PATTERNS:
        if not pattern.search(p):
            problems.append(f"room pattern {p!r} is refused by the schema but valid for the gateway")
    for p in BAD_ROOM_PATTERNS:
        if pattern.search(p):
            problems.append(f"room pattern {p!r} is accepted by the schema but refused by the gateway")
    return problems


def main():
    schema = load_schema()
    validator = jsonschema.Draft7Validator(schema)
    passed = failed = 0
    chat = None
    rooms = None
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
        if doc["metadata"]["name"] == "presence":
            rooms = doc
    variants = []
    for sample, label, make in [
        (chat, "the chat sample (examples/k8s/chat-proxy.yaml)", bad_variants),
        (rooms, "the rooms sample (examples/k8s/rooms.yaml)", rooms_bad_variants),
    ]:
        if sample is None:
            print(f"FAIL {label} is missing")
            failed += 1
        else:
            variants += make(sample)
    for label, doc in variants:
        if list(validator.iter_errors(doc)):
            passed += 1
            print(f"ok   refused: {label}")
        else:
            failed += 1
            print(f"FAIL accepted but should be refused: {label}")
    problems = room_pattern_table(schema)
    for p in problems:
        failed += 1
        print(f"FAIL {p}")
    if not problems:
        passed += 1
        print(f"ok   room pattern grammar ({len(GOOD_ROOM_PATTERNS)} valid, {len(BAD_ROOM_PATTERNS)} invalid)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
