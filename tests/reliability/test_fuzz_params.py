"""Property-based fuzzing of every cortex/* method's params, generated from its schema.

Every reply must be a result or a JSON-RPC error, within 10 s, and the server must still
answer cortex/systemInfo afterwards. Methods that would write files get their paths moved
into a temporary folder; startTraining gets a model that does not exist, so no job runs.
"""

from __future__ import annotations

import json
import os
import select
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rpc.schemas import schemas_dir

from .test_stdio_faults import RawServer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")]

SCHEMAS = {
    path.name.split(".")[0]: json.loads(path.read_text())
    for path in sorted((schemas_dir() / "rpc").glob("*.params.schema.json"))
}
# Fields that name files the method writes, and fields that could start real work.
WRITTEN_PATHS = {"createDataset": "path", "sampleDataset": "path", "prepareDataset": "outDir"}
CASES_PER_METHOD = int(os.environ.get("CORTEX_FUZZ_CASES", "200"))
REPLY_TIMEOUT = 10.0
COUNTS: dict[str, int] = {}

def from_schema(schema: dict) -> st.SearchStrategy:
    """Values valid for the subset of JSON Schema our RPC schemas use.

    (hypothesis-jsonschema does not work with current hypothesis releases.)
    """
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 60), 60))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {"type": "string"})),
                        min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 4), 4))
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not properties:
            return st.just({}) if schema.get("additionalProperties") is False else json_values
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    return json_values


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)


def mutated(schema: dict) -> st.SearchStrategy:
    """Valid params, params with one field wrong, extra fields, or any JSON value at all."""
    valid = from_schema(schema)
    keys = list(schema.get("properties", {}))

    def break_one(params: dict, key: str, value: object) -> object:
        return {**params, key: value} if isinstance(params, dict) else params

    wrong_field = (
        st.tuples(valid, st.sampled_from(keys), json_values).map(lambda t: break_one(*t))
        if keys else valid
    )
    extra = st.tuples(valid, st.text(min_size=1, max_size=12), json_values).map(
        lambda t: {**t[0], t[1]: t[2]} if isinstance(t[0], dict) else t[0]
    )
    huge = valid.map(
        lambda p: {k: ("z" * 100_000 if isinstance(v, str) else v) for k, v in p.items()}
        if isinstance(p, dict) else p
    )
    return st.one_of(valid, wrong_field, extra, huge, json_values)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz-home")
    env = dict(os.environ, CORTEX_HOME=str(home), HF_HUB_OFFLINE="1")
    server = RawServer(env=env)
    server.initialize()
    yield server, tmp_path_factory.mktemp("fuzz-files")
    server.close()
    total = sum(COUNTS.values())
    print(f"\nfuzzed {total} requests over {len(COUNTS)} methods: {COUNTS}")


def confine(method: str, params: object, folder: Path, number: int) -> object:
    if not isinstance(params, dict):
        return params
    params = dict(params)
    field = WRITTEN_PATHS.get(method)
    if field and field in params:
        params[field] = str(folder / f"{method}-{number}")
    if method == "startTraining" and "model" in params:
        params["model"] = str(folder / "no-such-model")
    return params


def reply_within(server: RawServer, msg_id: int, seconds: float) -> dict:
    fd = server.process.stdout.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], seconds)
        assert ready, f"no reply to request {msg_id} within {seconds} s"
        message = server.read()
        if message.get("id") == msg_id and "method" not in message:
            return message


@pytest.mark.parametrize("method", sorted(SCHEMAS))
def test_every_reply_is_a_result_or_an_error(fuzz_server, method):
    server, folder = fuzz_server
    schema = SCHEMAS[method]

    @settings(max_examples=CASES_PER_METHOD, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(params=mutated(schema))
    def case(params: object) -> None:
        number = COUNTS[method] = COUNTS.get(method, 0) + 1
        msg_id = 10_000_000 + sum(COUNTS.values())
        message = {"jsonrpc": "2.0", "id": msg_id, "method": f"cortex/{method}",
                   "params": confine(method, params, folder, number)}
        server.send(message)
        reply = reply_within(server, msg_id, REPLY_TIMEOUT)
        assert ("result" in reply) != ("error" in reply), reply
        if "error" in reply:
            assert isinstance(reply["error"]["code"], int) and reply["error"]["message"]
            assert reply["error"]["code"] != -32603, reply  # no internal errors

    case()
    assert server.process.poll() is None, "the server died"
    check = server.request("cortex/systemInfo", {})
    assert "backend" in check["result"]
