"""Property-based fuzzing of every cortex/* method's params, generated from its schema.

Every reply must be a result or a JSON-RPC error, within 10 s, and the server must still
answer cortex/systemInfo afterwards. Methods that would write files get their paths moved
into a temporary folder; methods that would train, tune or evaluate get a model that does not
exist, so no job runs.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cortex_rpc.schemas import schemas_dir

from .test_stdio_faults import RawServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
]

SCHEMAS = {
    path.name.split(".")[0]: json.loads(path.read_text())
    for path in sorted((schemas_dir() / "rpc").glob("*.params.schema.json"))
}
# Fields that name files the method writes, and fields that could start real work.
WRITTEN_PATHS = {"createDataset": "path", "sampleDataset": "path", "prepareDataset": "outDir"}
# Methods that would train, tune, evaluate, export or serve for real given a model that exists.
STARTS_WORK = {"startTraining", "tuneHyperparameters", "evaluate", "exportModel", "serve"}
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
        return st.text(
            min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 60), 60)
        )
    if kind == "integer":
        low, high = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        if "exclusiveMinimum" in schema:
            low = math.floor(schema["exclusiveMinimum"]) + 1
        if "exclusiveMaximum" in schema:
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        return st.integers(low, high)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        return st.floats(
            low,
            high,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {"type": "string"})),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 4), 4),
        )
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not properties:
            if schema.get("additionalProperties") is False:
                return st.just({})
            return st.dictionaries(st.text(max_size=10), json_values, max_size=4)
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    return json_values


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
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
        if keys
        else valid
    )
    extra = st.tuples(valid, st.text(min_size=1, max_size=12), json_values).map(
        lambda t: {**t[0], t[1]: t[2]} if isinstance(t[0], dict) else t[0]
    )
    huge = valid.map(
        lambda p: (
            {k: ("z" * 100_000 if isinstance(v, str) else v) for k, v in p.items()}
            if isinstance(p, dict)
            else p
        )
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
    if method in STARTS_WORK:  # no real training or tuning: the model never resolves
        for key in ("model", "continueFrom"):
            if key in params:
                params[key] = str(folder / "no-such-model")
    return params


def reply_within(server: RawServer, msg_id: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            message = server.read(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pytest.fail(f"no reply to request {msg_id} within {seconds} s")
        if message.get("id") == msg_id and "method" not in message:
            return message


@pytest.mark.parametrize("method", sorted(SCHEMAS))
def test_every_reply_is_a_result_or_an_error(fuzz_server, method):
    server, folder = fuzz_server
    schema = SCHEMAS[method]

    # No shrinking: a hung case costs 10 s per shrink step; the failing params are printed.
    @settings(
        max_examples=CASES_PER_METHOD,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(params=mutated(schema))
    def case(params: object) -> None:
        number = COUNTS[method] = COUNTS.get(method, 0) + 1
        msg_id = 10_000_000 + sum(COUNTS.values())
        message = {
            "jsonrpc": "2.0",
            "id": msg_id,
            "method": f"cortex/{method}",
            "params": confine(method, params, folder, number),
        }
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


positions = st.fixed_dictionaries(
    {
        "line": st.integers(-3, 2**31) | st.sampled_from([0, 1, 2, 3]) | json_values,
        "character": st.integers(-3, 2**31) | st.sampled_from([0, 1, 5, 40]) | json_values,
    }
)
ranges = st.fixed_dictionaries({"start": positions, "end": positions}) | json_values
DOC_TEXT = '{"prompt": "a", "response": "b"}\n{"prompt": "c"}\nnot json\n'
document_messages = st.one_of(
    st.builds(
        lambda uri, lang, text, version: (
            "textDocument/didOpen",
            False,
            {"textDocument": {"uri": uri, "languageId": lang, "version": version, "text": text}},
        ),
        st.sampled_from(["file:///f/a.jsonl", "file:///f/b.csv", "file:///f/c.txt", "junk:"])
        | st.text(max_size=20),
        st.sampled_from(["jsonl", "json", "csv", "plaintext"]) | st.text(max_size=5),
        st.text(max_size=200) | st.just(DOC_TEXT),
        st.integers() | json_values,
    ),
    st.builds(
        lambda range_, text, version: (
            "textDocument/didChange",
            False,
            {
                "textDocument": {"uri": "file:///f/a.jsonl", "version": version},
                "contentChanges": [{"range": range_, "text": text}],
            },
        ),
        ranges,
        st.text(max_size=60),
        st.integers(-5, 10**6),
    ),
    st.builds(
        lambda text: (
            "textDocument/didChange",
            False,
            {
                "textDocument": {"uri": "file:///f/a.jsonl", "version": 7},
                "contentChanges": [{"text": text}],
            },
        ),
        st.text(max_size=200),
    ),
    st.builds(
        lambda uri, position: (
            "textDocument/hover",
            True,
            {"textDocument": {"uri": uri}, "position": position},
        ),
        st.sampled_from(["file:///f/a.jsonl", "file:///f/b.csv", "file:///nope.jsonl"]),
        positions,
    ),
    st.builds(
        lambda range_, diagnostics: (
            "textDocument/codeAction",
            True,
            {
                "textDocument": {"uri": "file:///f/a.jsonl"},
                "range": range_,
                "context": {"diagnostics": diagnostics},
            },
        ),
        ranges,
        st.lists(json_values, max_size=2),
    ),
    st.builds(
        lambda uri: ("textDocument/didClose", False, {"textDocument": {"uri": uri}}),
        st.sampled_from(["file:///f/a.jsonl", "file:///f/b.csv", "file:///x.jsonl"]),
    ),
)


def test_hostile_document_traffic_leaves_the_editor_working(fuzz_server):
    """Junk didOpen/didChange/hover/codeAction: every request answered, and afterwards a
    fresh document still gets diagnostics and hovers (the document thread survived)."""
    server, _ = fuzz_server
    opened = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {
                    "uri": "file:///f/a.jsonl",
                    "languageId": "jsonl",
                    "version": 1,
                    "text": DOC_TEXT,
                }
            },
        }
    )
    server.send(json.loads(opened))

    @settings(
        max_examples=CASES_PER_METHOD * 2,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(messages=st.lists(document_messages, min_size=1, max_size=6))
    def case(messages) -> None:
        for method, is_request, params in messages:
            COUNTS["documents"] = COUNTS.get("documents", 0) + 1
            message = {"jsonrpc": "2.0", "method": method, "params": params}
            if not is_request:
                server.send(message)
                continue
            msg_id = message["id"] = 20_000_000 + sum(COUNTS.values())
            server.send(message)
            reply = reply_within(server, msg_id, REPLY_TIMEOUT)
            assert ("result" in reply) != ("error" in reply), reply
            if "error" in reply:
                assert reply["error"]["code"] in (-32602, -32600), reply

    case()
    uri = "file:///f/after-the-storm.jsonl"
    server.send(
        {
            "jsonrpc": "2.0",
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {"uri": uri, "languageId": "jsonl", "version": 1, "text": DOC_TEXT}
            },
        }
    )
    deadline = time.monotonic() + REPLY_TIMEOUT
    while True:
        message = server.read(timeout=max(0.0, deadline - time.monotonic()))
        if (
            message.get("method") == "textDocument/publishDiagnostics"
            and message["params"]["uri"] == uri
        ):
            break
    codes = {d["code"] for d in message["params"]["diagnostics"]}
    assert {"missing-field", "json-syntax"} <= codes, codes
    hover = server.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 2}},
    )
    assert "prompt-response" in hover["result"]["contents"]["value"], hover
    assert "backend" in server.request("cortex/systemInfo", {})["result"]


option_values = (
    st.fixed_dictionaries(
        {},
        optional={
            "modelDirs": st.lists(st.text(max_size=30) | json_values, max_size=3) | json_values,
            "cortexHome": st.text(max_size=30) | json_values,
            "diagnosticsDebounceMs": st.integers(-10, 10**9) | json_values,
            "defaultModel": st.text(max_size=30) | json_values,
        },
    )
    | json_values
)


@settings(
    max_examples=max(5, CASES_PER_METHOD // 20),
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
@given(options=option_values)
def test_any_initialization_options_start_the_server(tmp_path_factory, options):
    """Bad options are warnings and defaults, never a refusal to start (DESIGN.md)."""
    home = tmp_path_factory.mktemp("options-home")
    if isinstance(options, dict) and "cortexHome" in options:
        options = {**options, "cortexHome": str(home / "from-options")}  # never a real path
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(home), HF_HUB_OFFLINE="1"))
    try:
        reply = server.request("initialize", {"capabilities": {}, "initializationOptions": options})
        assert "result" in reply, reply
        server.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        assert "backend" in server.request("cortex/systemInfo", {})["result"]
        COUNTS["initializationOptions"] = COUNTS.get("initializationOptions", 0) + 1
    finally:
        server.close()


@pytest.mark.parametrize("method", sorted(SCHEMAS))
def test_the_generator_makes_params_the_schema_accepts(method):
    """Otherwise the 'valid' fuzz cases would only ever exercise the schema check."""
    from cortex_rpc.errors import InvalidParams
    from cortex_rpc.schemas import validate_params

    rejected = []

    @settings(
        max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(params=from_schema(SCHEMAS[method]))
    def case(params) -> None:
        try:
            validate_params(f"cortex/{method}", params)
        except InvalidParams as error:
            rejected.append((params, error.message))

    case()
    assert not rejected, rejected[:3]


CONFIG_KEYS = [
    "fineTuneType",
    "epochs",
    "iterations",
    "learningRate",
    "loraRank",
    "loraAlpha",
    "loraDropout",
    "numLayers",
    "batchSize",
    "gradAccumulationSteps",
    "maxSeqLength",
    "quantizationBits",
    "gradCheckpoint",
    "clearCacheThreshold",
    "seed",
    "trainOn",
    "trainTemplateText",
    "lrSchedule",
    "warmupSteps",
    "warmupRatio",
    "lrFloorRatio",
    "optimizer",
    "weightDecay",
    "keepBest",
    "earlyStopping",
]
config_values = (
    st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, 2, 4, 8, 1e-4, 0.5, "lora", "dora", "full", "all", "last", None, True])
    | st.sampled_from(["cosine", "linear", "adamw", "muon", {"patience": 2}, {"patience": 0}])
    | json_values
)
overrides = st.dictionaries(
    st.sampled_from(CONFIG_KEYS) | st.text(max_size=12), config_values, max_size=5
)


def test_config_overrides_on_a_real_model(fuzz_server, tiny_model_template, sample_dataset_path):
    """The config path behind proposeConfig and startTraining, reached with a real model and
    dataset: any overrides give a config or an error naming the field, never a crash."""
    server, _ = fuzz_server

    @settings(
        max_examples=CASES_PER_METHOD * 2,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(
        overrides=overrides,
        preset=st.sampled_from([None, "quick", "balanced", "quality", "expert"]),
        stats=st.none()
        | st.fixed_dictionaries(
            {"examples": st.integers(1, 10**9)},
            optional={
                "meanChars": st.floats(0, 1e9),
                "maxChars": st.integers(0, 10**9),
                "taskType": st.sampled_from(["chat", "completion", "structured"]),
            },
        ),
    )
    def case(overrides, preset, stats) -> None:
        COUNTS["proposeConfig+model"] = COUNTS.get("proposeConfig+model", 0) + 1
        params = {"model": str(tiny_model_template), "overrides": overrides}
        if stats is None:
            params["dataset"] = str(sample_dataset_path)
        else:
            params["datasetStats"] = stats
        if preset:
            params["preset"] = preset
        msg_id = 30_000_000 + sum(COUNTS.values())
        server.send(
            {"jsonrpc": "2.0", "id": msg_id, "method": "cortex/proposeConfig", "params": params}
        )
        reply = reply_within(server, msg_id, REPLY_TIMEOUT)
        assert ("result" in reply) != ("error" in reply), reply
        if "error" in reply:
            assert reply["error"]["code"] in (-32602, -32000), (params, reply)
            return
        config = reply["result"]["config"]
        assert config["iterations"] >= 1 and config["batchSize"] >= 1, (params, config)
        assert math.isfinite(config["learningRate"]) and config["learningRate"] > 0, config

    case()


CONFIG_JSON_KEYS = [
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "tie_word_embeddings",
    "torch_dtype",
    "quantization",
    "quantization_config",
    "text_config",
    "num_local_experts",
    "attention_bias",
    "eos_token_id",
]
config_junk = (
    json_values
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.fixed_dictionaries({}, optional={"bits": json_values, "group_size": json_values})
)


def test_a_model_with_a_hostile_config_json(
    fuzz_server, tiny_model_template, tmp_path_factory, sample_dataset_path
):
    """config.json and tokenizer.json are untrusted: wrong types, NaN, infinities, absurd sizes,
    deep nesting give a result or an error with data.code from inspect/propose/analyze, never
    an internal error."""
    server, _ = fuzz_server
    original = json.loads((tiny_model_template / "config.json").read_text())
    folder = tmp_path_factory.mktemp("hostile-configs")

    @settings(
        max_examples=max(20, CASES_PER_METHOD // 2),
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(
        changes=st.dictionaries(st.sampled_from(CONFIG_JSON_KEYS), config_junk, max_size=5),
        weights=st.booleans(),
        whole=st.none() | json_values,
        tokenizer=st.none() | json_values,
    )
    def case(changes, weights, whole, tokenizer) -> None:
        number = COUNTS["config.json"] = COUNTS.get("config.json", 0) + 1
        model = folder / f"m{number}"
        model.mkdir()
        for source in tiny_model_template.iterdir():
            if source.name != "config.json" and (weights or source.suffix != ".safetensors"):
                (model / source.name).write_bytes(source.read_bytes())
        config = {**original, **changes} if whole is None else whole
        (model / "config.json").write_text(json.dumps(config))
        if tokenizer is not None:  # tokenizer.json is untrusted too
            (model / "tokenizer.json").write_text(json.dumps(tokenizer))
        for index, (method, params) in enumerate(
            (
                ("cortex/inspectModel", {"path": str(model)}),
                (
                    "cortex/proposeConfig",
                    {"model": str(model), "dataset": str(sample_dataset_path)},
                ),
                ("cortex/analyzeDataset", {"path": str(sample_dataset_path), "model": str(model)}),
                (
                    "cortex/datasetReport",
                    {"path": str(sample_dataset_path), "model": str(model), "format": "json"},
                ),
            )
        ):
            msg_id = 40_000_000 + sum(COUNTS.values()) * 4 + index
            server.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
            reply = reply_within(server, msg_id, REPLY_TIMEOUT)
            assert ("result" in reply) != ("error" in reply), reply
            if "error" in reply:
                assert reply["error"]["code"] in (-32602, -32000), (method, config, reply)

    case()
    nested = folder / "nested"
    nested.mkdir()
    (nested / "config.json").write_text('{"text_config": ' * 900 + "{}" + "}" * 900)
    reply = server.request("cortex/inspectModel", {"path": str(nested)})
    assert reply["error"]["code"] == -32000, reply
