"""Every default is written once, in video_summarizer/defaults.py, and that module imports nothing.

The click options, the constructors and the loop take their defaults from it; the model ids
and URLs the user may see are string literals there and nowhere else in the code.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import click

from video_summarizer import defaults as D

REPO = Path(__file__).resolve().parent.parent
DEFAULTS = REPO / "video_summarizer" / "defaults.py"
# The project's own code: the package and the top-level modules (tests and benchmarks are not code users run).
CODE = [*REPO.glob("*.py"), *(REPO / "video_summarizer").rglob("*.py")]


def _cli_commands() -> list[click.Command]:
    """The CLI's commands (a group's commands, or the one command), as click sees them."""
    import real_time_summarizer

    root = getattr(real_time_summarizer, "cli", None) or real_time_summarizer.main
    seen, todo = [], [root]
    while todo:
        cmd = todo.pop()
        seen.append(cmd)
        todo += list(getattr(cmd, "commands", {}).values())
    return seen


def test_defaults_imports_nothing():
    tree = ast.parse(DEFAULTS.read_text(encoding="utf-8"))
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [ast.unparse(n) for n in imports] == ["from __future__ import annotations"]


def test_every_literal_click_default_is_its_defaults_constant():
    """A default that is not None, a flag or a multiple must equal a constant of defaults.py with the
    option's own name (the table below): a value typed into an option decorator fails here."""
    by_option = {
        "--reconnect-attempts": D.RECONNECT_ATTEMPTS, "--max-pixels": D.MAX_PIXELS, "--stdin-max-mb": D.STDIN_MAX_MB,
        "--face-tolerance": D.FACE_TOLERANCE, "--face-model": D.FACE_MODEL, "--vlm-backend": D.VLM_BACKEND,
        "--vlm-device": D.DEVICE, "--vlm-timeout": D.VLM_TIMEOUT_S,
        "--vlm-dtype": D.DTYPE, "--llm-dtype": D.DTYPE,
        "--llm-model": D.LLM_MODEL, "--llm-device": D.DEVICE, "--interval": D.INTERVAL_S,
        "--min-change": D.MIN_CHANGE, "--motion-min-area": D.MOTION_MIN_AREA, "--summary-interval": D.SUMMARY_INTERVAL_S, "--limit": D.QUERY_LIMIT,
        "--prompt-label": D.PROMPT_LABEL, "--prompt-cache-ttl": D.PROMPT_CACHE_TTL_S,
        "--shutdown-timeout": D.SHUTDOWN_TIMEOUT_S, "--flush-timeout": D.FLUSH_TIMEOUT_S,
        "--langfuse-outbox-max-mb": D.OUTBOX_MAX_MB, "--metrics-host": D.METRICS_HOST,
        "--trace-frame-max-side": D.TRACE_FRAME_MAX_SIDE, "--trace-frame-quality": D.TRACE_FRAME_QUALITY,
        "--clip-as": D.CLIP_AS,
    }
    checked = set()
    for command in _cli_commands():
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.multiple or param.default is None:
                continue
            name = next(o for o in param.opts if o.startswith("--"))
            if name in ("--help", "--version"):
                continue
            assert name in by_option, f"{command.name} {name}: default {param.default!r} has no defaults constant"
            assert param.default == by_option[name], (command.name, name, param.default)
            checked.add(name)
    assert checked == set(by_option), set(by_option) - checked  # every constant above is some option's


def test_the_constructors_take_their_defaults_from_defaults():
    """The values a constructor uses when the CLI passes nothing: the same as the CLI's."""
    from llm_summarizer import LLMSummarizer
    from video_summarizer.faces import FaceRecognizer
    from video_summarizer.models.local_vlm import LocalVLM
    from video_summarizer.prompts import PromptSource
    from vlm_client_module import VLMClient

    def params(fn) -> dict:
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()}

    vlm = params(VLMClient.__init__)
    assert (vlm["max_tokens"], vlm["timeout_s"], vlm["temperature"]) == (
        D.VLM_MAX_TOKENS, D.VLM_TIMEOUT_S, D.VLM_TEMPERATURE)
    local = params(LocalVLM.__init__)  # it disagreed (128 tokens, 120 s) with the CLI, which always won
    # max_new_tokens None, like the CLI's: the device's budget (D.VLM_MAX_TOKENS, D.VLM_CPU_MAX_TOKENS on a CPU)
    assert (local["max_new_tokens"], local["timeout_s"], local["device"]) == (None, D.VLM_TIMEOUT_S, D.DEVICE)
    llm = params(LLMSummarizer.__init__)
    assert (llm["model_name"], llm["max_new_tokens"], llm["timeout_s"], llm["prompt_token_budget"]) == (
        D.LLM_MODEL, D.LLM_MAX_NEW_TOKENS, D.LLM_TIMEOUT_S, D.SUMMARY_TOKEN_BUDGET)
    faces = params(FaceRecognizer.__init__)
    assert (faces["tolerance"], faces["model"], faces["scale"]) == (D.FACE_TOLERANCE, D.FACE_MODEL, D.FACE_SCALE)
    prompts = params(PromptSource.__init__)
    assert (prompts["label"], prompts["cache_ttl_s"]) == (D.PROMPT_LABEL, D.PROMPT_CACHE_TTL_S)


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_model_ids_and_urls_are_written_only_in_defaults():
    written_once = {D.LLM_MODEL, D.LOCAL_VLM_MODEL, D.API_VLM_MODEL, D.VLM_URL, D.EMBED_MODEL, D.LANGFUSE_HOST,
                    D.API_KEY_PLACEHOLDER, D.TRACE_LOG}
    assert written_once <= _string_constants(DEFAULTS)
    elsewhere = {str(p.relative_to(REPO)): found for p in CODE if p != DEFAULTS
                 and (found := written_once & _string_constants(p))}
    assert elsewhere == {}
