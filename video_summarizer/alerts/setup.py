"""The alerts of a run from its options: checked before any model loads, then built around the caption model."""
from __future__ import annotations

import logging
from typing import Any

from video_summarizer.alerts.rules import Rule, all_rules
from video_summarizer.errors import InputError
from video_summarizer.options import AlertOptions
from video_summarizer.redact import redact_url

log = logging.getLogger("video_summarizer.cli")
SCHEMES = "mqtt://, mqtts://, https:// (or http:// to this machine)"


def _targets(alerts: AlertOptions) -> list[tuple[str, Any]]:
    """(scheme kind, parsed URL) per --notify; a bad one is an InputError naming --notify."""
    from video_summarizer.alerts.mqtt import parse_broker_url
    from video_summarizer.alerts.webhook import check_hook_url

    out = []
    for url in alerts.notify:
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if scheme in ("mqtt", "mqtts"):
            out.append(("mqtt", parse_broker_url(url)))
        elif scheme in ("http", "https"):
            out.append(("hook", check_hook_url(url)))
        else:
            raise InputError(f"{redact_url(url)}: use {SCHEMES}", option="--notify")
    return out


def check_alerts(alerts: AlertOptions, *, ray: bool) -> list[Rule]:
    """Rules parsed, URLs checked, each broker reached: bad input said before any model loads."""
    if not alerts.enabled:
        return []
    if ray:
        raise InputError("alerts run on this machine only, not with --ray", option="--alert" if alerts.alerts
                         else "--notify")
    rules = all_rules(alerts.alerts, alerts.alerts_file)
    targets = _targets(alerts)
    from video_summarizer.alerts.mqtt import probe_broker

    for kind, url in targets:
        if kind == "mqtt":
            probe_broker(url)
    if alerts.notify_secret and not any(kind == "hook" for kind, _ in targets):
        log.warning("--notify-secret signs webhooks; no https:// --notify is given")
    return rules


def build_alerts(alerts: AlertOptions, events: Any, tracker: Any, vlm: Any) -> tuple[Any, Any]:
    """(the caption model, judged when a rule has plain words; the notifier, listening to events) or (vlm, None)."""
    if not alerts.enabled:
        return vlm, None
    from video_summarizer.alerts.delivery import Sender
    from video_summarizer.alerts.judge import Judge, JudgedCaptionModel
    from video_summarizer.alerts.mqtt import MqttTarget
    from video_summarizer.alerts.notify import Notifier
    from video_summarizer.alerts.webhook import WebhookTarget

    rules = all_rules(alerts.alerts, alerts.alerts_file)
    judge = Judge(rules) if any(r.kind == "words" for r in rules) else None
    notifier = Notifier(rules, [], events, tracker, judge=judge, notify_first=alerts.notify_first,
                        snapshots=alerts.notify_snapshots)
    for kind, url in _targets(alerts):
        target = (MqttTarget(url, rules, motion=alerts.notify_first) if kind == "mqtt"
                  else WebhookTarget(url, alerts.notify_secret))
        notifier.senders.append(Sender(target, notifier.outcome).start())
    events.add_listener(notifier.listen)
    log.info("Alerts: %d rule(s)%s; notifications to %s", len(rules),
             f", {len(judge.rules)} judged by the caption model in its own call" if judge else "",
             ", ".join(s.target.shown for s in notifier.senders) or "the alert events only")
    return (JudgedCaptionModel(vlm, judge) if judge else vlm), notifier
