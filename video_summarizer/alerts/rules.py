"""Watch rules: what to look for in a caption event, where, when, and how often to say it.

A condition is one of four kinds, told apart by its shape:

- ``/regex/`` on the caption text (case-insensitive);
- ``face=NAME``: NAME among the faces recognized on the frame;
- ``unknown-face``: a face that matched nobody;
- anything else: plain words, a statement the caption model answers yes or no about in the
  same caption call (alerts.judge), with its confidence.

Rules come from ``--alert NAME:CONDITION`` and from ``--alerts-file`` (TOML, or YAML when
PyYAML is installed)::

    [[alert]]
    name = "door"
    condition = "a person at the front door"
    sources = ["porch"]       # default: every source
    cooldown = 120            # seconds; default 60
    schedule = "22:00-06:00"  # local time; default: always
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

from video_summarizer import defaults as D
from video_summarizer.errors import InputError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # also an MQTT topic level and a Home Assistant id
SCHEDULE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
KINDS = ("regex", "face", "unknown_face", "words")


@dataclass(frozen=True)
class Rule:
    """One watch rule: a name, its condition, the sources it watches, its cooldown and schedule."""

    name: str
    condition: str
    kind: str  # one of KINDS
    pattern: Any = None  # the compiled regex, the face name, or the words
    sources: tuple[str, ...] = ()  # empty: every source
    cooldown_s: float = D.ALERT_COOLDOWN_S
    schedule: tuple[int, int] | None = None  # (start, end) minutes of the day, local time; None: always

    def watches(self, source: str) -> bool:
        """True when the rule applies to this source."""
        return not self.sources or source in self.sources

    def active(self, now: datetime) -> bool:
        """True inside the schedule (a window past midnight wraps)."""
        if self.schedule is None:
            return True
        start, end = self.schedule
        minute = now.hour * 60 + now.minute
        return start <= minute < end if start <= end else minute >= start or minute < end


@dataclass(frozen=True)
class Check:
    """One rule checked against one caption event: matched or not, and the model's confidence."""

    rule: Rule
    matched: bool
    confidence: float | None = None  # the judge's, for plain words; None where no model judged
    reason: str = ""  # why: the regex hit, the face, the judge's answer, "not answered"


def parse_condition(condition: str, option: str) -> tuple[str, Any]:
    """(kind, pattern) of a condition; a bad regex or an empty one is an InputError naming option."""
    text = condition.strip()
    if not text:
        raise InputError("a rule needs a condition after NAME:", option=option)
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        try:
            return "regex", re.compile(text[1:-1], re.IGNORECASE)
        except re.error as e:
            raise InputError(f"bad regular expression {text}: {e}", option=option) from None
    if text.lower().startswith("face="):
        name = text[5:].strip()
        if not name:
            raise InputError("face= needs a name (face=alice)", option=option)
        return "face", name
    if text.lower() in ("unknown-face", "unknown_face"):
        return "unknown_face", None
    return "words", " ".join(text.split())


def make_rule(name: str, condition: str, *, option: str, sources: Iterable[str] = (),
              cooldown: float = D.ALERT_COOLDOWN_S, schedule: str | None = None) -> Rule:
    """A checked Rule; anything malformed is one InputError naming option."""
    name = str(name).strip()
    if not NAME.fullmatch(name):
        raise InputError(f"rule name {name!r}: use letters, digits, _ and - (at most 64)", option=option)
    kind, pattern = parse_condition(str(condition), option)
    try:
        cooldown = float(cooldown)
    except (TypeError, ValueError):
        raise InputError(f"rule {name}: cooldown {cooldown!r} is not a number of seconds", option=option) from None
    if not cooldown >= 0:
        raise InputError(f"rule {name}: cooldown must be 0 or more seconds", option=option)
    if isinstance(sources, str):
        sources = [sources]
    return Rule(name, str(condition).strip(), kind, pattern, tuple(str(s) for s in sources), cooldown,
                _schedule(schedule, name, option))


