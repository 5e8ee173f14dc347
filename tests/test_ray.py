"""--ray on a real local Ray cluster (loopback only): the same outputs as a local run, a worker
killed mid-file is retried and its file written once, bad addresses and live sources refused.

The head runs as a child process (`ray start --head --block`) and is ended by its pid; the
port is outside Ray's worker range 10002-19999. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every
Ray process on 127.0.0.1 (shared/notes/stack.md): set here, for the tests only. Every Ray process
started here gets its Ray state from tests/ray_head.ray_env (auth mode, temp folder), so the
machine's ~/.ray and /tmp/ray never reach it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import REPO, TEST_SECRET_KEY, cli_args, cli_env, image_digest_reply, read_events, run_cli
from tests.fake_langfuse import wait_until
from tests.fake_openai import FakeOpenAIServer
from tests.ray_head import SPY_CLI, free_port, local_ray_head, ray_tmpdir, spied
from tests.ray_head import ray_env as with_ray_state
from tests.test_jobs import make_batch

WORKER_TITLE = b"ray::SummarizerWorker"
NODE_VLM_KEY = "sk-node-own-vlm-key"  # what the head's workers find in their own environment


@pytest.fixture(scope="module")
def ray_tmp():
    """The Ray temp folder of the module's head and of the drivers that join it."""
    with ray_tmpdir() as path:
        yield path


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, ray_tmp):
    """A 2-CPU Ray head on 127.0.0.1, its node's VLM key in its environment; its address."""
    base = tmp_path_factory.mktemp("ray")
    with (base / "head.log").open("w") as log, \
            local_ray_head(2, log, tmpdir=ray_tmp, env=cli_env(base, VLM_API_KEY=NODE_VLM_KEY)) as address:
        yield address


@pytest.fixture
def ray_env(tmp_path, ray_tmp):
    """The CLI's environment for a driver of the module's head (extra variables as keywords)."""
    return lambda **extra: with_ray_state(cli_env(tmp_path), ray_tmp, **extra)


def batch_args(vlm_url: str, llm: Path, src: Path, out: Path, *more: str) -> list[str]:
    return cli_args(vlm_url, llm, "--source", str(src), "--output-dir", str(out), "--interval", "0.5",
                    "--min-change", "0", "--no-faces", *more)


def docs_of(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.summary.json"))}


def worker_pids() -> list[int]:
    """Processes titled as our Ray actor (Ray names them ray::<class>[.<method>])."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(WORKER_TITLE + b".process"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_ray_batch_gives_the_local_outputs(tmp_path, tiny_llm, ray_head, ray_env):
    src = tmp_path / "in"
    make_batch(src, 4, seconds=1.5)
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.05, capacity=8) as vlm:
        local = run_cli(batch_args(vlm.base_url, tiny_llm, src, tmp_path / "local"), ray_env())
        assert local.returncode == 0, local.stderr
        remote = run_cli(batch_args(vlm.base_url, tiny_llm, src, tmp_path / "ray", "--ray", ray_head,
                                    "--events", str(tmp_path / "events.jsonl")), ray_env())
        assert remote.returncode == 0, remote.stderr
    here, there = docs_of(tmp_path / "local"), docs_of(tmp_path / "ray")
    assert sorted(there) == sorted(here) == [f"clip-{i}.summary.json" for i in range(4)]
    for name, doc in here.items():
        assert len(there[name]["captions"]) == len(doc["captions"]) > 0
        assert [c["caption"] for c in there[name]["captions"]] == [c["caption"] for c in doc["captions"]]
        assert there[name]["summary"] == doc["summary"]
        assert there[name]["input_sha256"] == doc["input_sha256"]
    events = read_events(tmp_path / "events.jsonl")  # the workers' events, in the driver's file
    assert sorted(e["source"] for e in events if e["type"] == "stats" and "source" in e) == \
        [f"clip-{i}" for i in range(4)]
    assert sum(e["type"] == "caption" for e in events) == sum(len(d["captions"]) for d in here.values())
    assert [line for line in remote.stderr.splitlines() if "token authentication" in line] == [
        "Ray: the cluster has no token authentication on node 127.0.0.1: anyone who can reach it can run code "
        "on it. Start every node with RAY_AUTH_MODE=token (see docs/scale.md)."]
    assert "VLM qwen3: " in remote.stderr  # the statistics, merged from the workers
    assert "[4/4 files, 0 in progress, 0 failed" in remote.stderr


def _interrupt_mid_batch(args: list[str], env: dict, vlm: FakeOpenAIServer, interrupt, timeout: float):
    """Run the CLI; once the VLM got 3 requests, ``interrupt(proc)``; (exit code, stderr)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while len(vlm.requests) < 3:
            assert proc.poll() is None and time.time() < deadline, "no worker got going"
            time.sleep(0.05)
        interrupt(proc)
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def test_workers_killed_mid_file_are_retried_and_their_files_written_once(tmp_path, tiny_llm, ray_head, ray_env):
    src, out = tmp_path / "in", tmp_path / "out"
    make_batch(src, 4, seconds=2.0)
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.3, capacity=8) as vlm:
        victims: list[int] = []

        def kill_workers(_proc: subprocess.Popen) -> None:
            victims.extend(worker_pids())  # each worker busy with a file, killed once
            assert victims
            for pid in victims:
                os.kill(pid, signal.SIGKILL)

        # 3 captions asked for: no file is done yet (each needs 4+), and one has sent some
        returncode, stderr = _interrupt_mid_batch(
            batch_args(vlm.base_url, tiny_llm, src, out, "--ray", ray_head, "--jobs", "1",
                       "--events", str(tmp_path / "events.jsonl")), ray_env(), vlm, kill_workers, 150)
    assert returncode == 0, stderr
    assert not set(victims) & set(worker_pids())
    docs = docs_of(out)
    assert sorted(docs) == [f"clip-{i}.summary.json" for i in range(4)]
    assert not [p for p in out.iterdir() if p.name.startswith(".clip-")]  # no half-written file
    for doc in docs.values():
        assert not doc["interrupted"]
        assert len(doc["captions"]) == doc["stats"]["selected"] == doc["stats"]["captioned"] > 0
    events = read_events(tmp_path / "events.jsonl")
    # the killed attempt's events never reach the driver: one stats event and one caption a frame per file
    stats = [e["source"] for e in events if e["type"] == "stats" and "source" in e]
    assert sorted(stats) == [f"clip-{i}" for i in range(4)]
    captions = [(e["source"], e["frame"]) for e in events if e["type"] == "caption"]
    assert len(captions) == len(set(captions)) == sum(len(d["captions"]) for d in docs.values())
    assert len(vlm.requests) > len(captions)  # the killed attempt's captions were asked for again


