"""The Langfuse calls of datasets and experiments: items with media, dataset runs, generations in them.

Beside ``langfuse_tracker.py`` (which owns the client and every tracing call) and on the
tracker's client only, the SDK's public API only, for SDK 4 and 5 alike:

- ``get_dataset`` / ``create_dataset`` / ``create_dataset_item`` (an item's image goes as
  ``LangfuseMedia`` in its input: the SDK uploads it and stores a reference);
- ``Langfuse.run_experiment`` over the dataset's own items (both majors, same arguments): every item runs inside the
  SDK's experiment span, so the generation opened there is linked to its item as one
  dataset run (SDK 4 posts a dataset run item; SDK 5 sends the experiment attributes on the
  spans and the server derives the run items);
- ``start_as_current_observation(as_type="generation")`` inside an item's run, ``update`` and
  ``score`` on it.

The package sees our own ``DatasetItem`` and records, never an SDK object.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from video_summarizer.evals.datasets import DatasetItem
from video_summarizer.errors import BackendUnavailable, InputError
from video_summarizer.tracing.trace_log import to_utc

log = logging.getLogger("video_summarizer.evals.datasets")

IMAGE_KEY = "image"  # where an item's input holds its frame


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an SDK API error (its public status_code), else None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _media(jpeg: bytes) -> Any:
    from langfuse import LangfuseMedia

    return LangfuseMedia(content_bytes=bytes(jpeg), content_type="image/jpeg")


class LangfuseDataset:
    """One Langfuse dataset, through the tracker's SDK client (a DatasetStore)."""

    def __init__(self, tracker: Any, name: str) -> None:
        if not tracker.enabled:
            raise ValueError("LangfuseDataset needs a tracker with Langfuse keys")
        self.tracker = tracker
        self.client = tracker.client  # the SDK client's public names (the tracker's proxy)
        self.name = name
        self._dataset: Any = None  # the SDK's DatasetClient once loaded

    def _load(self, *, create: bool) -> Any:
        try:
            self._dataset = self.client.get_dataset(self.name)
        except Exception as exc:
            if _status(exc) != 404:
                raise BackendUnavailable(f"Langfuse at {self.tracker.host} did not give dataset "
                                         f"{self.name!r}: {str(exc)[:200]}", option="--dataset") from exc
            if not create:
                raise InputError(f"Langfuse at {self.tracker.host} has no dataset {self.name!r} "
                                 "(make one with --source ... --dataset NAME)", option="--dataset") from None
            self.client.create_dataset(name=self.name, description="Captioned frames of "
                                       "real_time_summarizer.py runs (--dataset)")
            log.info("Langfuse dataset %s created", self.name)
            self._dataset = self.client.get_dataset(self.name)
        return self._dataset

    def ids(self) -> set[str]:
        """The ids of the dataset's items; an empty dataset is created when there is none."""
        return {item.id for item in self._load(create=True).items}

    def add(self, item: DatasetItem) -> None:
        """Create the item (its image uploaded as media) under its own id."""
        self.client.create_dataset_item(
            dataset_name=self.name, id=item.id, input={**item.input, IMAGE_KEY: _media(item.image_jpeg)},
            metadata=item.metadata)

    def items(self) -> list[DatasetItem]:
        """Every item with its image fetched; an unknown dataset is an InputError naming --dataset."""
        import httpx

        dataset = self._load(create=False)
        out = []
        with httpx.Client(timeout=self.tracker.timeout_s) as http:
            for sdk_item in dataset.items:
                out.append(self._ours(sdk_item, http))
        return out

    def _ours(self, sdk_item: Any, http: Any) -> DatasetItem:
        from langfuse import LangfuseMediaReference

        raw = dict(sdk_item.input) if isinstance(sdk_item.input, dict) else {}
        image = raw.pop(IMAGE_KEY, None)
        if not isinstance(image, LangfuseMediaReference):
            raise InputError(f"item {sdk_item.id} of Langfuse dataset {self.name!r} has no image "
                             f"in its input's {IMAGE_KEY!r}", option="--dataset")
        return DatasetItem(sdk_item.id, image.fetch_bytes(timeout=self.tracker.timeout_s, client=http),
                           raw, dict(sdk_item.metadata) if isinstance(sdk_item.metadata, dict) else {})

    # -- experiments --------------------------------------------------------------------------
    def run_experiment(self, run_name: str, task: Callable[[DatasetItem, "ExperimentRecorder"], dict],
                       items: list[DatasetItem], *, concurrency: int, metadata: dict[str, str],
                       description: str | None = None) -> list[dict]:
        """Run ``task`` on every item as the dataset run ``run_name``; the task's records, in item order."""
        by_id = {item.id: item for item in items}
        recorder = ExperimentRecorder(self.client)

        async def sdk_task(*, item: Any, **_: Any) -> dict:
            ours = by_id[item.id]
            # A worker thread keeps the SDK's item span current: contextvars are copied.
            return await asyncio.to_thread(task, ours, recorder)

        dataset = self._dataset if self._dataset is not None else self._load(create=False)
        # The SDK's own item objects: each carries its dataset id, which links the run to it.
        result = self.client.run_experiment(
            name=run_name, run_name=run_name, description=description, task=sdk_task,
            data=[i for i in dataset.items if i.id in by_id], max_concurrency=max(1, concurrency),
            metadata=metadata)
        records = {r.output["item_id"]: r.output for r in result.item_results
                   if isinstance(getattr(r, "output", None), dict)}
        return [records[i.id] for i in items if i.id in records]


class ExperimentRecorder:
    """Opens an item's generation inside the SDK's experiment span (thread-safe)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @contextmanager
    def generation(self, *, name: str, model: str, prompt: str, image_jpeg: bytes,
                   metadata: dict) -> Iterator["_Generation"]:
        """A generation under the current (experiment item) span, the frame as media in its input."""
        with self.client.start_as_current_observation(
                as_type="generation", name=name, model=model, metadata=metadata,
                input={"prompt": prompt, "frame": _media(image_jpeg)}) as obs:
            yield _Generation(obs)


class _Generation:
    """The handle the experiment task gets: result in, scores on the generation."""

    def __init__(self, obs: Any) -> None:
        self._obs = obs
        self.id, self.trace_id = obs.id, obs.trace_id

    def record(self, result: Any) -> None:
        """Output, usage, first-token time (aware UTC) and, on failure, level ERROR."""
        self._obs.update(output=result.text, usage_details=result.usage_details(),
                         completion_start_time=to_utc(result.completion_start_time))
        if not result.success:
            self._obs.update(level="ERROR", status_message=f"{result.error_kind}: {result.error}"[:1000])

    def score(self, name: str, value: float, comment: str | None = None) -> None:
        """A NUMERIC score on this generation."""
        self._obs.score(name=name, value=float(value), data_type="NUMERIC", comment=comment)
