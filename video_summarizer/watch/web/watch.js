// Polls /api/state and redraws; every value goes in through textContent (captions are model output).
"use strict";
const POLL_MS = 2000;
const COLOURS = { "VLM TTFT": "#1565c0", "VLM latency": "#ef6c00", "LLM latency": "#6a1b9a" };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function captionId(i, frame) { return "cap-" + i + "-" + frame; }

function ms(v) { return v === null || v === undefined ? "–" : Math.round(v) + " ms"; }

function chart(series) {
  const NS = "http://www.w3.org/2000/svg", W = 600, H = 140, PAD = 4;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("preserveAspectRatio", "none");
  const lines = {
    "VLM TTFT": series.vlm.map(p => [p[0], p[1]]),
    "VLM latency": series.vlm.map(p => [p[0], p[2]]),
    "LLM latency": series.llm.map(p => [p[0], p[2]]),
  };
  // x: seconds before now, over the span the points cover (a minute at least, an hour at most)
  let top = 1, span = 60;
  for (const pts of Object.values(lines)) for (const p of pts) {
    if (p[1] !== null) top = Math.max(top, p[1]);
    span = Math.min(3600, Math.max(span, -p[0]));
  }
  for (const [name, pts] of Object.entries(lines)) {
    const xy = pts.filter(p => p[1] !== null).map(p =>
      ((p[0] + span) / span * (W - 2 * PAD) + PAD).toFixed(1) + "," +
      (H - PAD - p[1] / top * (H - 2 * PAD)).toFixed(1));
    if (!xy.length) continue;
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", xy.length === 1 ? xy[0] + " " + xy[0] : xy.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLOURS[name]);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(line);
  }
  const box = el("div", "chartbox");
  const legend = el("div", "legend", "Last " + Math.round(span / 60) + " min, up to " + Math.round(top) + " ms: ");
  for (const [name, colour] of Object.entries(COLOURS)) {
    const s = el("span", null, "— " + name);
    s.style.color = colour;
    legend.appendChild(s);
  }
  box.append(legend, svg);
  return box;
}

function statsTable(stats) {
  const t = el("table", "stats");
  const rows = [["frames read", "frames_read"], ["selected", "selected"], ["captioned", "captioned"],
    ["caption failures", "caption_failures"], ["dropped (busy)", "dropped_busy"],
    ["dropped (replaced)", "dropped_replaced"], ["summaries", "summaries"]];
  for (const [name, key] of rows) {
    if (!(key in stats)) continue;
    const tr = el("tr");
    tr.append(el("th", null, name), el("td", null, String(stats[key])));
    t.appendChild(tr);
  }
  return t;
}

// The frames the newest caption covers, in time order (the key frame last), as small thumbnails.
function clipStrip(src, frame) {
  const strip = el("div", "clip");
  frame.clip.forEach((f, k) => {
    const fig = el("figure");
    const img = el("img");
    img.alt = "frame " + f.frame + " of the clip";
    img.src = "/frame.jpg?source=" + encodeURIComponent(src.label) + "&clip=" + k + "&v=" + frame.seq;
    fig.append(img, el("figcaption", null, f.at));
    strip.appendChild(fig);
  });
  return strip;
}