def _whole(doc: dict) -> bool:
    """A summary of the whole file: not interrupted, every selected frame captioned."""
    stats = doc["stats"]
    return not doc["interrupted"] and len(doc["captions"]) == stats["selected"] == stats["captioned"] > 0


def test_ctrl_c_stops_a_ray_run_and_a_rerun_finishes_it(tmp_path, tiny_llm, ray_head, ray_env):
    """SIGINT mid-batch: exit 130; a file in progress is written whole or as interrupted (never half
    a file), the files not started are left, no worker stays on the cluster; the next run redoes
    exactly the interrupted and the missing files."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_batch(src, 4, seconds=4.0)  # 8-9 captions a file
    with FakeOpenAIServer(reply_fn=image_digest_reply, first_chunk_delay=0.3, capacity=8) as vlm:
        # both workers busy, no file near its end
        returncode, stderr = _interrupt_mid_batch(
            batch_args(vlm.base_url, tiny_llm, src, out, "--ray", ray_head, "--jobs", "1"), ray_env(),
            vlm, lambda proc: proc.send_signal(signal.SIGINT), 90)
        assert returncode == 130, stderr
        docs = docs_of(out)
        assert 0 < len(docs) <= 2, sorted(docs)  # the two in progress (one per worker), no other
        for doc in docs.values():
            assert doc["interrupted"] or _whole(doc), doc["stats"]
        assert any(doc["interrupted"] for doc in docs.values())
        assert not [p for p in out.iterdir() if p.name.startswith(".clip-")]  # no half-written file
        assert wait_until(lambda: not worker_pids(), timeout=30), worker_pids()  # the actors went with the driver
        whole = {name: (out / name).stat().st_mtime_ns for name, doc in docs.items() if not doc["interrupted"]}
        rerun = run_cli(batch_args(vlm.base_url, tiny_llm, src, out, "--ray", ray_head), ray_env())
    assert rerun.returncode == 0, rerun.stderr
    docs = docs_of(out)
    assert sorted(docs) == [f"clip-{i}.summary.json" for i in range(4)]
    assert all(_whole(doc) for doc in docs.values()), {n: d["stats"] for n, d in docs.items()}
    assert {name: (out / name).stat().st_mtime_ns for name in whole} == whole  # a finished file is not redone


def test_no_cluster_at_the_address_is_one_line_and_exit_2(tmp_path, tiny_llm, ray_env):
    src = tmp_path / "in"
    make_batch(src, 1, seconds=1.0)
    port = free_port()  # nothing listens there
    started = time.time()
    run = run_cli(batch_args("http://127.0.0.1:9/v1", tiny_llm, src, tmp_path / "out", "--ray",
                             f"127.0.0.1:{port}"), ray_env(), timeout=60)
    assert run.returncode == 2
    assert run.stderr_lines() == [f"Error: --ray: no Ray cluster at 127.0.0.1:{port}: Connection refused"]
    assert time.time() - started < 30
    assert not list((tmp_path / "out").glob("*.summary.*"))


@pytest.mark.parametrize("source", ["cam0", "rtsp://127.0.0.1:8554/door", "-"])
def test_ray_with_a_live_source_or_stdin_is_a_usage_error(tmp_path, source, ray_env):
    run = run_cli([sys.executable, str(Path(__file__).resolve().parent.parent / "real_time_summarizer.py"),
                   "--source", source, "--ray", "127.0.0.1:1"], ray_env(), timeout=60)
    assert run.returncode == 2
    lines = run.stderr_lines()
    assert len(lines) == 1 and lines[0].startswith("Error: --ray: "), lines


def _spied_run(args: list[str], env: dict, timeout: float = 240):
    """The CLI run whose Ray workers note what they got (tests/ray_head.spy_stages)."""
    return run_cli(SPY_CLI + args[2:], env, cwd=REPO, timeout=timeout)


def test_ray_local_is_a_private_cluster_beside_another(tmp_path, tiny_llm, ray_head):
    """`--ray local` with RAY_ADDRESS naming a live cluster and Ray's address file naming a dead
    one: the run starts a cluster of its own (its worker descends from this CLI, not from the other
    head), finishes in bounded time, and leaves no token file (its token lives in its environment)."""
    src, out, home = tmp_path / "in", tmp_path / "out", tmp_path / "home"
    make_batch(src, 1, seconds=1.0)
    home.mkdir()
    with ray_tmpdir() as own, FakeOpenAIServer(reply_fn=image_digest_reply, capacity=4) as vlm:
        (own / "ray").mkdir()
        stale = own / "ray" / "ray_current_cluster"
        stale.write_text(f"127.0.0.1:{free_port()}\n")  # a cluster long gone
        env = with_ray_state(cli_env(tmp_path), own, RAY_ADDRESS=ray_head, HOME=str(home))
        del env["RAY_AUTH_MODE"]  # the user chose none: the product's default
        run = _spied_run(batch_args(vlm.base_url, tiny_llm, src, out, "--ray", "local"), env)
        assert run.returncode == 0, run.stderr
        assert stale.read_text().strip() != ray_head
    assert sorted(docs_of(out)) == ["clip-0.summary.json"]
    workers = spied(out)
    assert len(workers) == 1
    ancestors = workers[0]["ancestors"]
    assert any(str(out) in cmd for cmd in ancestors), ancestors  # a child of this run's own cluster
    assert not any(f"--port {ray_head.rsplit(':', 1)[1]}" in cmd for cmd in ancestors), ancestors
    assert workers[0]["environ"]["RAY_AUTH_MODE"] == "token"
    assert "token authentication" not in run.stderr.lower(), run.stderr
    assert not (home / ".ray").exists()  # Ray wrote no ~/.ray/auth_token


def test_ray_alone_with_a_stale_address_file_is_one_line_and_exit_2(tmp_path, tiny_llm):
    """`--ray` alone, RAY_ADDRESS unset, Ray's address file naming a cluster that is gone: one line
    naming --ray and the file, in seconds (Ray itself retries such an address forever)."""
    src = tmp_path / "in"
    make_batch(src, 1, seconds=1.0)
    with ray_tmpdir() as own:
        (own / "ray").mkdir()
        stale, dead = own / "ray" / "ray_current_cluster", f"127.0.0.1:{free_port()}"
        stale.write_text(dead + "\n")
        started = time.time()
        run = run_cli(batch_args("http://127.0.0.1:9/v1", tiny_llm, src, tmp_path / "out", "--ray"),
                      with_ray_state(cli_env(tmp_path), own), timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr_lines() == [f"Error: --ray: no Ray cluster at {dead} (named by {stale}): Connection refused"]
    assert time.time() - started < 30


def test_no_secret_travels_to_the_workers(tmp_path, tiny_llm, ray_head, ray_env):
    """The driver's Langfuse secret, HF token and VLM key reach no worker: not through the job's
    runtime env, not in the options sent; each worker captions with its own node's key."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_batch(src, 2, seconds=1.0)
    secret = {"LANGFUSE_SECRET_KEY": TEST_SECRET_KEY, "HF_TOKEN": "hf_driver_DO_NOT_LEAK",
              "VLM_API_KEY": "sk-driver-DO-NOT-LEAK"}
    env = ray_env(LANGFUSE_PUBLIC_KEY="pk-driver", LANGFUSE_BASE_URL="http://127.0.0.1:9",
                  LANGFUSE_TRACING_ENABLED="false", **secret)
    with FakeOpenAIServer(reply_fn=image_digest_reply, capacity=4, api_key=NODE_VLM_KEY) as vlm:
        run = _spied_run(batch_args(vlm.base_url, tiny_llm, src, out, "--ray", ray_head), env)
    assert run.returncode == 0, run.stderr
    docs = docs_of(out)
    assert sorted(docs) == ["clip-0.summary.json", "clip-1.summary.json"]
    assert all(doc["stats"]["captioned"] == doc["stats"]["selected"] > 0 for doc in docs.values())  # node's key
    workers = spied(out)
    assert workers
    for worker in workers:
        assert not worker["runtime_env"].get("env_vars"), worker["runtime_env"]
        assert worker["keys"] == {"vlm_api_key": NODE_VLM_KEY, "llm_api_key": None, "judge_api_key": None}
        text = json.dumps(worker)
        assert not [name for name, value in secret.items() if value in text]


