"""The HTML of the run report (`distill.report`): one Jinja2 template, its CSS, and the number formats.

Kept apart from the code that reads a run so the page's layout can be changed without touching the numbers.
Everything is autoescaped; only the charts (SVG that matplotlib wrote) are inserted as markup.
"""

from __future__ import annotations

import time

from jinja2 import Environment
from markupsafe import Markup


def _num(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"


def _when(timestamp) -> str:
    return "—" if timestamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _format(value, kind: str) -> str:
    """A number in the format a card names: num, pct, duration, or hours (three decimals)."""
    if kind == "hours":
        return "—" if value is None else f"{value:,.3f}"
    return {"num": _num, "pct": _pct, "duration": _duration}[kind](value)


def _money(value, currency: str) -> str:
    if value is None:
        return "—"
    # Sub-cent amounts (a cost per trace) keep three significant digits rather than rounding to 0.00.
    text = f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"
    return f"${text}" if currency == "USD" else f"{text} {currency}"


CSS = """
:root { --ink:#2b3340; --muted:#6b7685; --line:#e3e7ed; --bg:#f5f6f8; --card:#fff; --kept:#2a9d8f;
        --rej:#e76f51; --run:#d6a400; --accent:#3a6fd8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.5 "Liberation Sans", "DejaVu Sans",
       system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
header { background:#1f2733; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .meta { color:#b9c3d0; font-size:13px; }
header .meta code { color:#dfe6ee; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; position:sticky; top:0; z-index:1; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:13px; }
main { max-width:1120px; margin:0 auto; padding:20px 24px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 22px;
          margin:0 0 18px; }
h2 { margin:0 0 12px; font-size:17px; }
h3 { margin:16px 0 8px; font-size:14px; color:var(--muted); font-weight:600; }
.lead { color:var(--muted); margin:-6px 0 12px; font-size:13px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(128px, 1fr)); gap:10px; margin-bottom:14px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card .v { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .l { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; background:#fafbfc; }
td.n, th.n { text-align:right; white-space:nowrap; }
td.nowrap, #stages td:first-child, #ledger-stages td:first-child { white-space:nowrap; }
tr.total td { font-weight:600; border-top:2px solid var(--line); }
tr.kept td { background:#eef8f6; font-weight:600; }
.why { color:var(--muted); font-size:12px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.badge.done { background:#e3f4f1; color:#1d7a6e; }
.badge.running { background:#fbf1cf; color:#8a6a00; }
.badge.pending { background:#eceff3; color:var(--muted); }
.badge.kind { background:#eef2fa; color:#40598c; font-weight:500; }
header .badge { margin-left:10px; vertical-align:3px; }
.waiting { border:1px dashed #c5ccd6; border-radius:8px; padding:14px 16px; color:var(--muted); background:#fafbfc; }
.warn { border-left:4px solid var(--rej); background:#fdf1ed; padding:8px 12px; margin:10px 0; }
figure { margin:6px 0 14px; }
figure svg { width:100%; height:auto; display:block; }
.sub { color:var(--muted); font-size:12px; }
.delta-up { color:#1d7a6e; } .delta-down { color:#b4482c; }
pre { background:#f7f8fa; border:1px solid var(--line); border-radius:6px; padding:10px 12px; overflow:auto;
      font:12px/1.45 "DejaVu Sans Mono", "Liberation Mono", ui-monospace, monospace; white-space:pre-wrap;
      word-break:break-word; margin:6px 0; }
pre.spec { max-height:420px; white-space:pre; }
pre.response { max-height:220px; }
.example { border:1px solid var(--line); border-left:4px solid var(--rej); border-radius:8px; padding:10px 14px;
           margin:0 0 12px; }
.example.kept { border-left-color:var(--kept); }
.example h3 { margin:0 0 6px; color:var(--ink); }
.example dl { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:4px 0 8px; font-size:13px; }
.example dt { color:var(--muted); }
.example dd { margin:0; }
footer { color:var(--muted); font-size:12px; text-align:center; padding-bottom:24px; }
"""

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>distill report: {{ name }}</title>
<style>{{ css }}</style>
</head>
<body>
{# ---- macros: a waiting box, a number carrying its raw value, a headline card, a section's opening ---- #}
{% macro waiting(text) %}<div class="waiting">{{ text }}</div>{% endmacro %}
{% macro metric(name, value, shown) -%}
  <span data-metric="{{ name }}" data-value="{{ '' if value is none else value }}">{{ shown }}</span>
{%- endmacro %}
{% macro cards(items) %}
  <div class="cards">
  {% for c in items %}
    <div class="card"><div class="v">{{ metric(c.metric, c.value, c.value | fmt(c.fmt)) }}</div>
      <div class="l">{{ c.label }}</div></div>
  {% endfor %}
  </div>
{% endmacro %}
{% macro badge(state) %}<span class="badge {{ state }}">{{ state }}</span>{% endmacro %}

<header>
  <h1>{{ name }}
    <span id="run-state" class="badge {{ 'done' if overview.finished else 'running' }}"
          data-state="{{ 'finished' if overview.finished else 'in-progress' }}">
      {%- if overview.finished %}finished{% else %}in progress: {{ overview.done }} of {{ overview.total }} stages done
      {%- endif %}</span></h1>
  <div class="meta">run directory <code>{{ run.root }}</code>
    {% if spec_hash %} · spec <code>{{ spec_hash }}</code>{% endif %} · report written {{ written | when }}</div>
</header>
<nav>
  {% for id, title in [("overview", "Overview"), ("funnel", "Funnel"), ("lengths", "Lengths"),
                       ("scores", "Scores"), ("ledger", "Ledger"), ("spec", "Spec"), ("examples", "Examples")] %}
  <a href="#{{ id }}">{{ title }}</a>
  {% endfor %}
</nav>
<main>

<section id="overview" data-state="{{ overview.state }}">
  <h2>Overview</h2>
  {{ cards(overview.cards) }}
  <h3>Stages</h3>
  <table id="stages">
    <tr><th>stage</th><th>state</th><th class="n">time</th><th>finished</th><th>stats</th></tr>
    {% for s in overview.stages %}
    <tr data-stage="{{ s.key }}" data-state="{{ s.state }}">
      <td><code>{{ s.key }}</code></td><td>{{ badge(s.state) }}</td><td class="n">{{ s.seconds | duration }}</td>
      <td class="nowrap">{{ s.finished | when }}</td><td class="why">{{ s.stats }}</td>
    </tr>
    {% endfor %}
  </table>
</section>

<section id="funnel" data-state="{{ funnel.state }}">
  <h2>Funnel</h2>
  {% if funnel.ready %}
  <p class="lead">Every generated trace, and the step and reason that dropped it, in the order verify applies
    them. Counts from <code>verify/stats.json</code>.</p>
  <figure>{{ funnel.chart | safe }}</figure>
  {% if funnel.mismatch %}<div class="warn">The funnel does not add up: {{ funnel.mismatch }}.</div>{% endif %}
  <table id="funnel-table">
    <tr><th>step</th><th>by</th><th class="n">dropped</th><th class="n">share</th><th class="n">remaining</th>
      <th>why</th></tr>
    {% for r in funnel.rows %}
    {% if r.reason %}
    <tr class="drop" data-reason="{{ r.reason }}" data-count="{{ r.dropped }}">
    {% else %}
    <tr class="{{ r.step }}" data-step="{{ r.kind or r.step }}" data-count="{{ r.remaining }}">
    {% endif %}
      <td>{{ r.label }}</td>
      <td>{% if r.kind %}<span class="badge kind">{{ r.kind }}</span>{% endif %}</td>
      <td class="n">{% if r.dropped is not none %}{{ r.dropped | num }}{% endif %}</td>
      <td class="n">{% if r.dropped is not none %}{{ (r.dropped / funnel.stats.generated) | pct }}{% endif %}</td>
      <td class="n">{{ r.remaining | num }}</td>
      <td class="why">{{ r.why }}</td>
    </tr>
    {% endfor %}
  </table>
  {% else %}{{ waiting(funnel.waiting) }}{% endif %}
</section>

<section id="lengths" data-state="{{ lengths.state }}">
  <h2>Reasoning length</h2>
  {% if lengths.ready %}
  <p class="lead">Completion tokens per trace (reasoning and final answer), from the teacher's token counts.</p>
  {% if lengths.note %}{{ waiting(lengths.note) }}{% endif %}
  <figure>{{ lengths.chart | safe }}</figure>
  <table id="lengths-table">
    <tr><th>traces</th><th class="n">count</th><th class="n">median</th><th class="n">p90</th><th class="n">max</th></tr>
    {% for r in lengths.rows %}
    <tr data-series="{{ r.name }}">
      <td>{{ r.name }}</td><td class="n">{{ r.count | num }}</td><td class="n">{{ r.median | num }}</td>
      <td class="n">{{ r.p90 | num }}</td><td class="n">{{ r.max | num }}</td>
    </tr>
    {% endfor %}
  </table>
  {% else %}{{ waiting(lengths.waiting) }}{% endif %}
</section>

<section id="scores" data-state="{{ scores.state }}">
  <h2>Scores</h2>
  {% if scores.ready %}
  <p class="lead">pass@1 in %, averaged over k samples per problem; error bars and ± are one standard error over
    problems.
    {% if scores.decoding %}Decoding: temperature {{ scores.decoding.temperature }}, top-p {{ scores.decoding.top_p }},
    max {{ scores.decoding.max_tokens }} new tokens.{% endif %}</p>
  <figure>{{ scores.chart | safe }}</figure>
  <table id="scores-table">
    <tr><th>benchmark</th><th class="n">problems × k</th>
      {% for m in scores.models %}<th class="n">{{ m.label }}</th>{% endfor %}</tr>
    {% for r in scores.rows %}
    <tr>
      <td>{{ r.benchmark }}</td><td class="n">{{ r.problems | num }} × {{ r.k | num }}</td>
      {% for c in r.cells %}
      {% if c.s %}
      <td class="n" data-model="{{ c.model }}" data-benchmark="{{ r.benchmark }}"
          data-pass1="{{ c.s['pass@1'] }}" data-stderr="{{ c.s.stderr }}">
        {{- '%.1f' % (100 * c.s['pass@1']) }} ± {{ '%.1f' % (100 * c.s.stderr) }}
        {% if c.paired %}
        <div class="sub paired {{ 'delta-up' if c.delta > 0 else 'delta-down' if c.delta < 0 }}"
             data-difference="{{ c.paired.difference }}" data-paired-stderr="{{ c.paired.paired_stderr }}"
             data-exceeds-2se="{{ c.paired.exceeds_2se | lower }}">
          {{- '%+.1f' % c.delta }} ± {{ '%.1f' % (100 * c.paired.paired_stderr) }} vs base (paired);
          {{ '> 2 se' if c.paired.exceeds_2se else 'not significant' }}</div>
        {% elif c.delta is not none %}
        <div class="sub {{ 'delta-up' if c.delta > 0 else 'delta-down' if c.delta < 0 }}">
          {{- '%+.1f' % c.delta }} vs base</div>
        {% endif %}
      </td>
      {% else %}<td class="n">—</td>{% endif %}
      {% endfor %}
    </tr>
    {% endfor %}
  </table>
  {% if scores.pending %}
  {{ waiting("Not scored yet: " ~ scores.pending | join(", ") ~ ".") }}
  {% endif %}
  {% else %}{{ waiting(scores.waiting) }}{% endif %}
</section>

<section id="ledger" data-state="{{ ledger.state }}">
  <h2>Ledger</h2>
  <p class="lead">What the run used, finished stages only. Accelerator time is wall time × accelerators held,
    estimated from the spec unless <code>run.json</code> has measured values.</p>
  {{ cards(ledger.cards) }}
  <h3>Cost</h3>
  {% if ledger.cost %}
  {% set cur = ledger.cost.currency %}
  <table id="cost">
    <tr><th>item</th><th class="n">quantity</th><th class="n">price</th><th class="n">cost</th></tr>
    {% for line in ledger.cost.lines %}
    <tr>
      <td>{{ line.item }}</td><td class="n">{{ line.quantity }}</td>
      <td class="n">{{ line.price | money(cur) }} {{ line.unit }}</td><td class="n">{{ line.cost | money(cur) }}</td>
    </tr>
    {% endfor %}
    <tr class="total">
      <td>total</td><td></td><td class="n why">prices from {{ ledger.cost.where }}</td>
      <td class="n">{{ metric("cost_total", ledger.cost.total, ledger.cost.total | money(cur)) }}</td>
    </tr>
    <tr>
      <td>per kept trace</td><td class="n">{{ ledger.kept | num }} kept</td><td></td>
      <td class="n">{{ metric("cost_per_kept", ledger.cost.per_kept, ledger.cost.per_kept | money(cur)) }}</td>
    </tr>
  </table>
  {% else %}
  <div class="waiting" id="no-prices">{{ metric("cost_total", none, "no prices in spec") }}: an estimated cost
    and cost per kept trace need <code>prices</code> (accelerator_hour, prompt/completion_tokens_per_million).</div>
  {% endif %}
  <h3>Time per stage</h3>
  <table id="ledger-stages">
    <tr><th>stage</th><th class="n">wall time</th><th class="n">tokens in</th><th class="n">tokens out</th>
      <th class="n">accelerators</th><th class="n">accelerator-hours</th><th>from</th></tr>
    {% for r in ledger.rows %}
    <tr data-stage="{{ r.key }}">
      <td><code>{{ r.key }}</code> {% if r.state != "done" %}{{ badge(r.state) }}{% endif %}</td>
      <td class="n">{{ r.seconds | duration }}</td>
      <td class="n">{{ r.tokens_in | num }}</td><td class="n">{{ r.tokens_out | num }}</td>
      <td class="n">{{ r.accelerators | num }}</td><td class="n">{{ r.acc_hours | fmt("hours") }}</td>
      <td class="why">{{ r.source }}</td>
    </tr>
    {% endfor %}
    <tr class="total">
      <td>total</td><td class="n">{{ ledger.wall_seconds | duration }}</td><td></td><td></td><td></td>
      <td class="n">{{ ledger.acc_hours | fmt("hours") }}</td><td></td>
    </tr>
  </table>
</section>

<section id="spec" data-state="{{ spec.state }}">
  <h2>Spec</h2>
  {% if spec.text %}
  <p class="lead"><code>spec.yaml</code> as validated for this run.</p>
  <pre class="spec">{{ spec.text }}</pre>
  {% else %}{{ waiting("No spec.yaml in the run directory.") }}{% endif %}
</section>

<section id="examples" data-state="{{ examples.state }}">
  <h2>Example traces</h2>
  {% if examples.ready %}
  <p class="lead">The first kept trace and the first rejected trace of each reason, from
    <code>verify/traces.parquet</code>.</p>
  {% for c in examples.cards %}
  <div class="example{{ ' kept' if c.kept }}" data-example="{{ c.title }}" data-correct="{{ c.row.get('correct') }}">
    <h3>{{ c.title }}</h3>
    <dl>
      <dt>problem</dt><dd><code>{{ c.row.problem_id }}</code> sample {{ c.row.sample_index }}</dd>
      <dt>reference</dt><dd>{{ c.row.answer or "(none)" }}</dd>
      <dt>extracted</dt><dd>{{ "(none)" if c.row.extracted is none else c.row.extracted }}</dd>
      <dt>answer</dt><dd>{{ "unknown" if c.row.get("correct") is none else ("correct" if c.row.correct else "not correct") }}{{ "" if c.kept else ", " ~ c.row.reason }}</dd>
      <dt>finish</dt><dd>{{ c.row.finish_reason }}, {{ c.row.completion_tokens | num }} completion tokens</dd>
    </dl>
    <pre>{{ c.problem }}</pre>
    <pre class="response">{{ c.response }}</pre>
    {% if c.cut %}<div class="sub">{{ c.cut | num }} characters from the middle not shown.</div>{% endif %}
  </div>
  {% endfor %}
  {% else %}{{ waiting(examples.waiting) }}{% endif %}
</section>

</main>
<footer>written by <code>distill report</code> · self-contained: opens offline</footer>
</body>
</html>
"""


def _environment() -> Environment:
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, pct=_pct, duration=_duration, when=_when, money=_money, fmt=_format)
    return env


def render_page(**context) -> str:
    """The report page for `distill.report.render`'s context (the template marks the chart SVGs safe)."""
    return _environment().from_string(TEMPLATE).render(css=Markup(CSS), **context)