function sourceCard(src, i) {
  const card = el("section", "source");
  card.id = "source-" + i;
  card.appendChild(el("h2", null, src.label + (src.running ? "" : " (finished)")));
  const left = el("div", "frame");
  if (src.frame) {
    const img = el("img");
    img.alt = "newest captioned frame of " + src.label;
    img.src = "/frame.jpg?source=" + encodeURIComponent(src.label) + "&v=" + src.frame.seq;
    const now = el("p", "now");
    now.append(el("span", "time", src.frame.at), document.createTextNode(src.frame.caption || ""));
    if (src.frame.faces.length) now.appendChild(el("span", "faces", src.frame.faces.join(", ")));
    left.append(img, now);
    if (src.frame.clip.length) left.appendChild(clipStrip(src, src.frame));
  } else {
    left.appendChild(el("p", "empty", "No captioned frame yet."));
  }
  left.appendChild(chart(src.series));
  const right = el("div");
  right.appendChild(statsTable(src.stats || {}));
  const list = el("ul", "captions");
  for (const c of src.captions) {
    const li = el("li", "caption");
    li.id = captionId(i, c.frame);
    li.title = (c.time || "") + "  TTFT " + ms(c.ttft_ms) + ", latency " + ms(c.latency_ms);
    li.append(el("span", "time", c.at), el("span", "text", c.caption));
    if (c.faces.length) li.appendChild(el("span", "faces", c.faces.join(", ")));
    list.appendChild(li);
  }
  right.appendChild(list);
  card.append(left, right);
  const sum = el("div", "summary");
  if (src.summary) {
    sum.appendChild(el("strong", null, (src.summary.final ? "Final summary" : "Rolling summary") +
      (src.summary.window.length ? " (" + src.summary.window.join("–") + ")" : "") + ": "));
    if (src.summary.sentences.length) {
      for (const s of src.summary.sentences) {
        sum.appendChild(el("span", "sentence", s.text + " "));
        for (const c of s.cites) {
          const a = el("a", "cite", "[" + c.at + "]");
          a.href = "#" + captionId(i, c.frame);
          sum.appendChild(a);
        }
        sum.appendChild(document.createTextNode(" "));
      }
    } else {
      sum.appendChild(el("span", "sentence", src.summary.text || ""));
    }
  } else {
    sum.appendChild(el("span", "empty", "No summary yet."));
  }
  card.appendChild(sum);
  return card;
}

function modelRows(state) {
  const t = document.getElementById("models");
  t.replaceChildren();
  for (const [key, m] of Object.entries(state.models || {})) {
    const tr = el("tr");
    const fails = Object.entries(m.failures).map(([k, n]) => k + "=" + n).join(", ") || "none";
    tr.append(el("th", null, key.toUpperCase() + " " + m.model),
      el("td", null, m.requests + " requests, " + m.successes + " ok, failures: " + fails),
      el("td", null, "TTFT p50 " + ms(m.ttft_ms.p50) + ", latency p50 " + ms(m.latency_ms.p50) +
        ", p95 " + ms(m.latency_ms.p95)));
    t.appendChild(tr);
  }
  if (state.langfuse) {
    const lf = state.langfuse, tr = el("tr");
    tr.append(el("th", null, "Langfuse"), el("td", null, lf.traces + " traces, " + lf.spans_delivered +
      " spans and " + lf.scores_delivered + " scores acknowledged" +
      // whatever the tracker says waits in its outbox, under the names it gives
      Object.entries(lf).filter(([k, v]) => k.startsWith("outbox") && typeof v === "number")
        .map(([k, v]) => ", " + k.replace(/_/g, " ") + " " + v).join("")));
    t.appendChild(tr);
  }
}

function alertRows(state) {
  // the newest notifications: a first one (motion) is listed again once described, under the same id
  const t = document.getElementById("alerts");
  const alerts = state.alerts || [];
  if (!alerts.length) return;
  t.replaceChildren(...alerts.map(a => {
    const tr = el("tr", "alert " + (a.status === "delivered" || a.status === "not_sent" ? "ok" : "bad"));
    tr.dataset.id = a.id;
    tr.append(el("td", null, a.source + " " + (a.at || "")), el("td", null, a.stage),
      el("td", null, (a.rules || []).join(", ") || "–"), el("td", "caption", a.caption || ""),
      el("td", null, a.status + (a.target ? " (" + a.target + ")" : "")));
    return tr;
  }));
}

async function refresh() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });  // same origin: the cookie goes with it
    const badge = document.getElementById("health");
    if (r.status === 401) {  // a new run made a new token, or the cookie is gone
      badge.textContent = "token needed: open the URL the run printed";
      badge.className = "badge bad";
      return;
    }
    const state = await r.json();
    badge.textContent = state.health.ok ? "healthy" : "unhealthy";
    badge.className = "badge " + (state.health.ok ? "ok" : "bad");
    badge.title = state.health.reason;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    const main = document.getElementById("sources");
    const keep = location.hash;  // a citation clicked stays highlighted across redraws
    if (state.sources.length) main.replaceChildren(...state.sources.map(sourceCard));
    if (keep && document.getElementById(keep.slice(1))) document.getElementById(keep.slice(1)).scrollIntoView({ block: "nearest" });
    modelRows(state);
    alertRows(state);
  } catch (e) {
    const badge = document.getElementById("health");
    badge.textContent = "run ended or unreachable";
    badge.className = "badge";
  }
}

refresh();
setInterval(refresh, POLL_MS);