def _schedule(text: str | None, name: str, option: str) -> tuple[int, int] | None:
    if text is None or not str(text).strip():
        return None
    m = SCHEDULE.fullmatch(str(text).strip())
    if not m or int(m[1]) > 23 or int(m[3]) > 24 or int(m[2]) > 59 or int(m[4]) > 59:
        raise InputError(f"rule {name}: schedule {text!r} is not HH:MM-HH:MM (22:00-06:00)", option=option)
    return int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])


def parse_alert(text: str, option: str = "--alert") -> Rule:
    """`NAME:CONDITION` as a Rule (every source, the default cooldown, always)."""
    name, sep, condition = str(text).partition(":")
    if not sep:
        raise InputError(f"{text!r} is not NAME:CONDITION (door:a person at the front door)", option=option)
    return make_rule(name, condition, option=option)


def load_rules_file(path: str, option: str = "--alerts-file") -> list[Rule]:
    """The rules of a TOML (or, with PyYAML, YAML) file: a list under `alert` (or `alerts`)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}", option=option) from None
    data = _parse_file(text, file.suffix.lower(), path, option)
    items = data.get("alert", data.get("alerts")) if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InputError(f"{path}: expected a list of rules under 'alert' ([[alert]] in TOML)", option=option)
    rules = []
    for i, item in enumerate(items, 1):
        unknown = set(item) - {"name", "condition", "sources", "cooldown", "schedule"}
        if unknown or "name" not in item or "condition" not in item:
            raise InputError(f"{path}: rule {i} needs name and condition, and takes sources, cooldown, schedule"
                             + (f" (not {', '.join(sorted(unknown))})" if unknown else ""), option=option)
        rules.append(make_rule(item["name"], item["condition"], option=option, sources=item.get("sources", ()),
                               cooldown=item.get("cooldown", D.ALERT_COOLDOWN_S), schedule=item.get("schedule")))
    return rules


def _parse_file(text: str, suffix: str, path: str, option: str) -> Any:
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path}: YAML needs PyYAML (pip install pyyaml); or write it as TOML",
                             option=option) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputError(f"{path}: not valid YAML ({' '.join(str(e).split())})", option=option) from None
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})", option=option) from None


def all_rules(alerts: Iterable[str], alerts_file: str | None) -> list[Rule]:
    """--alert rules then --alerts-file rules; a name used twice is an InputError."""
    rules = [parse_alert(a) for a in alerts if a.strip()]  # the variable's blank lines are no rules
    if alerts_file:
        rules += load_rules_file(alerts_file)
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise InputError(f"rule name {rule.name} is used twice", option="--alert")
        seen.add(rule.name)
    return rules


def check(rule: Rule, event: dict, judged: dict[str, tuple[bool, float | None]] | None) -> Check:
    """The rule against one caption event (judged: the judge's answers by rule name, None: none came)."""
    caption = str(event.get("caption") or "")
    if rule.kind == "regex":
        hit = rule.pattern.search(caption)
        return Check(rule, hit is not None, None, f"matched {hit.group(0)!r}" if hit else "no match")
    if rule.kind == "face":
        faces = {str(f).lower() for f in event.get("faces") or ()}
        found = rule.pattern.lower() in faces
        return Check(rule, found, None, f"{rule.pattern} recognized" if found else f"{rule.pattern} not seen")
    if rule.kind == "unknown_face":
        n = int(event.get("unknown_faces") or 0)
        return Check(rule, n > 0, None, f"{n} unknown face(s)")
    answer = (judged or {}).get(rule.name)
    if answer is None:
        return Check(rule, False, None, "not answered by the caption model")
    yes, confidence = answer
    said = "yes" if yes else "no"
    return Check(rule, yes, confidence, said if confidence is None else f"{said} ({confidence:.2f})")


class Cooldowns:
    """The last notified match per (rule, source): a match within the rule's cooldown is held back."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def take(self, rule: Rule, source: str) -> bool:
        """True (and the clock restarted) when the rule may notify this source now."""
        now = self._clock()
        with self._lock:
            last = self._last.get((rule.name, source))
            if last is not None and now - last < rule.cooldown_s:
                return False
            self._last[(rule.name, source)] = now
            return True
