"""docs/openapi.yaml itself: well-formed OpenAPI 3.0, its examples valid against its own
schemas, and its paths the routes src/api/mod.rs serves (no cluster needed)."""

from __future__ import annotations

import math
import re

import jsonschema
import pytest

from helpers import REPO_ROOT, load_openapi, schema_validator

pytestmark = pytest.mark.offline

METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_document_basics():
    doc = load_openapi()
    assert doc["openapi"] == "3.0.3"
    from openapi_spec_validator import validate

    validate(doc)  # the OpenAPI 3.0 meta-schema
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)), "operationIds are unique"
    for path, method, op in operations(doc):
        assert op.get("responses"), (path, method)
        for status, resp in op["responses"].items():
            if "$ref" in resp:
                name = resp["$ref"].split("/")[-1]
                resp = doc["components"]["responses"][name]
            content = resp.get("content", {})
            assert "application/json" in content, f"{method.upper()} {path} {status}: every answer is JSON"
            schema = content["application/json"]["schema"]
            if status.startswith(("4", "5")) and not (path == "/readyz" and status == "503"):
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{method.upper()} {path} {status}: Error schema"


def _resolve(doc, obj):
    while "$ref" in obj:
        parts = obj["$ref"].lstrip("#/").split("/")
        obj = doc
        for p in parts:
            obj = obj[p]
    return obj


def test_examples_match_their_schemas():
    doc = load_openapi()
    checked = 0
    for path, method, op in operations(doc):
        bodies = []
        # A JSON request body's examples; a module upload's body is bytes (application/wasm).
        if "requestBody" in op and "application/json" in op["requestBody"]["content"]:
            media = op["requestBody"]["content"]["application/json"]
            bodies.append((media["schema"], media.get("example"), media.get("examples")))
        for status, resp in op["responses"].items():
            resp = _resolve(doc, resp)
            media = resp["content"]["application/json"]
            bodies.append((media["schema"], media.get("example"), media.get("examples")))
        for schema, example, examples in bodies:
            name = schema["$ref"].split("/")[-1]
            values = ([example] if example is not None else []) + [e["value"] for e in (examples or {}).values()]
            for v in values:
                errors = list(schema_validator(name).iter_errors(v))
                assert not errors, f"{method.upper()} {path}: example {v} does not match {name}: {errors[0].message}"
                checked += 1
    assert checked >= 20


def test_submit_request_schema_is_exact():
    """The schema accepts what the server accepts and refuses what it refuses, on the cases
    test_contract.py sends (the live half of this check)."""
    v = schema_validator("SubmitRequest", strict=False)
    ok = [
        {"type": "echo"},
        {"type": "echo", "payload": "x", "timeout_ms": None, "max_attempts": None},
        {"type": "compute", "payload": "", "timeout_ms": 3600000, "max_attempts": 100},
        {"type": "sleep", "payload": " +250 "},
        {"type": "sleep", "payload": "600000"},
        {"type": "storage", "payload": "put k a value"},
        {"type": "storage", "payload": "get k"},
        {"type": "wasm", "module": "sha256:" + "ab" * 32, "payload": "input", "args": ["-n", "3"]},
    ]
    bad = [
        {"type": "echo", "colour": "red"},
        {"type": "nope"},
        {"type": ""},
        {"payload": "x"},
        {"type": "echo", "payload": None},
        {"type": "echo", "timeout_ms": 0},
        {"type": "echo", "timeout_ms": 3600001},
        {"type": "echo", "max_attempts": 101},
        {"type": "echo", "max_attempts": "3"},
        {"type": "sleep"},
        {"type": "sleep", "payload": "600001"},
        {"type": "sleep", "payload": "soon"},
        {"type": "storage", "payload": "get a b"},
        {"type": "storage", "payload": "put k"},
        {"type": "wasm", "payload": "x"},
        {"type": "wasm", "module": "sha256:xyz"},
        {"type": "wasm", "module": "sha256:" + "ab" * 32, "args": "not a list"},
        {"type": "echo", "module": "sha256:" + "ab" * 32},
    ]
    for b in ok:
        assert v.is_valid(b), b
    for b in bad:
        assert not v.is_valid(b), b


def test_paths_match_the_router():
    src = (REPO_ROOT / "src" / "api" / "mod.rs").read_text()
    routes = {}
    for path, handlers in re.findall(r'\.route\(\s*"([^"]+)",\s*([^\n]+)\)\n', src):
        methods = set(re.findall(r"\b(get|post|put|delete|patch)\(", handlers))
        routes[path] = methods
    assert routes, "no .route(...) found in src/api/mod.rs"
    doc = load_openapi()
    documented = {p: {m for m in item if m in METHODS} for p, item in doc["paths"].items()}
    assert documented == routes, f"docs/openapi.yaml paths {documented} != router {routes}"
    limit = re.search(r"MAX_BODY_BYTES: usize = ([^;]+);", src)
    assert limit and re.fullmatch(r"[\d\s*_]+", limit.group(1)), limit
    assert math.prod(int(x.replace("_", "")) for x in limit.group(1).split("*")) == 1024 * 1024, "the documented 1 MiB"


def test_validator_is_draft7():
    assert isinstance(schema_validator("TaskRecord"), jsonschema.Draft7Validator)
