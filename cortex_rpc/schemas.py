"""Load the JSON Schemas shipped with cortex-rpc and validate RPC params against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidParams

if TYPE_CHECKING:  # jsonschema costs 45 ms to import: not before the first request.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError


def schemas_dir() -> Path:
    """Return the schemas folder: inside the installed package, else the source tree's."""
    packaged = Path(__file__).parent / "schemas"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "schemas"


@cache
def load_schema(relative_path: str) -> dict[str, Any]:
    """Return a schema by its path under ``schemas/`` (cached)."""
    return json.loads((schemas_dir() / relative_path).read_text(encoding="utf-8"))


@cache
def params_validator(method: str) -> Draft202012Validator | None:
    """Return the validator for ``cortex/<name>`` params, or None when the method has no schema."""
    name = method.split("/", 1)[-1]
    path = schemas_dir() / "rpc" / f"{name}.params.schema.json"
    if not path.is_file():
        return None
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(f"rpc/{name}.params.schema.json"))


def _json_path(error: ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(error: ValidationError) -> tuple[str, str]:
    field = _json_path(error)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        field = f"{field}.{missing}" if field else missing
        return field, f"{field} is required"
    if error.validator == "additionalProperties":
        extra = [p for p in error.instance if p not in error.schema.get("properties", {})]
        name = extra[0] if extra else "?"
        field = f"{field}.{name}" if field else name
        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        return field, f"{field} is not a known parameter (allowed: {allowed})"
    where = field or "params"
    return where, f"{where}: {error.message}"


def validate_params(method: str, params: Any) -> dict[str, Any]:
    """Return ``params`` as a dict if valid for ``method``; raise InvalidParams naming the field."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParams("params must be an object", field="params")
    validator = params_validator(method)
    if validator is None:
        return params
    error = next(iter(sorted(validator.iter_errors(params), key=lambda e: e.path)), None)
    if error is not None:
        field, message = _describe(error)
        raise InvalidParams(message, field=field, schemaPath="/".join(map(str, error.schema_path)))
    return params
