"""Turn a ``cortex/proposeConfig`` request into a Proposal: resolve, inspect, analyse, propose."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..accel import (
    detect_backend,
    find_fast_blas,
    memory_source,
    needs_fast_blas,
    usable_memory_bytes,
)
from ..errors import CortexError
from ..models.inspect import inspect_model
from ..models.registry import resolve_model
from ..paths import CortexHome
from .calibration import load_calibration, load_per_core
from .smart import DatasetProfile, MachineProfile, Proposal, profile_from_wire, propose_config
from .training_config import TrainingConfig, apply_overrides

if TYPE_CHECKING:  # the datasets package is imported only when a dataset is given
    from ..datasets.formats import RecordState
    from ..datasets.load import DatasetSource, LoadedDataset
    from ..datasets.training_view import TrainingView, ViewOptions


def current_machine(home: CortexHome | None = None) -> MachineProfile:
    """Return the backend, usable memory and calibration (from ``home``) of this machine."""
    backend = detect_backend()
    home = home or CortexHome.default()
    return MachineProfile(
        backend=backend,
        usable_memory_bytes=usable_memory_bytes(backend),
        fast_blas=not needs_fast_blas() or find_fast_blas() is not None,
        memory_source=memory_source(backend),
        calibration=load_calibration(home.root),
        load_per_core=load_per_core(extra_threads=1),
    )


def dataset_profile(
    dataset: DatasetSource,
    format: str | None = None,
    *,
    model_path: str | None = None,
    options: ViewOptions | None = None,
    pairs: bool = False,
) -> DatasetProfile:
    """Return the smart-config view of a dataset (a path or loaded), from its stats.

    With ``model_path`` every record is rendered as the worker trains it (``options``), so
    lengths are counted in the model's tokens; without a readable tokenizer they are
    estimated from characters. Raises CortexError ``dataset-invalid`` when the dataset has
    errors or the model's template cannot render a record. ``pairs`` (DPO/ORPO): a
    preference pair counts as the longer of its two sides.
    """
    from ..datasets import dataset_stats
    from ..datasets.load import as_loaded
    from ..datasets.prepare import dataset_kind
    from ..datasets.training_view import ViewOptions

    loaded = as_loaded(dataset, format).check()
    stats = dataset_stats(loaded)
    views: tuple[TrainingView, ...] = ()
    no_tokenizer = "" if model_path is not None else "no model given to count tokens with"
    if model_path is not None:
        try:
            views = training_views(loaded, model_path, options or ViewOptions(), pairs)
        except CortexError as error:
            if error.code not in ("tokenizer-not-found", "tokenizer-invalid"):
                raise
            no_tokenizer = f"the model's tokenizer is unavailable ({error.message})"
    return DatasetProfile(
        examples=stats.examples,
        size_class=stats.size_class,
        task_type=stats.task_type,
        mean_chars=stats.mean_chars,
        max_chars=stats.max_chars,
        views=views,
        no_tokenizer=no_tokenizer,
        kind=dataset_kind(loaded.records),
    )


# The views of the last dataset file counted: (key, views). One entry, so memory stays bounded.
_last_views: list[Any] = [None, ()]


def training_views(
    loaded: LoadedDataset, model_path: str, options: ViewOptions, pairs: bool = False
) -> tuple[TrainingView, ...]:
    """Return every record as the worker trains it; refuse one the template cannot render.

    The refusal is CortexError ``dataset-invalid`` naming the first such record's line, with
    the engine's issue code (``template-role``, ...) and its fix, so no job is started that
    would fail seconds later. With ``pairs`` (DPO/ORPO) each preference pair is rendered
    side by side and counts as its longer side (a failing side first), so maxSeqLength
    covers both answers.
    """
    from ..datasets.prepare import prepared_records, side_record
    from ..datasets.shapes import PREFERENCE
    from ..datasets.training_view import load_renderer

    renderer = load_renderer(model_path)
    states = loaded.records
    key = (id(renderer), loaded.sha256, loaded.format, options, pairs)
    if loaded.sha256 is not None and _last_views[0] == key:
        views = _last_views[1]  # the wizard proposes again, then starts: render once
    elif pairs:

        def longer(state: RecordState) -> TrainingView:
            sides = [renderer.view(side_record(state, s), options) for s in ("chosen", "rejected")]
            return min(sides, key=lambda v: (v.ok, -v.token_count))

        views = tuple(
            counted(longer(s) if s.shape == PREFERENCE else renderer.view(r, options))
            for s, r in zip(states, prepared_records(states), strict=True)
        )
        if loaded.sha256 is not None:
            _last_views[:] = [key, views]
    else:
        views = tuple(counted(renderer.view(r, options)) for r in prepared_records(states))
        if loaded.sha256 is not None:
            _last_views[:] = [key, views]
    failed = [(s, v) for s, v in zip(states, views, strict=True) if not v.ok]
    if failed:
        state, view = failed[0]
        issue = next(i for i in view.issues if i.severity == "error")
        name = loaded.path.name if loaded.path is not None else "The text"
        raise CortexError(
            "dataset-invalid",
            f"{name}: {len(failed)} record(s) cannot be trained with this model; first at "
            f"line {state.line + 1}: {issue.message}",
            path=None if loaded.path is None else str(loaded.path),
            issue=issue.code,
            line=state.line,
            turn=issue.turn,
            errors=len(failed),
        )
    return views


def counted(view: TrainingView) -> TrainingView:
    """Return ``view`` kept for counting only: ids and mask packed, no text or offsets.

    A full view holds ~110 bytes a token (Python ints and offset tuples); a dataset of
    100,000 chats would hold gigabytes while the proposal only counts.
    """
    return replace(
        view,
        text="",
        ids=array("i", view.ids),
        offsets=[],
        trained=bytearray(view.trained),
    )


def view_options(overrides: dict[str, Any] | None, field: str) -> ViewOptions:
    """Return how records are trained under ``overrides`` (trainOn, trainTemplateText), uncut.

    Views are rendered whole; the proposal cuts them at each maxSeqLength it weighs.
    """
    from ..datasets.training_view import ViewOptions

    chosen = {k: v for k, v in (overrides or {}).items() if k in ("trainOn", "trainTemplateText")}
    config = apply_overrides(TrainingConfig(), chosen, prefix=field)
    return ViewOptions(train_on=config.train_on, train_template_text=config.train_template_text)


def propose_for_model(
    model: str,
    *,
    dataset: DatasetSource | None = None,
    dataset_format: str | None = None,
    dataset_stats: dict[str, Any] | None = None,
    preset: str = "balanced",
    overrides: dict[str, Any] | None = None,
    model_dirs: Iterable[str] = (),
    machine: MachineProfile | None = None,
    overrides_field: str = "overrides",
    method: str | None = None,
    home: CortexHome | None = None,
    steps_per_eval: int | None = None,
) -> Proposal:
    """Return the smart configuration for ``model`` and, if given, a dataset or its stats.

    ``dataset`` is a path (read in ``dataset_format``, detected when None) or a dataset
    already loaded, which is not read again. ``method`` (sft, dpo, orpo): the request's
    top-level one; ``overrides.method`` wins over it; without either, dpo for preference
    data and sft otherwise. dpo/orpo on data that is not all preference pairs raises
    InvalidParams ``method-needs-preference-data``. The estimates use the calibration recorded in
    ``home`` (the default CORTEX_HOME when None).
    """
    from .smart import PREFERENCE_METHODS, method_for

    inspection = inspect_model(resolve_model(model, model_dirs))
    if inspection.not_trainable is not None:
        # A partial download or an architecture mlx_lm lacks would fail inside the job.
        raise CortexError(
            inspection.not_trainable.code,
            inspection.not_trainable.message,
            path=inspection.path,
        )
    profile = None
    if dataset is not None:
        from ..datasets.load import as_loaded
        from ..datasets.prepare import check_method, dataset_kind

        loaded = as_loaded(dataset, dataset_format).check()
        kind = dataset_kind(loaded.records)
        chosen = method_for(kind, method, overrides)
        given = "method" in (overrides or {})
        check_method(loaded, chosen, f"{overrides_field}.method" if given else "method")
        profile = dataset_profile(
            loaded,
            model_path=inspection.path,
            options=view_options(overrides, overrides_field),
            pairs=chosen in PREFERENCE_METHODS,
        )
    elif dataset_stats is not None:
        profile = profile_from_wire(dataset_stats)
    return propose_config(
        inspection,
        profile,
        preset,
        machine or current_machine(home),
        overrides,
        overrides_field,
        method=method,
        steps_per_eval=steps_per_eval,
    )
