"""``experiment RUN --dataset NAME``: caption every item of a dataset, score it, compare the runs.

Each item's frame goes to the caption model (``--vlm-model``, ``--vlm-base-url``) with the
caption prompt of ``--prompt-label`` (the built-in one without Langfuse) and the item's
recognized names. The generation is scored with the live run's VLM scores (scores.py) and,
with ``--judge-model``, by a chat model that sees the frame and the caption and answers a
faithfulness score 0-1 with a reason (``judge_faithfulness``, on the generation).

With Langfuse keys the items come from the Langfuse dataset and run through the SDK's
experiment API (``langfuse_datasets.py``, passed in: the package does not import it), so
each generation is linked to its item in one dataset run. Without keys they come from the
folder NAME/ and nothing is sent anywhere but to the models. Either way one record per item
goes to NAME/runs/RUN.jsonl, and the table of every run on the dataset is printed from those
records: items, success, TTFT and latency p50/p95, mean quality and judge score, and the
items whose captions differ most between the runs.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TextIO

from video_summarizer import defaults as D
from video_summarizer import scores
from video_summarizer.evals.datasets import DatasetItem, LocalDataset, unique_items
from video_summarizer.errors import InputError
from video_summarizer.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_OPTION, image_pixels_problem
from video_summarizer.options import CaptionOptions, ExperimentOptions, PromptOptions

log = logging.getLogger(__name__)

PUSH = "dataset push"  # the command errors of an upload name
JUDGE_SCORE_NAME = "judge_faithfulness"
JUDGE_PROMPT = (
    "You check image captions. Look at the image, then at this caption of it:\n\n"
    "\"{caption}\"\n\n"
    "How faithful is the caption to the image? 1 means everything it says is visible, 0 means it "
    "describes something else. Answer with JSON only: {{\"score\": <number 0..1>, \"reason\": "
    "\"<one sentence>\"}}")
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class Verdict:
    """The judge's answer for one caption: score 0..1 and reason, or the error."""

    score: float | None
    reason: str = ""
    error: str | None = None


def parse_verdict(text: str) -> Verdict:
    """The first JSON object in the judge's answer as a Verdict (error when there is none or it is off)."""
    match = _JSON_OBJECT.search(text or "")
    try:
        data = json.loads(match.group(0)) if match else None
        score = float(data["score"])
    except (ValueError, TypeError, KeyError):
        return Verdict(None, error=f"the judge did not answer {{\"score\": 0..1, ...}}: {text[:120]!r}")
    if not 0.0 <= score <= 1.0 or math.isnan(score):
        return Verdict(None, error=f"the judge's score {score} is not in 0..1")
    return Verdict(score, str(data.get("reason") or "")[:500])


class Judge:
    """An OpenAI-compatible chat model that scores a caption against its frame."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 timeout_s: float = 60.0) -> None:
        from video_summarizer.models.openai_stream import ChatEndpoint, EndpointNames

        names = EndpointNames(label="judge", url_option="--judge-base-url", model_option="--judge-model",
                              env_prefix="JUDGE", serve_hint="vllm serve Qwen/Qwen3-VL-8B-Instruct")
        self.model = model
        self._endpoint = ChatEndpoint(base_url, api_key or D.API_KEY_PLACEHOLDER, model, names,
                                      timeout_s=timeout_s, max_retries=2)
        self.failures = 0

    def check(self) -> None:
        """The server answers and serves the model; else BackendUnavailable naming the option."""
        self._endpoint.check()

    def judge(self, image_jpeg: bytes, caption: str) -> Verdict:
        """Ask once; failures come back as a Verdict with an error."""
        url = "data:image/jpeg;base64," + base64.b64encode(image_jpeg).decode("ascii")
        messages = [{"role": "user", "content": [
            {"type": "text", "text": JUDGE_PROMPT.format(caption=caption.replace('"', "'"))},
            {"type": "image_url", "image_url": {"url": url}}]}]
        out = self._endpoint.chat(messages, max_tokens=200, temperature=0.0)
        verdict = parse_verdict(out.text) if out.success else Verdict(None, error=f"{out.error_kind}: {out.error}")
        if verdict.error:
            self.failures += 1
        return verdict

    def close(self) -> None:
        """Close the connections."""
        self._endpoint.close()


class LocalRecorder:
    """Offline: the generation is recorded only in the run's records (nothing leaves the machine)."""

    @contextmanager
    def generation(self, **_: Any) -> Iterator["_NoGeneration"]:
        """A handle that keeps nothing."""
        yield _NoGeneration()