def test_a_key_no_worker_can_read_is_one_line_and_exit_2(tmp_path, tiny_llm, ray_head, ray_env):
    """A key typed on the command line, or one the driver has and a node lacks: refused before any
    file starts, naming the option or the node and the variable."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_batch(src, 1, seconds=1.0)
    typed = run_cli(batch_args("http://127.0.0.1:9/v1", tiny_llm, src, out, "--ray", ray_head,
                               "--vlm-api-key", "sk-typed"), ray_env(), timeout=60)
    assert typed.returncode == 2
    assert typed.stderr_lines() == [
        "Error: --vlm-api-key: a key on the command line is not sent to Ray workers (they read VLM_API_KEY "
        "from their own environment); set VLM_API_KEY instead, on every node (docs/scale.md)"]
    lacking = run_cli(batch_args("http://127.0.0.1:9/v1", tiny_llm, src, out, "--ray", ray_head),
                      ray_env(LLM_API_KEY="sk-llm-driver"), timeout=120)
    assert lacking.returncode == 2
    assert lacking.stderr_lines() == [
        "Error: --ray: Ray node 127.0.0.1 lacks LLM_API_KEY in its environment (keys are not sent with the "
        "job: set them where `ray start` runs on that node, see docs/scale.md)"]
    assert not list(out.glob("*.summary.*"))


def test_a_users_ray_token_does_not_reach_the_tests_ray(tmp_path, tiny_llm):
    """Issue 20.10: with ~/.ray/auth_token present (what RAY_AUTH_MODE=token leaves behind), a head
    and a driver set up by tests/ray_head.py still agree on auth and run a batch."""
    src, out, home = tmp_path / "in", tmp_path / "out", tmp_path / "home"
    make_batch(src, 1, seconds=1.0)
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("f" * 64)
    user = cli_env(tmp_path, HOME=str(home))
    with ray_tmpdir() as own, local_ray_head(1, tmpdir=own, env=user) as address, \
            FakeOpenAIServer(reply_fn=image_digest_reply, capacity=4) as vlm:
        run = run_cli(batch_args(vlm.base_url, tiny_llm, src, out, "--ray", address), with_ray_state(user, own))
    assert run.returncode == 0, run.stderr
    assert sorted(docs_of(out)) == ["clip-0.summary.json"]
    assert (home / ".ray" / "auth_token").read_text() == "f" * 64


def test_a_token_driver_on_a_cluster_without_token_auth_is_one_line_and_exit_2(tmp_path, tiny_llm, ray_head,
                                                                                ray_env):
    """The driver's RAY_AUTH_MODE=token says nothing of the cluster's: the nodes are asked, and the
    head's lack of token auth is said before any worker starts (its actors could not report back to a
    token driver: every file would fail as "worker lost")."""
    src, out = tmp_path / "in", tmp_path / "out"
    make_batch(src, 1, seconds=1.0)
    run = run_cli(batch_args("http://127.0.0.1:9/v1", tiny_llm, src, out, "--ray", ray_head),
                  ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0123456789abcdef" * 4), timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr_lines() == [
        "Error: --ray: Ray node 127.0.0.1 has no token authentication while this driver has it on "
        "(RAY_AUTH_MODE=token), so its workers could not report back; start every node with RAY_AUTH_MODE=token "
        "(see docs/scale.md)"]
    assert not list(out.glob("*.summary.*"))
