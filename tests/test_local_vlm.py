"""LocalVLM on tiny random LLaVA / Qwen3-VL models loaded by path, captioning real frames."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import build_tiny_llava, build_tiny_qwen3_vl, install_in_hub_cache, slowed_forward
from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.local_vlm import (
    LocalVLM,
    frame_to_rgb,
    torchvision_pip_command,
)
from video_summarizer.results import CaptionResult
from vlm_client_module import VLMClient

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach a model hub (conftest sets it too)
REPO = Path(__file__).resolve().parent.parent
MAX_NEW = 8
LLAVA_IMAGE_TOKENS = 16  # (image_size 32 / patch_size 8) ** 2, see build_tiny_llava


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def vlm(llava_dir) -> LocalVLM:
    model = LocalVLM(str(llava_dir), max_new_tokens=MAX_NEW, image_max_side=768)  # 768: the size a server gets
    model.check()  # what the CLI does first: cheap, nothing loads
    assert model.hf_model is None
    model.load()
    return model


@pytest.fixture(scope="module")
def hamilton_frame() -> np.ndarray:
    """A generated 640x360 textured frame (the size of the Hamilton clip's): a tiny random model
    captions any pixels alike, so no real footage is needed."""
    from tests.clips import textured_scene

    return textured_scene(seed=150, size=(640, 360))


@pytest.fixture(scope="module")
def two_people() -> np.ndarray:
    """A generated 1126x661 frame (the size of two_people.jpg), for the resizing checks."""
    from tests.clips import textured_scene

    return textured_scene(seed=2, size=(1126, 661))


def _processor_input_ids(vlm: LocalVLM, frame: np.ndarray, prompt: str) -> list[int]:
    """The prompt ids as the processor makes them for the frame (image tokens expanded)."""
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.fromarray(frame_to_rgb(frame, vlm.image_max_side))
    return vlm.processor(images=[image], text=[text], return_tensors="pt")["input_ids"][0].tolist()


def test_caption_of_a_real_frame_has_ordered_timings_and_real_counts(vlm, hamilton_frame, llava_dir) -> None:
    before = vlm.stats.requests
    prompt = vlm.build_prompt(["lin-manuel-miranda"])
    res = vlm.generate_caption(hamilton_frame, prompt)
    assert isinstance(res, CaptionResult)
    assert res.success, res.error
    assert res.caption == res.text and res.text.strip() and res.error_kind is None
    assert res.start_time < res.completion_start_time < res.end_time
    assert res.model == str(llava_dir) and res.prompt == prompt
    ids = _processor_input_ids(vlm, hamilton_frame, prompt)
    image_token = vlm.hf_model.config.image_token_id
    assert ids.count(image_token) == LLAVA_IMAGE_TOKENS  # the image tokens are counted as input
    assert res.input_tokens == len(ids)
    # The tiny model never picks EOS (it is suppressed), so it writes exactly max_new_tokens.
    assert res.output_tokens == MAX_NEW
    assert res.usage_details() == {"input": len(ids), "output": MAX_NEW}
    meta = res.metadata
    assert meta["backend"] == "local" and meta["device"] == "cpu" and meta["finish_reason"] == "length"
    assert meta["image_size"] == [640, 360]  # under 768: not resized, and never upscaled
    assert res.image_prep_ms > 0 and 0 < res.api_time <= res.latency_ms
    assert res.start_time < meta["generation_start_time"] < res.completion_start_time
    assert vlm.stats.requests == before + 1 and vlm.stats.successes >= 1


def test_output_tokens_match_what_generate_returned(vlm, two_people, monkeypatch) -> None:
    outputs = []
    real_generate = vlm.hf_model.generate

    def spy(**kwargs):
        out = real_generate(**kwargs)
        outputs.append((kwargs["input_ids"].shape[1], out))
        return out

    monkeypatch.setattr(vlm.hf_model, "generate", spy)
    res = vlm.generate_caption(two_people, vlm.build_prompt())
    assert res.success, res.error
    n_prompt, out = outputs[0]
    assert res.input_tokens == n_prompt and res.output_tokens == out.shape[1] - n_prompt <= MAX_NEW
    new_text = vlm.processor.decode(out[0, n_prompt:], skip_special_tokens=True).strip()
    assert res.text == new_text  # only the new tokens are decoded
    assert res.metadata["image_size"] == [768, 451]  # 1126x661 scaled to the longest side 768


def test_image_max_side_is_respected_and_never_upscales(llava_dir, two_people) -> None:
    small = LocalVLM(str(llava_dir), max_new_tokens=2, image_max_side=200)
    assert small.generate_caption(two_people, "Describe.").metadata["image_size"] == [200, 117]
    assert small.generate_caption(two_people[:50, :80], "Describe.").metadata["image_size"] == [80, 50]


def test_model_loads_once_across_calls_and_threads(llava_dir, hamilton_frame, monkeypatch) -> None:
    import transformers

    loads: list[str] = []
    real = transformers.AutoModelForImageTextToText.from_pretrained

    def counting(*args, **kwargs):
        loads.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", counting)
    vlm = LocalVLM(str(llava_dir), max_new_tokens=2)
    assert vlm.hf_model is None  # nothing loads before the first caption
    results: list[CaptionResult] = []
    threads = [threading.Thread(target=lambda: results.append(vlm.generate_caption(hamilton_frame, "Describe.")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    model = vlm.hf_model
    assert len(results) == 3 and all(r.success for r in results), [r.error for r in results]
    assert vlm.generate_caption(hamilton_frame, "Describe.").success
    assert loads == [str(llava_dir)] and vlm.hf_model is model
    assert vlm.stats.requests == 4 and vlm.stats.successes == 4
    # One generation at a time: the calls that waited for the lock say how long.
    assert max(r.metadata["queued_ms"] for r in results) >= 1.0  # an uncontended lock takes microseconds


def test_completion_start_is_the_first_tokens_real_time(vlm, hamilton_frame) -> None:
    """Each forward pass is slowed down: the stamp must follow the first one, not the text."""
    step = 0.15
    with slowed_forward(vlm.hf_model, step) as forward_ends:
        res = vlm.generate_caption(hamilton_frame, "Describe.")
    assert res.success, res.error
    assert len(forward_ends) == MAX_NEW  # prefill (image included) + 7 decoding steps
    generation_start = res.metadata["generation_start_time"]
    # The first token is chosen right after the first forward pass and before the second.
    assert 0 <= res.completion_start_time - forward_ends[0] < step
    assert res.completion_start_time < forward_ends[1]
    assert res.completion_start_time - generation_start >= step
    # The remaining 7 steps come after it: a "first text chunk" stamp would not fit.
    assert res.end_time - res.completion_start_time >= (MAX_NEW - 1) * step - 0.01
    assert res.end_time >= forward_ends[-1]
    assert res.ttft_ms >= step * 1000  # no upper bound: on a busy 2-core machine a forward pass can take 300 ms


def test_timeout_stops_generation(llava_dir, hamilton_frame) -> None:
    vlm = LocalVLM(str(llava_dir), max_new_tokens=100, timeout_s=0.5)
    vlm.load()
    with slowed_forward(vlm.hf_model, 0.1) as calls:
        t0 = time.time()
        res = vlm.generate_caption(hamilton_frame, "Describe.")
        elapsed = time.time() - t0
        n_calls = len(calls)
        time.sleep(0.3)
        assert len(calls) <= n_calls + 1  # the worker stopped instead of running 100 steps
    assert not res.success and res.error_kind == "timeout" and "partial text" in res.error
    assert res.text == "" and res.metadata["finish_reason"] == "timeout"
    assert 0.5 <= elapsed < 2.0  # 100 steps would take 10 s
    assert res.completion_start_time is not None and 0 < res.output_tokens < 100
    assert vlm.stats.failures["timeout"] == 1


def test_thinking_is_stripped_and_only_thinking_is_a_bad_response(vlm, hamilton_frame, monkeypatch) -> None:
    tokenizer = vlm.processor.tokenizer
    monkeypatch.setattr(tokenizer, "decode", lambda ids, **kw: "<think>Who is it?</think>\n\nA man on a stage.")
    res = vlm.generate_caption(hamilton_frame, "Describe.")
    assert res.success and res.text == "A man on a stage." and res.metadata["reasoning_chars"] == len("Who is it?")
    monkeypatch.setattr(tokenizer, "decode", lambda ids, **kw: "<think>Still thinking about who")
    res = vlm.generate_caption(hamilton_frame, "Describe.")
    assert not res.success and res.error_kind == "bad_response" and "only reasoning" in res.error


def test_generation_error_and_bad_frame_are_results_not_exceptions(vlm, hamilton_frame, monkeypatch) -> None:
    def broken(**kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vlm.hf_model, "generate", broken)
    res = vlm.generate_caption(hamilton_frame, "Describe.")
    assert not res.success and res.error_kind == "model_error" and "out of memory" in res.error
    res = vlm.generate_caption(np.zeros((0, 0, 3), np.uint8), "Describe.")
    assert not res.success and res.error_kind == "client_error" and "frame" in res.error


def test_grey_and_bgra_frames_become_rgb() -> None:
    bgra = np.zeros((10, 20, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    assert frame_to_rgb(bgra, 768)[0, 0].tolist() == [0, 0, 255]
    assert frame_to_rgb(np.full((10, 20), 7, np.uint8), 768).shape == (10, 20, 3)


def test_build_prompt_matches_the_api_client() -> None:
    local, api = LocalVLM("unused"), VLMClient(model="unused")
    for names in ((), ("obama", "biden", "obama"), (" ", "lin-manuel-miranda")):
        assert local.build_prompt(names) == api.build_prompt(names)
    assert "obama, biden." in local.build_prompt(["obama", "biden"])
    custom = LocalVLM("unused", prompt_template="Caption {json}{faces}")
    assert custom.build_prompt(["x"]).startswith("Caption {json} The people")


def test_bad_folders_and_uncached_hub_ids_are_actionable(tmp_path, hamilton_frame) -> None:
    with pytest.raises(BackendUnavailable) as info:
        LocalVLM(str(tmp_path / "nope")).check()
    assert info.value.option == "--vlm-model" and "does not exist" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable) as info:
        LocalVLM(str(tmp_path / "empty")).check()
    msg = str(info.value)
    assert info.value.option == "--vlm-model" and "must hold" in msg and "config.json" in msg
    with pytest.raises(BackendUnavailable) as info:
        LocalVLM("Qwen/no-such-model-for-tests").check()
    assert "hf download Qwen/no-such-model-for-tests" in str(info.value)
    # generate_caption reports the same failure instead of raising.
    vlm = LocalVLM(str(tmp_path / "nope"))
    res = vlm.generate_caption(hamilton_frame, "Describe.")
    assert not res.success and res.error_kind == "model_error" and "does not exist" in res.error
    assert vlm.stats.failures["model_error"] == 1


def test_qwen3_vl_processor_is_assembled_without_torchvision(tmp_path, hamilton_frame) -> None:
    """Qwen3-VL's processor wants a video processor (torchvision); the image-only one captions."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: AutoProcessor builds the processor itself")
    from transformers import AutoProcessor

    folder = build_tiny_qwen3_vl(tmp_path / "tiny-qwen3-vl")
    with pytest.raises(ImportError, match="Qwen3VLVideoProcessor requires the Torchvision library"):
        AutoProcessor.from_pretrained(folder)
    vlm = LocalVLM(str(folder), max_new_tokens=4)
    res = vlm.generate_caption(hamilton_frame, vlm.build_prompt(["lin-manuel-miranda"]))
    assert res.success, res.error
    assert vlm.processor_assembled and type(vlm.processor).__name__ == "ImageOnlyQwen3VLProcessor"
    assert res.text.strip() and res.output_tokens == 4
    assert res.start_time < res.completion_start_time < res.end_time
    ids = _processor_input_ids(vlm, hamilton_frame, vlm.build_prompt(["lin-manuel-miranda"]))
    assert res.input_tokens == len(ids)
    # 640x360 is resized to whole 32-pixel blocks within 16 blocks (max_image_tokens): 5 x 3.
    assert ids.count(vlm.hf_model.config.image_token_id) == 15


def test_torchvision_hint_names_the_matching_release() -> None:
    import torch

    cmd = torchvision_pip_command()
    minor = int(torch.__version__.split(".")[1])
    assert cmd.startswith(f'pip install "torchvision==0.{minor + 15}.*"')
    assert ("--index-url https://download.pytorch.org/whl/cpu" in cmd) == torch.__version__.endswith("+cpu")


def test_importing_local_vlm_loads_no_heavy_library() -> None:
    code = ("import sys, video_summarizer.models.local_vlm, video_summarizer.models.hf, video_summarizer.frames, "
            "video_summarizer.backends, video_summarizer.models.summary_prompt; "
            "print(sorted(m for m in ('torch', 'transformers', 'cv2', 'openai', 'PIL', 'huggingface_hub') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- check() is cheap; models that are not there are said fast; cached ones need no network ----
_LOAD_SCRIPT = """
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from video_summarizer.errors import BackendUnavailable
from video_summarizer.models.local_vlm import LocalVLM
vlm = LocalVLM(sys.argv[1], max_new_tokens=2)
t0 = time.monotonic()
try:
    vlm.check()
    checked = {"loaded": vlm.hf_model is not None,
               "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}
    vlm.load()
    out = {"ok": True, "checked": checked, "device": vlm.device}
except BackendUnavailable as exc:
    out = {"ok": False, "option": exc.option, "message": str(exc)}
out["seconds"] = time.monotonic() - t0
print(json.dumps(out))
"""


def _run_load(model: str, env: dict[str, str]) -> tuple[dict, str]:
    """LocalVLM(model).check() then .load() in a fresh process: (what it printed as JSON, its stderr)."""
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, model], cwd=REPO, env=full, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


class _CountingListener:
    """A TCP port on 127.0.0.1 that counts the connections made to it (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def __enter__(self) -> "_CountingListener":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_finds_the_folder_without_loading_anything(llava_dir, tmp_path) -> None:
    result, stderr = _run_load(str(llava_dir), {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert result["ok"], result
    assert result["checked"] == {"loaded": False, "heavy": []}  # check() imported neither torch nor transformers
    # load() is its own step with its own progress lines.
    assert f"Loading caption model {llava_dir} on cpu ..." in stderr
    assert f"Caption model {llava_dir} ready in " in stderr


def test_uncached_hub_id_with_the_hub_unreachable_fails_in_seconds_with_one_line(tmp_path) -> None:
    port = _closed_port()
    result, stderr = _run_load("Qwen/not-cached-for-tests", {"HF_ENDPOINT": f"http://127.0.0.1:{port}",
                                                             "HF_HOME": str(tmp_path / "empty-home")})
    assert not result["ok"] and result["option"] == "--vlm-model"
    message = result["message"]
    assert "\n" not in message and "hf download Qwen/not-cached-for-tests" in message
    assert f"the hub at http://127.0.0.1:{port} cannot be reached: Connection refused" in message
    assert result["seconds"] < 5.0, result  # the hub client's retries took minutes (issue 11)
    assert stderr.strip() == "", stderr  # nothing else printed: no retries, no second copy


def test_cached_hub_id_loads_with_no_network_at_all(llava_dir, tmp_path) -> None:
    home = tmp_path / "hf-home"
    install_in_hub_cache(llava_dir, "tests/tiny-llava", home)
    with _CountingListener() as hub:
        result, stderr = _run_load("tests/tiny-llava", {"HF_ENDPOINT": hub.url, "HF_HOME": str(home)})
        connections = hub.connections
    assert result["ok"], result
    assert result["checked"]["loaded"] is False
    assert connections == 0  # neither the check nor the load asked the hub anything
    assert "Caption model tests/tiny-llava ready in " in stderr


def test_generation_defaults_from_the_model_files_raise_no_warning(tmp_path, hamilton_frame, capfd) -> None:
    folder = build_tiny_llava(tmp_path / "tiny-llava-gc")
    config = json.loads((folder / "generation_config.json").read_text())
    # What real checkpoints carry (Qwen3-VL: sampling defaults; many: a max_length).
    config.update(max_length=64, do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    (folder / "generation_config.json").write_text(json.dumps(config))
    vlm = LocalVLM(str(folder), max_new_tokens=3)
    vlm.load()
    capfd.readouterr()
    results = [vlm.generate_caption(hamilton_frame, "Describe.") for _ in range(2)]
    err = capfd.readouterr().err
    assert all(r.success and r.output_tokens == 3 for r in results), [r.error for r in results]
    assert "max_length" not in err and "generation flags" not in err and "maximum length" not in err, err