class _NoGeneration:
    id = trace_id = None

    def record(self, result: Any) -> None:
        """Nothing to record: the run record holds the result."""

    def score(self, name: str, value: float, comment: str | None = None) -> None:
        """Nothing to record: the run record holds the scores."""


def caption_item(item: DatasetItem, recorder: Any, *, vlm: Any, prompts: Any, run: str,
                 judge: Judge | None = None, worst_ms: float = scores.DEFAULT_WORST_MS) -> dict:
    """Caption one item inside a generation, score it, and return its run record."""
    from video_summarizer.frames import from_jpeg_bytes
    from video_summarizer.prompts import faces_sentence, render_caption

    names = [str(n) for n in item.input.get("faces") or []]
    managed = prompts.caption() if prompts is not None else None
    prompt = render_caption(managed, faces_sentence(names)) if managed else vlm.build_prompt(names)
    version = managed.version if managed is not None else None
    model = vlm.name
    record = {"run": run, "item_id": item.id, "model": model, "prompt_version": version,
              "source": item.metadata.get("source"), "video_time": item.metadata.get("video_time"),
              "frame": item.metadata.get("frame"), "at": datetime.now(timezone.utc).isoformat()}
    with recorder.generation(name="vlm_caption", model=model, prompt=prompt, image_jpeg=item.image_jpeg,
                             metadata={"dataset_item_id": item.id, "prompt_version": version,
                                       "experiment_run": run}) as gen:
        result = vlm.generate_caption(from_jpeg_bytes(item.image_jpeg), prompt)
        gen.record(result)
    values = scores.vlm_scores(result, worst_ms=worst_ms)
    comment = "ok" if result.success else f"failed: {result.error_kind}"
    for name, value in values.items():
        gen.score(name, value, comment)
    record.update(caption=result.caption, success=bool(result.success), error=result.error,
                  ttft_ms=_round(result.ttft_ms), latency_ms=_round(result.latency_ms),
                  trace_id=gen.trace_id, observation_id=gen.id, **values, judge=None, judge_reason=None)
    if judge is not None and result.success:
        verdict = judge.judge(item.image_jpeg, result.caption)
        record.update(judge=verdict.score, judge_reason=verdict.reason or verdict.error)
        if verdict.score is not None:
            gen.score(JUDGE_SCORE_NAME, verdict.score, verdict.reason)
    return record


def run_offline(items: list[DatasetItem], task: Callable[[DatasetItem, Any], dict], *,
                concurrency: int) -> list[dict]:
    """Run the task on every item here, ``concurrency`` at a time; records in item order."""
    recorder = LocalRecorder()
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="experiment") as pool:
        return list(pool.map(lambda item: task(item, recorder), items))


