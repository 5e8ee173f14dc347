"""The watch page (--metrics-port, /) in a real browser during a CLI run: headless Chromium (Debian's
``chromium``; .ci/run installs it) reads the DOM once the page's script has run, and takes a
screenshot. The DOM must hold the captions the events file has, and the summary's citations must
link to those captions; the screenshot must show a captioned frame: the numbered clip's frames
carry their number in black and white cells, read back from the screenshot itself."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tests.cli_runner import cli_env, numbered_reply, read_events
from tests.clips import read_number
from tests.fake_openai import FakeOpenAIServer
from tests.test_metrics import SUMMARY, TOKEN, LiveRun, free_port, get, run_args

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="headless Chromium not installed (apt-get install -y chromium; .ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,1000", "--virtual-time-budget=4000"]


def chromium(url: str, profile: Path, *what: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh profile folder, stopped at the timeout."""
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *what, url],
                          capture_output=True, text=True, timeout=timeout)


def wait_for_state(port: int, ready, timeout: float = 120) -> dict:
    """Poll /api/state until ready(state) holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = get(port, "/api/state")
        if got is not None and got[0] == 200:
            state = json.loads(got[1])
            if ready(state):
                return state
        time.sleep(0.2)
    raise AssertionError("the page's state never got ready")


@pytest.fixture(scope="module")
def page_run(tmp_path_factory, clips):
    """A 12 s numbered clip captioned every 0.5 s (0.4 s a caption): the browser loads the page
    while captions still come, once a rolling summary with citations is there."""
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium not installed (apt-get install -y chromium; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("watch-page")
    source = tmp / "counter.avi"
    source.write_bytes(clips.numbered(seconds=12.0).path.read_bytes())
    port = free_port()
    url = f"http://127.0.0.1:{port}/?token={TOKEN}"  # as the user opens it: the page swaps it for a cookie
    with FakeOpenAIServer(reply_fn=numbered_reply, first_chunk_delay=0.4) as vlm, \
            FakeOpenAIServer(reply=SUMMARY, models=("mistral-test",), first_chunk_delay=0.1) as llm:
        with LiveRun(run_args(vlm, llm, source, port, tmp), cli_env(tmp), tmp) as run:
            state = wait_for_state(port, lambda s: s["sources"] and s["sources"][0]["summary"]
                                   and len(s["sources"][0]["captions"]) >= 5)
            started = time.monotonic()
            dom = chromium(url, tmp / "profile-dom", "--dump-dom")
            dom_s = time.monotonic() - started
            shot = tmp / "page.png"
            shooting = chromium(url, tmp / "profile-shot", f"--screenshot={shot}")
            still_running = run.running()
            result = run.wait(timeout=120)
    assert result.returncode == 0, result.stderr
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert shooting.returncode == 0 and shot.is_file(), shooting.stderr[-2000:]
    return SimpleNamespace(dom=dom.stdout, dom_s=dom_s, shot=shot, state=state, still_running=still_running,
                           events=read_events(tmp / "events.jsonl"), tmp=tmp)


def _texts(dom: str, cls: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(rf'<span class="{cls}">([^<]*)</span>', dom)]


@needs_chromium
def test_the_page_shows_the_captions_the_events_file_has(page_run):
    assert page_run.still_running, "the run ended before the browser had read the page"
    captions = {e["caption"] for e in page_run.events if e["type"] == "caption"}
    shown = _texts(page_run.dom, "text")
    assert len(shown) >= 5, page_run.dom[:3000]
    assert set(shown) <= captions, set(shown) - captions
    assert all(re.fullmatch(r"Frame \d+\. Scene [0-9a-f]{10} shows people talking on a stage\.", t) for t in shown)
    # newest first, each with its video time
    numbers = [int(t.split()[1].rstrip(".")) for t in shown]
    assert numbers == sorted(numbers, reverse=True)
    times = re.findall(r'<li class="caption" id="cap-0-(\d+)"[^>]*><span class="time">(\d\d:\d\d)</span>', page_run.dom)
    assert times and all(int(frame) // 10 == int(mm_ss[-2:]) for frame, mm_ss in times), times  # 10 fps


@needs_chromium
def test_the_summary_cites_links_to_its_captions(page_run):
    dom = page_run.dom
    assert "Rolling summary" in dom
    assert "A frame counter climbs on a coloured screen" in dom
    cites = re.findall(r'<a class="cite" href="#(cap-0-\d+)">\[(\d\d:\d\d)\]</a>', dom)
    # [00:00] cites every caption of the first second (frames 0 and 5 at 10 fps): one link, to the first;
    # a caption covers its clip, so [00:00] also cites the one whose clip (from 00:00.6) ends at 00:01
    # (the summary is written beside the captions: [00:03] is kept only when its caption was in by then)
    expected = [("cap-0-0", "00:00"), ("cap-0-10", "00:01"), ("cap-0-20", "00:02"), ("cap-0-30", "00:03")]
    assert cites in (expected, expected[:3]), cites
    assert '<span class="sentence">A frame counter climbs on a coloured screen. </span>' in dom  # stamps: links
    for target, _ in cites:
        assert f'id="{target}"' in dom  # the caption it links to is on the page
    # the newest caption's clip: its frames as thumbnails, in time order
    strip = re.findall(r'<img alt="frame (\d+) of the clip" src="/frame.jpg\?source=counter&amp;clip=(\d+)&amp;v=\d+">',
                       dom)
    assert len(strip) >= 2 and [int(k) for _, k in strip] == list(range(len(strip))), strip
    assert [int(f) for f, _ in strip] == sorted(int(f) for f, _ in strip)


@needs_chromium
def test_the_page_shows_statistics_health_and_a_chart(page_run):
    dom = page_run.dom
    assert re.search(r'<span id="health" class="badge ok" title="ok\ncounter: last frame [^"]*">healthy</span>', dom)
    assert re.search(r"<th>frames read</th><td>\d+</td>", dom)
    assert re.search(r"<th>VLM qwen3</th><td>\d+ requests, \d+ ok, failures: none</td>", dom)
    lines = re.findall(r'<polyline points="([^"]+)"', dom)
    assert len(lines) >= 2 and all(len(p.split()) >= 2 for p in lines)  # VLM TTFT and latency at least


@needs_chromium
def test_the_screenshot_shows_a_captioned_frame(page_run):
    shot = cv2.imread(str(page_run.shot))
    assert shot is not None and shot.shape[1] == 1280
    # The frame's top band is one saturated colour: the largest such area is where the frame is.
    hsv = cv2.cvtColor(shot, cv2.COLOR_BGR2HSV)
    mask = ((hsv[:, :, 1] > 150) & (hsv[:, :, 2] > 150)).astype(np.uint8)
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    assert n > 1
    x, y, w, h = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
    assert w >= 300, (x, y, w, h)  # shown large (the clip is 160 x 120)
    frame = shot[y:y + round(w * 120 / 160), x:x + w]  # the band is the top third of a 4:3 frame
    number = read_number(frame)
    captioned = {e["frame"] for e in page_run.events if e["type"] == "caption"}
    assert number in captioned, (number, sorted(captioned))


def test_faces_are_boxed_and_named_on_the_served_frame():
    from video_summarizer.faces import FaceMatch
    from video_summarizer.watch.server import PageState

    page = PageState()
    image = np.full((120, 160, 3), 40, np.uint8)
    page(image, {"source": "cam0", "frame": 7, "video_time": 1.0, "caption": "x"},
                  [FaceMatch("ada", 0.31, (30, 100, 90, 40)), FaceMatch("unknown", None, (10, 150, 40, 120))])
    data = page.frame_jpeg("cam0")
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == image.shape and image.max() == 40  # drawn on a copy: the frame is untouched
    green = shown[60, 40].astype(int)  # on ada's box's left edge (x = 40): known faces in green
    assert green[1] > 150 and green[0] < 130 and green[2] < 130, green
    orange = shown[25, 150].astype(int)  # the unknown face's right edge: orange
    assert orange[2] > 200 and orange[0] < 120, orange
    assert page.frame_jpeg("cam0") is data  # encoded once per frame
    assert page.frame_jpeg("cam1") is None
