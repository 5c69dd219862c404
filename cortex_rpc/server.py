"""The stdio JSON-RPC server: wires protocol messages to the domain functions, nothing more.

The LSP machinery lives in ``lsp/``; each handler here fetches what it needs from the server's
state, calls one domain function and returns its wire form.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from . import __version__, protocol
from .errors import CortexError, InvalidParams
from .lsp.progress import JobProgressRelay, work_done
from .lsp.server import CortexLanguageServer
from .options import InitializationOptions, apply_settings, parse_initialization_options
from .paths import CortexHome

if TYPE_CHECKING:
    from .datasets import LoadedDataset
    from .datasets.documents import DatasetDocuments
    from .generation.runner import ModelRunner
    from .generation.serving import ModelServers
    from .training.jobs import TrainingJobs
    from .training.service import WorkDoneUpdate


class CortexServer(CortexLanguageServer):
    """The cortex-rpc language server and the state it keeps between requests."""

    def __init__(self) -> None:
        super().__init__(protocol.SERVER_NAME, __version__)
        self.options = InitializationOptions()
        self.home: CortexHome = CortexHome.default()  # initialize sets the client's
        # Set by cortex/detach: at exit, let running jobs finish instead of cancelling them.
        self.detached = False
        self.training_progress = JobProgressRelay(
            self, protocol.TRAINING_PROGRESS, _work_done_update
        )
        # Created on first use (the imports they need are not free at startup).
        self._jobs: TrainingJobs | None = None
        self._runner: ModelRunner | None = None
        self._dataset_documents: DatasetDocuments | None = None
        self._model_servers: ModelServers | None = None

    @property
    def jobs(self) -> TrainingJobs:
        """The job manager, created on first use (after initialize has set the home)."""
        if self._jobs is None:
            from .training.jobs import TrainingJobs

            self._jobs = TrainingJobs(self.home, on_event=self.training_progress)
            self.on_exit.append(self._stop_jobs)
        return self._jobs

    @property
    def runner(self) -> ModelRunner:
        """The warm generation worker, started on first use."""
        if self._runner is None:
            from .generation.runner import ModelRunner

            self._runner = ModelRunner()
            self.on_exit.append(self._runner.close)
        return self._runner

    @property
    def model_servers(self) -> ModelServers:
        """The OpenAI-compatible servers of cortex/serve, stopped when this server exits."""
        if self._model_servers is None:
            from .generation.serving import ModelServers

            self._model_servers = ModelServers()
            self.on_exit.append(self._model_servers.close)
        return self._model_servers

    @property
    def dataset_documents(self) -> DatasetDocuments:
        """The open dataset documents, created with the first document event."""
        if self._dataset_documents is None:
            from .datasets.documents import DatasetDocuments

            self._dataset_documents = DatasetDocuments(
                publish_diagnostics=lambda params: self.send_notification(
                    types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS, params
                ),
                publish_summary=lambda summary: self.notify(protocol.DATASET_SUMMARY, summary),
                debounce_seconds=lambda: self.options.diagnostics_debounce_ms / 1000,
                warn=lambda message: self.log(message, types.MessageType.Warning),
            )
            if self.options.model:
                self.check_datasets_with_model()
        return self._dataset_documents

    def check_datasets_with_model(self) -> None:
        """Give open datasets the model of the options (its tokenizer loads off the loop)."""
        from .datasets.trained import view_options
        from .models.registry import resolve_model

        path = None
        if self.options.model:
            try:
                path = str(resolve_model(self.options.model, self.options.model_dirs, self.home))
            except CortexError as error:
                self.log(f"model: {error.message}", types.MessageType.Warning)
        length = self.options.max_seq_length
        self.dataset_documents.set_training(
            path, view_options({"maxSeqLength": length} if length else None)
        )

    def keeps_own_document(self, uri: str, language_id: str | None = None) -> bool:
        from .datasets.editor import is_dataset_document

        return uri in self.dataset_documents or (
            language_id is not None
            and is_dataset_document(uri, language_id, self.options.dataset_files)
        )

    def check_dataset_files(self) -> None:
        """Check the open documents that ``datasetFiles`` now names; stop checking the others.

        A document pygls' workspace holds moves to the dataset documents; one that no longer
        matches stays tracked (its edits apply) with its diagnostics cleared.
        """
        from .datasets.editor import is_dataset_document

        patterns, docs = self.options.dataset_files, self.dataset_documents
        for uri, language_id in docs.open_documents().items():
            docs.set_checked(uri, is_dataset_document(uri, language_id, patterns))
        for document in list(self.workspace.text_documents.values()):
            if is_dataset_document(document.uri, document.language_id, patterns):
                self.workspace.remove_text_document(document.uri)
                docs.open(document.uri, document.source, document.language_id, document.version)

    def experimental_capabilities(self) -> dict[str, Any]:
        return {"cortex": {"methods": sorted(self.cortex_methods), "version": __version__}}

    def submit_job(self, job_id: str, output_name: str, token: str | int | None) -> None:
        """Queue a created job, its ``$/progress`` begun first (so Begin precedes its events).

        ``token`` is the client's workDoneToken; without one, a client that creates progress
        is asked for a token. A job the manager cannot take still ends as ``failed``.
        """
        title = f"Fine-tuning {output_name}"
        if token is not None:
            self.training_progress.begin(job_id, token, title)
        elif self.client_creates_progress:
            self.training_progress.create(job_id, title)
        try:
            self.jobs.submit(job_id)
        except Exception as error:  # noqa: BLE001 - the reply is sent: report it as the job's
            self.training_progress.fail(job_id, output_name, f"The job could not start: {error}")

    def _stop_jobs(self) -> None:
        """On exit, cancel jobs (resumable) unless the client detached: then let them finish."""
        if self.detached:
            self.jobs.wait_all()
        self.jobs.shutdown()


def _work_done_update(payload: dict[str, Any]) -> WorkDoneUpdate:
    from .training.service import work_done_update

    return work_done_update(payload)


server = CortexServer()


@server.feature(types.INITIALIZE)
def initialize(ls: CortexServer, params: types.InitializeParams) -> None:
    ls.options, warnings = parse_initialization_options(params.initialization_options)
    try:
        ls.home = CortexHome.at(ls.options.cortex_home)
    except CortexError as error:  # a bad option is a warning: the default home is used
        ls.home, ls.options.cortex_home = CortexHome.default(), None
        warnings.append(f"cortexHome: {error.message}; using {ls.home.root}")
    for warning in warnings:
        ls.log(warning, types.MessageType.Warning)
    if params.capabilities.text_document is not None:  # an editor: it will open datasets
        from .datasets.parallel import start_workers

        start_workers()


@server.cortex_method(protocol.SYSTEM_INFO)
def system_info(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .accel import system_info

    return system_info(ls.home)


@server.cortex_method(protocol.INSPECT_MODEL)
def inspect_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.inspect import inspect_model
    from .models.registry import resolve_model

    return inspect_model(resolve_model(params["path"], ls.options.model_dirs, ls.home)).to_wire()


@server.cortex_method(protocol.LIST_MODELS)
def list_models(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import list_models

    return {"models": [entry.to_wire() for entry in list_models(ls.options.model_dirs, ls.home)]}


@server.cortex_method(protocol.PROPOSE_CONFIG)
def propose_config(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .config.proposal import propose_for_model
    from .models.registry import resolve_model

    return propose_for_model(
        str(resolve_model(params["model"], ls.options.model_dirs, ls.home)),
        dataset=params.get("dataset"),
        dataset_format=params.get("format"),
        dataset_stats=params.get("datasetStats"),
        preset=params.get("preset", "balanced"),
        overrides=params.get("overrides"),
        model_dirs=ls.options.model_dirs,
        method=params.get("method"),
        home=ls.home,
    ).to_wire()


# -- datasets ---------------------------------------------------------------------------------


@server.cortex_method(protocol.VALIDATE_DATASET)
def validate_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import validate_dataset
    from .datasets.trained import renderer_for, view_options

    model = params.get("model")
    return validate_dataset(
        params.get("path"),
        text=params.get("text"),
        format=params.get("format"),
        context_length=params.get("contextLength"),
        cancel=ls.request.cancel,
        renderer=renderer_for(model, ls.options.model_dirs, ls.home) if model else None,
        options=view_options(params.get("config")),
    ).to_wire()


@server.cortex_method(protocol.TRAINING_PREVIEW)
def training_preview(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets.trained import renderer_for, training_preview, view_options

    loaded = _dataset_given(ls, params)
    renderer = renderer_for(params["model"], ls.options.model_dirs, ls.home)
    with work_done(ls, params.get("workDoneToken"), "Rendering the dataset") as report:
        return training_preview(
            loaded.states,
            renderer,
            view_options(params.get("config")),
            line=params.get("line"),
            limit=params.get("limit", 20),
            cancel=ls.request.cancel,
            on_progress=lambda done, total: report(
                f"{done:,}/{total:,} records", round(100 * done / max(total, 1))
            ),
        ).to_wire()


def _dataset_given(ls: CortexServer, params: dict[str, Any]) -> LoadedDataset:
    """Return the dataset of ``dataset`` (a path), ``uri`` (an open document first) or ``text``."""
    from .datasets import load, load_text
    from .datasets.editor import uri_path

    cancel, fmt = ls.request.cancel, params.get("format")
    if params.get("dataset") is not None:
        return load(params["dataset"], fmt, cancel=cancel)
    if params.get("uri") is not None:
        uri = params["uri"]
        opened = ls.dataset_documents.text(uri).result() if uri in ls.dataset_documents else None
        if opened is not None:
            return load_text(opened[0], opened[1], cancel=cancel)
        return load(uri_path(uri), fmt, cancel=cancel)
    if params.get("text") is not None:
        return load_text(params["text"], fmt, cancel=cancel)
    raise InvalidParams("give dataset, uri or text", field="dataset")


@server.cortex_method(protocol.ANALYZE_DATASET)
def analyze_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import analyze_dataset
    from .models.registry import resolve_model

    model = params.get("model")
    model_path = resolve_model(model, ls.options.model_dirs, ls.home) if model else None
    return analyze_dataset(params["path"], model_path=model_path).to_wire()


@server.cortex_method(protocol.DATASET_REPORT)
def dataset_report(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets.report import dataset_report
    from .models.registry import resolve_model

    model = params.get("model")
    model_path = resolve_model(model, ls.options.model_dirs, ls.home) if model else None
    report = dataset_report(params["path"], model_path=model_path, cancel=ls.request.cancel)
    return report.to_wire(render=params.get("format", "markdown"))


@server.cortex_method(protocol.CREATE_DATASET)
def create_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import create_dataset

    return create_dataset(
        params["path"], params["examples"], overwrite=params.get("overwrite", False)
    )


@server.cortex_method(protocol.SAMPLE_DATASET)
def sample_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import write_sample_dataset

    return write_sample_dataset(params["path"], overwrite=params.get("overwrite", False))


@server.cortex_method(protocol.PREPARE_DATASET)
def prepare_dataset(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .datasets import prepare_dataset
    from .datasets.prepare import default_out_dir

    return prepare_dataset(
        params["path"],
        params.get("outDir") or default_out_dir(ls.home),
        format=params.get("format"),
        valid_fraction=params.get("validFraction", 0.1),
        seed=params.get("seed", 0),
        method=params.get("method"),
    ).to_wire()


# -- datasets: live diagnostics -----------------------------------------------------------------


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: CortexServer, params: types.DidOpenTextDocumentParams) -> None:
    from .datasets.editor import is_dataset_document

    document = params.text_document
    if is_dataset_document(document.uri, document.language_id, ls.options.dataset_files):
        ls.dataset_documents.open(
            document.uri, document.text, document.language_id, document.version
        )


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: CortexServer, params: types.DidChangeConfigurationParams) -> None:
    settings = params.settings
    cortex = settings.get("cortex") if isinstance(settings, dict) else None
    if not isinstance(cortex, dict):
        return
    changed, warnings = apply_settings(ls.options, cortex)
    for warning in warnings:
        ls.log(warning, types.MessageType.Warning)
    # New model folders can change which model a name means.
    if changed & {"model", "max_seq_length"} or ("model_dirs" in changed and ls.options.model):
        ls.check_datasets_with_model()
    if "dataset_files" in changed:
        ls.check_dataset_files()


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: CortexServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.dataset_documents.saved(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: CortexServer, params: types.DidChangeTextDocumentParams) -> None:
    changes = [
        (_range(c.range) if isinstance(c, types.TextDocumentContentChangePartial) else None, c.text)
        for c in params.content_changes
    ]
    ls.dataset_documents.change(params.text_document.uri, changes, params.text_document.version)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: CortexServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.dataset_documents.close(params.text_document.uri)


def _range(r: types.Range) -> tuple[int, int, int, int]:
    return (r.start.line, r.start.character, r.end.line, r.end.character)


async def _document_result(job: Any) -> Any:
    return await asyncio.wrap_future(job)


# Hover and code actions are generator handlers, not coroutines: pygls runs a generator at once,
# so the document work is queued behind the edits that came before the request and ahead of
# those after it. A coroutine would start a loop turn later, after edits sent after the request
# (LSP forbids reordering a request with didChange).
@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: CortexServer, params: types.HoverParams) -> Any:
    docs, uri, position = ls.dataset_documents, params.text_document.uri, params.position
    if not docs.checked(uri):
        return None
    text = yield _document_result, (docs.hover(uri, position.line, position.character),), {}
    if not text:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite]
    ),
)
def code_action(ls: CortexServer, params: types.CodeActionParams) -> Any:
    docs, uri = ls.dataset_documents, params.text_document.uri
    if not docs.checked(uri):
        return None
    # Fixes come from the server's own diagnostics: context.diagnostics is not trusted.
    only = [str(getattr(k, "value", k)) for k in params.context.only or ()]
    actions = yield _document_result, (docs.code_actions(uri, _range(params.range), only),), {}
    if not actions:
        return None
    return [ls.protocol.from_wire(a, types.CodeAction) for a in actions]


# -- training ---------------------------------------------------------------------------------


@server.feature(protocol.DETACH)
def detach(ls: CortexServer, params: Any) -> None:
    ls.detached = True


# The job is created now and queued once the reply is written (submit_job), so the client
# holds the job id before any notification of the job and its $/progress begins first.
@server.cortex_method(protocol.START_TRAINING)
def start_training(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import replace

    from .training.contract import WorkerOptions
    from .training.service import start_training

    result = start_training(
        ls.jobs,
        model=params["model"],
        dataset=params["dataset"],
        output_name=params["outputName"],
        preset=params.get("preset", "balanced"),
        config=params.get("config"),
        dataset_format=params.get("format"),
        model_dirs=ls.options.model_dirs,
        options=replace(
            WorkerOptions.from_client(params.get("options")),
            distributed=params.get("distributed") or None,
        ),
        continue_from=params.get("continueFrom"),
        replay_fraction=params.get("replayFraction"),
        method=params.get("method"),
        submit=False,
    )
    token = params.get("workDoneToken")
    ls.after_response(lambda: ls.submit_job(result["jobId"], params["outputName"], token))
    return result


@server.cortex_method(protocol.CANCEL_TRAINING)
def cancel_training(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    return ls.jobs.cancel(params["jobId"])


@server.cortex_method(protocol.RESUME_TRAINING)
def resume_training(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    job = ls.jobs.resume(params["jobId"], submit=False)
    token = params.get("workDoneToken")
    ls.after_response(lambda: ls.submit_job(job["jobId"], job["outputName"], token))
    return job


@server.cortex_method(protocol.LIST_JOBS)
def list_jobs(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    return {"jobs": ls.jobs.list_jobs()}


@server.cortex_method(protocol.DELETE_MODEL)
def delete_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.manage import delete_model

    return delete_model(params["name"], ls.home.models)


@server.cortex_method(protocol.FUSE_MODEL)
def fuse_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.manage import fuse_model

    return fuse_model(params["name"], params["outputName"], ls.home.models)


@server.cortex_method(protocol.EXPORT_MODEL)
def export_model(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.export import export_model

    # One heavy MLX job at a time: an export waits for the training slot, as evaluate does.
    with (
        ls.jobs.slot.hold("export", ls.request.cancel),
        work_done(ls, params.get("workDoneToken"), "Exporting model") as report,
    ):
        return export_model(
            ls.home,
            params["model"],
            params["target"],
            name=params.get("name"),
            quantization=params.get("quantization"),
            verify=params.get("verify", True),
            lmstudio_root=params.get("lmstudioRoot"),
            pre_tokenizer=params.get("preTokenizer"),
            on_progress=report,
            cancel=ls.request.cancel,
        ).to_wire()


@server.cortex_method(protocol.SERVE)
def serve(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.export import fine_tuned_source

    return ls.model_servers.serve(fine_tuned_source(ls.home, params["model"]), params.get("port"))


@server.cortex_method(protocol.STOP_SERVING)
def stop_serving(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    return ls.model_servers.stop(params["model"])


@server.cortex_method(protocol.LIST_SERVERS)
def list_servers(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    return ls.model_servers.list()


@server.cortex_method(protocol.LIST_ADAPTERS)
def list_adapters(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import list_adapters

    return list_adapters(params["baseModel"], ls.options.model_dirs, ls.home)


@server.cortex_method(protocol.COMPARE_ADAPTERS)
def compare_adapters(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .generation.runner import compare_adapters
    from .models.registry import resolve_model

    dirs = ls.options.model_dirs
    base = resolve_model(params["baseModel"], dirs, ls.home)
    adapters = [resolve_model(name, dirs, ls.home) for name in params["adapters"]]
    with work_done(ls, params.get("workDoneToken"), "Comparing adapters") as report:
        return compare_adapters(
            ls.runner,
            base,
            adapters,
            params["prompts"],
            max_tokens=params.get("maxTokens", 64),
            cancel=ls.request.cancel,
            on_output=lambda done, total: report(
                f"{done}/{total} generations", round(100 * done / total)
            ),
        )


@server.cortex_method(protocol.GENERATE)
def generate(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import resolve_model

    request_id = ls.request.msg_id
    adapter = params.get("adapter")
    return ls.runner.generate(
        resolve_model(params["model"], ls.options.model_dirs, ls.home),
        params["prompt"],
        max_tokens=params.get("maxTokens", 128),
        temperature=params.get("temperature", 0.0),
        adapter=resolve_model(adapter, ls.options.model_dirs, ls.home) if adapter else None,
        on_chunk=lambda text: ls.notify(
            protocol.GENERATE_CHUNK, {"requestId": request_id, "text": text}
        ),
    )


# -- tuning, evaluation, continual learning ---------------------------------------------------
# (continual learning is startTraining's ``continueFrom``, wired above)


@server.cortex_method(protocol.EVALUATE)
def evaluate(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .models.registry import resolve_model
    from .training.evaluate import evaluate_model

    return evaluate_model(
        resolve_model(params["model"], ls.options.model_dirs, ls.home),
        params["dataset"],
        split=params.get("split", "valid"),
        max_examples=params.get("maxExamples"),
        cancel=ls.request.cancel,
        slot=ls.jobs.slot,
    )


@server.cortex_method(protocol.TUNE_HYPERPARAMETERS)
def tune_hyperparameters(ls: CortexServer, params: dict[str, Any]) -> dict[str, Any]:
    from .training.tuning import tune_hyperparameters, tuning_work_done

    with work_done(ls, params.get("workDoneToken"), "Tuning hyperparameters") as report:

        def on_progress(payload: dict[str, Any]) -> None:
            ls.notify(protocol.TUNING_PROGRESS, payload)
            if payload["event"] != "done":
                report(*tuning_work_done(payload))

        return tune_hyperparameters(
            params["model"],
            params["dataset"],
            params["budgetSeconds"],
            trials=params.get("trials", 8),
            seed=params.get("seed", 0),
            model_dirs=ls.options.model_dirs,
            on_progress=on_progress,
            cancel=ls.request.cancel,
            home=ls.home,
            slot=ls.jobs.slot,
        )