def load_items(name: str, remote: Any | None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[DatasetItem]:
    """The dataset's items from Langfuse (remote) or the folder NAME/; unknown, empty or too large: InputError."""
    if remote is not None:
        items = remote.items()
        where = f"Langfuse dataset {name!r}"
    else:
        local = LocalDataset(name)
        if not local.exists:
            raise InputError(f"no dataset folder {name}/ with an items.jsonl (make one with "
                             f"--source VIDEO --dataset {name}, without Langfuse keys)", option="--dataset")
        items = local.items()
        where = f"dataset folder {name}/"
    items = unique_items(items)
    if not items:
        raise InputError(f"{where} has no items (add some with --source VIDEO --dataset {name})",
                         option="--dataset")
    for item in items:
        _check_pixels(item, where, max_pixels)
    return items


def _check_pixels(item: DatasetItem, where: str, max_pixels: int | None) -> None:
    """An item's image over --max-pixels is refused from its header, before any is decoded."""
    try:
        problem = image_pixels_problem(item.image_jpeg, max_pixels)
    except ValueError:
        return  # not an image: that item's caption fails and is counted, as before
    if problem:
        raise InputError(f"item {item.id[:40]!r} of {where}: its image is {problem}", option=MAX_PIXELS_OPTION)


def experiment(*, run: str, dataset: str, items: list[DatasetItem], vlm: Any, prompts: Any,
               judge: Judge | None, remote: Any | None, concurrency: int, out: TextIO,
               worst_ms: float = scores.DEFAULT_WORST_MS) -> int:
    """Run the experiment, keep its records, print the table; the exit code (1: nothing captioned)."""
    local = LocalDataset(dataset)
    local.check_new_run(run)

    def task(item: DatasetItem, recorder: Any) -> dict:
        try:
            record = caption_item(item, recorder, vlm=vlm, prompts=prompts, run=run, judge=judge,
                                  worst_ms=worst_ms)
        except Exception as exc:  # one item never ends the run: it counts as failed
            log.debug("item %s failed", item.id, exc_info=True)
            record = {"run": run, "item_id": item.id, "model": vlm.name, "success": False,
                      "error": f"{type(exc).__name__}: {exc}", "caption": "", "judge": None}
        local.add_run_record(run, record)
        return record

    started = time.monotonic()
    where = "Langfuse dataset run" if remote is not None else "local run"
    log.info("Experiment %s: %d items of %s through %s (%s)", run, len(items), dataset, vlm.name, where)
    if remote is not None:
        version = getattr(prompts.caption(), "version", None) if prompts is not None else None
        records = remote.run_experiment(run, task, items, concurrency=concurrency,
                                        metadata={"model": vlm.name, "prompt_version": str(version)})
    else:
        records = run_offline(items, task, concurrency=concurrency)
    log.info("Experiment %s: done in %.1f s", run, time.monotonic() - started)
    out.write(comparison_table(dataset, local.runs(), current=run) + "\n")
    out.flush()
    judged = [r for r in records if r.get("success")]
    if judge is not None and judged and all(r.get("judge") is None for r in judged):
        reason = next((r.get("judge_reason") for r in judged if r.get("judge_reason")), "no answer")
        log.error("--judge-model: the judge scored none of %d captions (%s)", len(judged), str(reason)[:200])
        return 1
    return 0 if any(r.get("success") for r in records) else 1


def push_command(name: str, make_tracker: Callable[[], Any], remote: Callable[[Any, str], Any] | None,
                 out: TextIO) -> int:
    """`dataset push NAME`: upload the local dataset folder NAME/ to the Langfuse dataset NAME.

    ``remote(tracker, name)``: the Langfuse dataset of that name (None without keys: said at once);
    ``make_tracker()`` is called only once every item's image has been checked.
    """
    from video_summarizer.evals.datasets import push

    if remote is None:
        raise InputError(f"needs Langfuse keys to upload the dataset folder {name}/: set "
                         "LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL (or source "
                         "setup_langfuse.sh)", option=PUSH)
    local = LocalDataset(name)
    added, there = push(local, lambda: remote(make_tracker(), local.name))
    log.info("Dataset %s: %d items uploaded to Langfuse dataset %s, %d already there",
             local.folder, added, local.name, there)
    return 0


def experiment_command(exp: ExperimentOptions, caption: CaptionOptions, prompts: PromptOptions, *,
                       max_pixels: int, concurrency: int, make_tracker: Callable[[], Any],
                       remote: Callable[[Any, str], Any] | None, caption_model: Callable[[], Any],
                       out: TextIO) -> int:
    """`experiment RUN --dataset NAME`, everything checkable said before the caption model loads.

    ``make_tracker()``: the run's tracker; ``remote(tracker, name)``: the Langfuse dataset of that
    name (None without keys: then bad input is said before any tracker is built);
    ``caption_model()``: the caption model as a run builds it, not loaded yet.
    """
    from video_summarizer.prompts import PromptSource

    if not exp.dataset:
        raise InputError("experiment needs the dataset to run on: --dataset NAME", option="--dataset")
    LocalDataset(exp.dataset).check_new_run(exp.name)  # a reused run name is said before anything loads
    tracker = make_tracker() if remote is not None else None
    store = remote(tracker, exp.dataset) if remote is not None else None
    items = load_items(exp.dataset, store, max_pixels)
    judge = _judge(exp, caption)
    tracker = tracker if tracker is not None else make_tracker()
    vlm = caption_model()
    try:
        vlm.check()
        managed = PromptSource(tracker, label=prompts.prompt_label, cache_ttl_s=prompts.prompt_cache_ttl).load()
        vlm.load()
        return experiment(run=exp.name, dataset=exp.dataset, items=items, vlm=vlm, prompts=managed,
                          judge=judge, remote=store, concurrency=concurrency, out=out)
    finally:
        vlm.close()
        if judge is not None:
            judge.close()


def _judge(exp: ExperimentOptions, caption: CaptionOptions) -> Judge | None:
    """--judge-model's judge, checked (None without it)."""
    if not exp.judge_model:
        return None
    base = exp.judge_base_url or caption.vlm_base_url
    if not base:
        raise InputError("give the judge's OpenAI-compatible endpoint (or --vlm-base-url)",
                         option="--judge-base-url")
    judge = Judge(base, exp.judge_model, exp.judge_api_key, timeout_s=caption.vlm_timeout)
    judge.check()
    return judge


# -- the comparison table ---------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values; None when there are none."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(vals)))
    return vals[min(rank, len(vals)) - 1]


def run_row(records: list[dict]) -> dict:
    """One run's figures: items, success share, TTFT and latency p50/p95, mean quality and judge."""
    ok = [r for r in records if r.get("success")]
    ttft = [r.get("ttft_ms") for r in ok]
    latency = [r.get("latency_ms") for r in ok]
    judged = [r["judge"] for r in ok if r.get("judge") is not None]
    return {"items": len(records), "success": len(ok) / len(records) if records else 0.0,
            "ttft_p50": percentile(ttft, 50), "ttft_p95": percentile(ttft, 95),
            "latency_p50": percentile(latency, 50), "latency_p95": percentile(latency, 95),
            "quality": sum(r.get("vlm_quality", 0.0) for r in ok) / len(ok) if ok else None,
            "judge": sum(judged) / len(judged) if judged else None, "judged": len(judged),
            "model": next((r.get("model") for r in records if r.get("model")), "?"),
            "prompt_version": next((r.get("prompt_version") for r in records), None)}


def caption_difference(a: str, b: str) -> float:
    """1 - Jaccard similarity of the two captions' word sets (0: same words, 1: none shared)."""
    wa, wb = set(re.findall(r"\w+", (a or "").lower())), set(re.findall(r"\w+", (b or "").lower()))
    if not wa and not wb:
        return 0.0
    return 1.0 - len(wa & wb) / len(wa | wb)


def differing_items(runs: dict[str, list[dict]], top: int = 5) -> list[tuple[float, str, dict[str, dict]]]:
    """The items whose captions differ most across the runs: (mean pairwise difference, id, {run: record})."""
    by_item: dict[str, dict[str, dict]] = {}
    for run, records in runs.items():
        for r in records:
            if r.get("success"):
                by_item.setdefault(r["item_id"], {})[run] = r
    ranked = []
    for iid, per_run in by_item.items():
        names = list(per_run)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        if not pairs:
            continue
        diff = sum(caption_difference(per_run[a]["caption"], per_run[b]["caption"]) for a, b in pairs) / len(pairs)
        if diff > 0:
            ranked.append((diff, iid, per_run))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return ranked[:top]


def _fmt(v: float | None, pattern: str = "{:.0f}") -> str:
    return "-" if v is None else pattern.format(v)


def comparison_table(dataset: str, runs: dict[str, list[dict]], *, current: str | None = None,
                     top: int = 5) -> str:
    """The runs on a dataset side by side, then the items whose captions differ most."""
    header = ["run", "model", "prompt", "items", "success", "TTFT p50/p95 ms", "latency p50/p95 ms",
              "quality", "judge"]
    rows = [header]
    for run, records in runs.items():
        row = run_row(records)
        mark = " *" if run == current else ""
        rows.append([run + mark, str(row["model"]), str(row["prompt_version"] or "built-in"), str(row["items"]),
                     f"{row['success'] * 100:.0f}%",
                     f"{_fmt(row['ttft_p50'])}/{_fmt(row['ttft_p95'])}",
                     f"{_fmt(row['latency_p50'])}/{_fmt(row['latency_p95'])}",
                     _fmt(row["quality"], "{:.2f}"),
                     _fmt(row["judge"], "{:.2f}") + (f" ({row['judged']})" if row["judge"] is not None else "")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"Runs on dataset {dataset} (* this run):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    differ = differing_items(runs, top)
    if differ:
        lines.append("Captions that differ most between the runs:")
        for diff, iid, per_run in differ:
            first = next(iter(per_run.values()))
            lines.append(f"  item {iid[:12]} ({first.get('source')}, frame {first.get('frame')}, "
                         f"t={first.get('video_time')} s): difference {diff:.2f}")
            lines += [f"    {run}: {r['caption'][:160]}" for run, r in per_run.items()]
    elif len(runs) > 1:
        lines.append("Every item got the same words from every run.")
    return "\n".join(lines)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
