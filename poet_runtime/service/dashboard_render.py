"""The dashboard's HTML and SVG, built on the server from ``dashboard_data``.

Why server-rendered: every number and diff line is computed where the store is, so the page
needs no build step, no framework and no third-party script; the browser only runs our own
small ``static/dashboard.js`` (sign-in, rollback, live events). Every piece of text that came
from the store or the request goes through ``text()``: control, bidi and zero-width
characters made visible (``safe_text.visible``), then HTML-escaped. No inline script or style
is written, so the Content-Security-Policy can forbid both.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from string import Template
from urllib.parse import quote

PAGES = Path(__file__).parent / "pages"


def text(value, allow_newlines: bool = False) -> str:
    """Untrusted text, safe in HTML content and in a quoted attribute."""
    from poet_runtime.safe_text import visible

    return html.escape(visible(str(value), allow_newlines=allow_newlines), quote=True)


def function_url(function_id: str, **query) -> str:
    url = "/functions/" + quote(function_id, safe=":")
    parts = [f"{quote(str(k))}={quote(str(v))}" for k, v in query.items() if v is not None]
    return url + ("?" + "&".join(parts) if parts else "")


def _template(name: str) -> Template:
    return Template((PAGES / name).read_text(encoding="utf-8"))


def page(title: str, body: str, *, page_name: str, session: str = "") -> str:
    return _template("layout.html").substitute(
        title=text(title), body=body, page=text(page_name), session=session,
        nav_functions="active" if page_name == "functions" else "",
        nav_events="active" if page_name == "events" else "")


def login(next_url: str) -> str:
    return page("Sign in", _template("login.html").substitute(next=text(next_url)), page_name="login")


def _when(timestamp) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp)) + "Z"


def _counts(counts: dict, css: str) -> str:
    if not counts:
        return '<span class="none">-</span>'
    return '<ul class="counts">' + "".join(
        f'<li class="{css}" data-reason="{text(name)}"><span class="name">{text(name)}</span> '
        f'<span class="n">{n}</span></li>' for name, n in counts.items()) + "</ul>"


def functions(summaries: list, store_root: Path) -> str:
    if not summaries:
        body = f'<p class="empty">No functions in the store at <code>{text(store_root)}</code> yet.</p>'
    else:
        rows = []
        for s in summaries:
            rows.append(
                f'<tr data-function="{text(s.function_id)}">'
                f'<td class="function"><a href="{text(function_url(s.function_id))}">{text(s.function_id)}</a></td>'
                f'<td class="current">{text(s.current)}</td>'
                f'<td class="versions num">{s.versions}</td>'
                f'<td class="backend">{text(s.backend)}</td>'
                f'<td class="calls num">{s.total}</td>'
                f'<td class="enhanced num">{s.enhanced}</td>'
                f'<td class="errors num">{s.errors}</td>'
                f'<td class="fallbacks">{_counts(s.fallbacks, "fallback")}</td>'
                f'<td class="repairs">{_counts(s.repairs, "repair")}</td>'
                f'<td class="reported">{_counts(s.reported, "report")}</td>'
                f'<td class="objective">{text(s.objective or "-")}</td></tr>')
        body = ('<table class="grid" id="functions"><thead><tr><th>function</th><th>current</th><th>versions</th>'
                '<th>backend</th><th>calls</th><th>enhanced</th><th>raised</th><th>fallbacks by reason</th>'
                '<th>repairs</th><th>other reports</th><th>objective</th></tr></thead><tbody>'
                + "".join(rows) + "</tbody></table>")
    intro = (f'<p class="lead">Store <code>{text(store_root)}</code>. Calls are counted over every process '
             'that ran a function (<code>reports.json</code>, as <code>python -m poet_runtime status</code> reads it); '
             '"raised" are calls whose logic raised its own exception; repairs are by field, other reports '
             '(mismatches left as they were, retries, the domain\'s own notes) by kind.</p>')
    return page("Functions", "<h1>Functions</h1>" + intro + body, page_name="functions")


def function(summary, rows: list, diff_view: str, plot_view: str, events_view: str) -> str:
    fid = summary.function_id
    version_rows = []
    numbers = [row.number for row in rows]
    for row in rows:
        params = ", ".join(f"{text(k)}={text(v)}" for k, v in sorted(row.params.items())) or "-"
        earlier = [n for n in numbers if n < row.number]
        compare = (f'<a class="diff-link" href="{text(function_url(fid, a=earlier[-1], b=row.number))}#diff">'
                   f'diff with v{earlier[-1]}</a>') if earlier else ""
        action = ('<span class="badge">current</span>' if row.current else
                  "" if row.damaged else
                  f'<button type="button" class="rollback" data-version="{row.number}">make current</button>')
        version_rows.append(
            f'<tr class="version{" is-current" if row.current else ""}" data-version="{row.number}">'
            f'<td class="name">v{row.number}</td><td>{text(row.created_at)}</td><td>{text(row.generator)}</td>'
            f'<td class="status">{text(row.status)}</td><td>{text(row.trust)}</td><td class="params">{params}</td>'
            f'<td><code>{text(row.key)}</code></td><td class="actions">{compare} {action}</td></tr>')
    options_a = "".join(f'<option value="{n}">v{n}</option>' for n in numbers)
    versions = (
        '<section id="versions"><h2>Versions</h2>'
        '<table class="grid"><thead><tr><th>version</th><th>created</th><th>generator</th><th>status</th>'
        '<th>trust</th><th>parameters</th><th>key</th><th></th></tr></thead><tbody>'
        + "".join(version_rows) + "</tbody></table>"
        f'<div class="write card" id="rollback-box" data-function="{text(fid)}">'
        '<label for="write-key">Key with scope <code>write</code> for rollback</label> '
        '<input id="write-key" type="password" autocomplete="off" placeholder="kept in this tab (sessionStorage)"> '
        '<span id="rollback-status" class="status" role="status"></span></div>'
        f'<form id="diff-form" class="card" method="get" action="{text(function_url(fid))}#diff">'
        f'<label>from <select name="a" id="diff-a">{options_a}</select></label> '
        f'<label>to <select name="b" id="diff-b">{options_a}</select></label> '
        '<button type="submit" id="diff-button">show diff</button></form></section>')
    head = (f'<h1>{text(fid)}</h1><p class="lead">current <strong id="current-version">{text(summary.current)}</strong>'
            f' · backend {text(summary.backend)} · {summary.total} calls, {summary.enhanced} enhanced, '
            f'{summary.fell_back} fell back, {summary.errors} raised'
            + (f' · objective {text(summary.objective)}' if summary.objective else "") + "</p>")
    return page(fid, head + versions + diff_view + plot_view + events_view, page_name="function")


def diff_view(old_number: int, new_number: int, lines: list | None, problem: str | None) -> str:
    title = f"<h2>Diff v{old_number} → v{new_number} <small>code.py</small></h2>"
    if problem:
        return f'<section id="diff">{title}<p class="problem">{text(problem)}</p></section>'
    if not lines:
        return f'<section id="diff">{title}<p class="empty">The two versions have the same code.py.</p></section>'
    marks = {"add": "+", "del": "-", "same": " "}
    body = []
    for line in lines:
        if line.kind == "skip":
            body.append('<tr class="skip"><td></td><td></td><td class="code">⋯</td></tr>')
            continue
        body.append(f'<tr class="{line.kind}"><td class="ln">{line.old or ""}</td><td class="ln">{line.new or ""}</td>'
                    f'<td class="code"><span class="mark">{marks[line.kind]}</span>{text(line.text, allow_newlines=True)}</td></tr>')
    added = sum(1 for line in lines if line.kind == "add")
    removed = sum(1 for line in lines if line.kind == "del")
    return (f'<section id="diff">{title}<p class="lead"><span class="added">+{added}</span> '
            f'<span class="removed">-{removed}</span></p><table class="diff" data-old="{old_number}" '
            f'data-new="{new_number}"><tbody>' + "".join(body) + "</tbody></table></section>")


# -- the plot -----------------------------------------------------------------------------------

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 170, 64, 16, 18, 30


def _panel(series, marks, t0: float, t1: float, css: str) -> str:
    values = [v for _, v in series.points]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5 if low else -0.5, high + 0.5 if high else 0.5
    span_t = (t1 - t0) or 1.0

    def x(t):
        return PAD_L + (t - t0) / span_t * (W - PAD_L - PAD_R)

    def y(v):
        return PAD_T + (high - v) / (high - low) * (H - PAD_T - PAD_B)

    path = []
    for index, (t, v) in enumerate(series.points):
        if index and series.step:
            path.append(f"L{x(t):.1f},{y(series.points[index - 1][1]):.1f}")
        path.append(("M" if not index else "L") + f"{x(t):.1f},{y(v):.1f}")
    if series.step:  # a parameter keeps its last value until now
        path.append(f"L{x(t1):.1f},{y(series.points[-1][1]):.1f}")
    grid = "".join(
        f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
        f'<text class="tick" x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>'
        for v in (low, (low + high) / 2, high))
    mark_lines = "".join(
        f'<line class="mark" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{H - PAD_B}"/>'
        f'<text class="mark-label" x="{x(t) + 3:.1f}" y="{PAD_T + 10}">{text(name)}</text>'
        for t, name in marks if t0 <= t <= t1)
    times = (f'<text class="tick" x="{PAD_L}" y="{H - 8}">{_when(t0)}</text>'
             f'<text class="tick" x="{W - PAD_R}" y="{H - 8}" text-anchor="end">{_when(t1)}</text>')
    # a dot per point where they fit, each with its time and value on hover
    dots = "".join(f'<circle class="dot" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5"><title>{_when(t)}: {v:.4g}</title>'
                   '</circle>' for t, v in series.points) if len(series.points) <= 60 else ""
    last = series.points[-1][1]
    return (f'<figure class="plot {css}" data-series="{text(series.name)}" data-points="{len(series.points)}" '
            f'data-last="{last:.6g}"><figcaption>{text(series.name)} <span class="last">now {last:.4g}</span>'
            f'</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{text(series.name)} over time">'
            f'{grid}{mark_lines}<path class="line" d="{"".join(path)}"/>{dots}{times}</svg></figure>')


def plot_view(objective, parameters: list, marks: list) -> str:
    series = ([objective] if objective is not None and objective.points else []) + [s for s in parameters if s.points]
    if not series:
        return ('<section id="learning"><h2>Learning</h2><p class="empty">No objective or learned parameter recorded '
                'for this function yet.</p></section>')
    times = [t for s in series for t, _ in s.points] + [t for t, _ in marks]
    t0, t1 = min(times), max(times)
    panels = []
    if objective is not None and objective.points:
        panels.append(_panel(objective, marks, t0, t1, "objective"))
    elif objective is None:
        panels.append('<p class="empty">This function has no labelled objective to plot.</p>')
    panels.extend(_panel(s, marks, t0, t1, "parameter") for s in parameters if s.points)
    return ('<section id="learning"><h2>Learning</h2><p class="lead">The objective on the last labelled calls at each '
            'feedback, and each learned parameter (its default when a version was made, then every audited change); '
            'dashed lines mark new versions.</p>' + "".join(panels) + "</section>")


def event_line(event: dict) -> dict:
    """One event as the short fields the live view shows (the same for the first rows and the stream)."""
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    kind = str(event.get("type", "?"))
    if kind == "function.execution":
        detail = f"{payload.get('status')} {payload.get('execution_id')}"
        if payload.get("fallback_reason"):
            detail += f" fallback: {payload['fallback_reason']}"
    elif kind == "function.feedback":
        detail = f"label={payload.get('label')!r} rating={payload.get('rating')!r} {payload.get('comments') or ''}"
    elif kind == "learning.updated":
        detail = f"{payload.get('parameter')}: {payload.get('old')} -> {payload.get('new')}"
    elif kind == "function.fallback":
        detail = f"{payload.get('reason')} {payload.get('detail') or ''}"
    else:
        detail = f"{payload.get('reason') or ''} {payload.get('previous') or ''}"
    from poet_runtime.safe_text import visible

    stamp = event.get("timestamp")
    when = _when(float(stamp)) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else "?"
    return {"id": visible(str(event.get("id", "")), allow_newlines=False), "when": when,
            "type": visible(kind, allow_newlines=False),
            "function": visible(str(payload.get("function", "-")), allow_newlines=False),
            "version": visible(str(payload.get("version", "-")), allow_newlines=False),
            "detail": visible(detail.strip()[:200], allow_newlines=False)}


def events_table(events: list[dict], function_id: str | None, since: float | None = None) -> str:
    rows = "".join(
        f'<tr data-id="{html.escape(line["id"])}"><td>{html.escape(line["when"])}</td>'
        f'<td class="type">{html.escape(line["type"])}</td><td>{html.escape(line["function"])}</td>'
        f'<td>v{html.escape(line["version"])}</td><td class="detail">{html.escape(line["detail"])}</td></tr>'
        for line in map(event_line, events))
    where = f' data-function="{text(function_id)}"' if function_id else ""
    where += f' data-since="{since!r}"' if since is not None else ""
    return (f'<table class="grid events" id="events"{where}><thead><tr><th>when (UTC)</th><th>type</th>'
            '<th>function</th><th>version</th><th>detail</th></tr></thead><tbody>' + rows + "</tbody></table>")


def events_page(events: list[dict], function_id: str | None, types: str | None, since: float) -> str:
    form = ('<form class="card filters" method="get" action="/events">'
            f'<label>function <input name="function" value="{text(function_id or "")}"></label> '
            f'<label>type <input name="type" value="{text(types or "")}" placeholder="e.g. learning"></label> '
            '<button type="submit">filter</button> <span id="live-status" class="status" role="status">connecting…'
            '</span></form>')
    return page("Live events", "<h1>Live events</h1><p class=\"lead\">The newest events first; new ones appear "
                "as they are written (server-sent events).</p>" + form + events_table(events, function_id, since),
                page_name="events")


def function_events_view(events: list[dict], function_id: str, since: float) -> str:
    link = f'/events?function={quote(function_id, safe=":")}'
    return (f'<section id="recent"><h2>Recent events <small><a href="{text(link)}">all of them, live</a> '
            '<span id="live-status" class="status" role="status"></span></small></h2>'
            + events_table(events, function_id, since) + "</section>")
