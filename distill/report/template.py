"""The HTML of the run report (`distill.report`): the Jinja2 page `page.html.j2` (its CSS inline) and the number
formats its filters use.

Kept apart from the code that reads a run so the page's layout can be changed without touching the numbers.
Everything is autoescaped; only the charts (SVG that matplotlib wrote) are inserted as markup.
"""

from __future__ import annotations

import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

PAGE = "page.html.j2"  # beside this module: the page, its CSS inline


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


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(num=_num, pct=_pct, duration=_duration, when=_when, money=_money, fmt=_format)
    return env


def render_page(**context) -> str:
    """The report page for `distill.report.render`'s context (the template marks the chart SVGs safe)."""
    return _environment().get_template(PAGE).render(**context)
