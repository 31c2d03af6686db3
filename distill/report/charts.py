"""The report's charts: matplotlib figures inlined as SVG (no network, no JavaScript in the page)."""

from __future__ import annotations

import io

KEPT, REJECTED, BASE = "#2a9d8f", "#e76f51", "#9aa5b1"
STUDENTS = ("#3a6fd8", "#8e5bd6", "#d6a400", "#1b998b", "#c2185b")
INK, GRID = "#2b3340", "#e3e7ed"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines[["left", "bottom"]].set_color("#b8c0cc")
    ax.tick_params(colors=INK, labelsize=9)
    ax.set_axisbelow(True)
    return fig, ax


def _svg(fig) -> str:
    import matplotlib

    # Text stays text (font-family from the page), so the SVG is small and its labels are selectable.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", transparent=True)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE: the SVG sits inside HTML


def funnel_chart(rows: list[dict]) -> str:
    """Horizontal bars, top to bottom: traces remaining after each step, with the dropped part beside it."""
    fig, ax = _figure(10, 0.36 * len(rows) + 0.8)
    labels = [r["label"] for r in rows]
    y = range(len(rows))
    remaining = [r["remaining"] for r in rows]
    dropped = [r["dropped"] or 0 for r in rows]
    colors = [KEPT if r["step"] == "kept" else "#5b7bb2" for r in rows]
    ax.barh(y, remaining, color=colors, height=0.62)
    ax.barh(y, dropped, left=remaining, color=REJECTED, alpha=0.35, height=0.62, label="dropped at this step")
    top = max(remaining[0], 1)
    for i, (r, d) in enumerate(zip(remaining, dropped)):
        text = f"{r:,}" + (f"  (−{d:,})" if d else "")
        ax.text(r + d + top * 0.01, i, text, va="center", fontsize=9, color=INK)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("traces", color=INK)
    ax.grid(axis="x", color=GRID)
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    return _svg(fig)


def length_histogram(series: dict[str, list[int]], max_tokens: int | None) -> str:
    """Histogram of completion tokens per trace, the series stacked on shared bins (overlaid translucent bars
    mix into colours of their own), with the sampling cap marked: truncated traces pile up against it."""
    fig, ax = _figure(10, 3.2)
    values = [v for s in series.values() for v in s]
    hi = max(values + [max_tokens or 0, 1])
    bins = [hi * i / 40 for i in range(41)]
    palette = {"kept": KEPT, "rejected": REJECTED}
    names = [n for n, v in series.items() if v]
    ax.hist([series[n] for n in names], bins=bins, stacked=True, color=[palette.get(n, "#5b7bb2") for n in names],
            label=[f"{n} ({len(series[n]):,})" for n in names], edgecolor="white", linewidth=0.5)
    if max_tokens:
        ax.axvline(max_tokens, color=INK, linestyle="--", linewidth=1)
        ax.annotate(f"max_tokens {max_tokens:,}", (max_tokens, 1), xycoords=("data", "axes fraction"),
                    xytext=(-4, -2), textcoords="offset points", ha="right", va="top", fontsize=8, color=INK)
    ax.set_xlabel("completion tokens per trace", color=INK)
    ax.set_ylabel("traces", color=INK)
    ax.grid(axis="y", color=GRID)
    ax.legend(frameon=False, fontsize=9, loc="upper left")
    return _svg(fig)


def scores_chart(models: list[dict], benchmarks: list[str]) -> str:
    """Grouped bars: pass@1 (%) per benchmark, one bar per model, error bars of ± one standard error."""
    fig, ax = _figure(10, 3.2)
    width = 0.8 / max(len(models), 1)
    top = 10.0
    for i, m in enumerate(models):
        xs, ys, errs = [], [], []
        for j, bench in enumerate(benchmarks):
            s = m["scores"].get(bench)
            if s is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(100 * s["pass@1"])
                errs.append(100 * s["stderr"])
        ax.bar(xs, ys, width * 0.92, yerr=errs, capsize=3, color=m["color"], label=m["label"],
               error_kw={"elinewidth": 1, "ecolor": INK})
        for x, v, e in zip(xs, ys, errs):
            ax.text(x, v + e + 1, f"{v:.1f}", ha="center", fontsize=8, color=INK)
        top = max([top] + [v + e for v, e in zip(ys, errs)])
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set_ylim(0, min(100, top * 1.2 + 2))
    ax.set_ylabel("pass@1 (%)", color=INK)
    ax.grid(axis="y", color=GRID)
    ax.legend(frameon=False, fontsize=9, ncols=min(len(models), 3), loc="upper center",
              bbox_to_anchor=(0.5, -0.12))
    return _svg(fig)
