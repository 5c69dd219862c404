"""The RPC contract: custom method and notification names.

Param shapes live in ``schemas/rpc/<name>.params.schema.json``; result shapes are documented
in docs/protocol.md and produced by each domain module's ``to_wire``.
"""

from __future__ import annotations

SYSTEM_INFO = "cortex/systemInfo"
INSPECT_MODEL = "cortex/inspectModel"
LIST_MODELS = "cortex/listModels"
PROPOSE_CONFIG = "cortex/proposeConfig"

VALIDATE_DATASET = "cortex/validateDataset"
ANALYZE_DATASET = "cortex/analyzeDataset"
DATASET_REPORT = "cortex/datasetReport"
CREATE_DATASET = "cortex/createDataset"
SAMPLE_DATASET = "cortex/sampleDataset"
PREPARE_DATASET = "cortex/prepareDataset"
TRAINING_PREVIEW = "cortex/trainingPreview"

START_TRAINING = "cortex/startTraining"
CANCEL_TRAINING = "cortex/cancelTraining"
RESUME_TRAINING = "cortex/resumeTraining"
LIST_JOBS = "cortex/listJobs"
GENERATE = "cortex/generate"
DELETE_MODEL = "cortex/deleteModel"
FUSE_MODEL = "cortex/fuseModel"
EXPORT_MODEL = "cortex/exportModel"
SERVE = "cortex/serve"
STOP_SERVING = "cortex/stopServing"
LIST_SERVERS = "cortex/listServers"
LIST_ADAPTERS = "cortex/listAdapters"
COMPARE_ADAPTERS = "cortex/compareAdapters"
EVALUATE = "cortex/evaluate"
TUNE_HYPERPARAMETERS = "cortex/tuneHyperparameters"
# Client -> server notification: keep running jobs alive after the client goes away.
DETACH = "cortex/detach"

# Server -> client notifications.
TRAINING_PROGRESS = "cortex/trainingProgress"
GENERATE_CHUNK = "cortex/generateChunk"
DATASET_SUMMARY = "cortex/datasetSummary"
TUNING_PROGRESS = "cortex/tuningProgress"

SERVER_NAME = "cortex-rpc"
