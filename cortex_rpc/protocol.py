"""The RPC contract: custom method and notification names.

Param shapes live in ``schemas/rpc/<name>.params.schema.json``; result shapes are documented
in docs/protocol.md and produced by each domain module's ``to_wire``.
"""

from __future__ import annotations

SYSTEM_INFO = "cortex/systemInfo"
INSPECT_MODEL = "cortex/inspectModel"
LIST_MODELS = "cortex/listModels"
PROPOSE_CONFIG = "cortex/proposeConfig"

# Server -> client notifications.
TRAINING_PROGRESS = "cortex/trainingProgress"
GENERATE_CHUNK = "cortex/generateChunk"
DATASET_SUMMARY = "cortex/datasetSummary"

SERVER_NAME = "cortex-rpc"
