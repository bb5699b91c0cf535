"""The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched)
with the drift table, the schema findings, and reference-vs-live histograms per column and
for the predictions. Every value from the captures or the reference is escaped."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from mlrig import contract
from mlrig.core.monitor import stats as drift_stats

if TYPE_CHECKING:
    import numpy as np

    from mlrig.core.monitor._result import Column, MonitorResult

WIDTH, HEIGHT, PAD = 320, 120, 4
REF_COLOUR, LIVE_COLOUR = "#4c72b0", "#dd8452"
_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l{text-align:left}.drift{background:#fde2e1}.none{color:#888}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #ddd;padding:6px}
.chart h3{font-size:13px;margin:0 0 4px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px}
"""


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def histogram_svg(labels: list[str], ref: list[float], live: list[float], title: str) -> str:
    """Side-by-side bars per bin: the reference's share and the live window's."""
    top = max([*ref, *live, 1e-9])
    n = max(len(labels), 1)
    slot = (WIDTH - 2 * PAD) / n
    bar = max(slot / 2 - 1, 1)
    rects = []
    for i, (r, v) in enumerate(zip(ref, live, strict=True)):
        x = PAD + i * slot
        for offset, share, colour, who in (
            (0, r, REF_COLOUR, "reference"),
            (bar, v, LIVE_COLOUR, "live"),
        ):
            h = (HEIGHT - 2 * PAD) * share / top
            rects.append(
                f'<rect class="bar {who}" x="{x + offset:.1f}" y="{HEIGHT - PAD - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(labels[i])}: {who} {share:.1%}</title></rect>"
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'stroke="#999"/>{"".join(rects)}</svg>'
    )


def _row(c: Column) -> str:
    verdict = "drift" if c.drifted else ("not judged" if c.drifted is None else "no drift")
    cls = ' class="drift"' if c.drifted else (' class="none"' if c.drifted is None else "")
    cells = [
        f'<td class="l">{escape(c.column)}</td>',
        f'<td class="l">{c.kind}</td>',
        f"<td>{c.n_live}</td>",
        f"<td>{_num(c.wasserstein)}</td>",
        f"<td>{_num(c.ks)}</td>",
        f"<td>{_num(c.ks_p)}</td>",
        f"<td>{_num(c.psi)}</td>",
        f"<td>{_num(c.jensen_shannon)}</td>",
        f"<td>{_num(c.chi2_p)}</td>",
        f'<td class="l">{verdict}{escape(" — " + c.note) if c.note else ""}</td>',
    ]
    return f"<tr{cls}>{''.join(cells)}</tr>"


def render(
    result: MonitorResult,
    reference: dict[str, np.ndarray],
    live: dict[str, np.ndarray],
    predictions: tuple[np.ndarray, np.ndarray] | None,
) -> str:
    columns = [*result.columns, *([result.prediction] if result.prediction else [])]
    charts = []
    for c in columns:
        if c.column == "prediction" and predictions is not None and result.prediction is c:
            ref_values, live_values = predictions
        elif c.column in reference and c.column in live:
            ref_values, live_values = reference[c.column], live[c.column]
        else:
            continue
        kind: drift_stats.Kind = "numeric" if c.kind == "numeric" else "categorical"
        labels, ref_h, live_h = drift_stats.histogram(ref_values, live_values, kind)
        flag = " — drift" if c.drifted else ""
        charts.append(
            f'<div class="chart" data-column="{escape(c.column)}"><h3>{escape(c.column)}'
            f"{flag}</h3>{histogram_svg(labels, ref_h, live_h, c.column)}</div>"
        )
    findings = "".join(f"<li>{escape(f)}</li>" for f in result.schema_findings) or "<li>none</li>"
    notes = "".join(f"<li>{escape(n)}</li>" for n in [*result.notes, *result.not_compared])
    verdict = (
        "DRIFT" if result.drifted else ("not enough data" if not result.enough else "no drift")
    )
    perf = ""
    if result.performance:
        p = result.performance
        perf = (
            f"<h2>Live performance</h2><p>{escape(p.metric)}: live {_num(p.live)} on "
            f"{p.labelled_rows} labelled row(s), promoted on {_num(p.promoted_on)}; "
            f"{p.unknown_ids} label(s) with an unknown inference id</p>"
        )
    who = escape(f"{result.endpoint or result.target}: {result.model} v{result.version}")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>mlrig monitor — {who}</title><style>{_CSS}</style></head><body>"
        f"<h1>mlrig monitor — {who}</h1>"
        f'<p id="verdict">{verdict}: {len(result.drifted_columns)} drifted column(s) of '
        f"{len(result.columns)}; window {result.since:%Y-%m-%d %H:%M} – "
        f"{result.until:%Y-%m-%d %H:%M} UTC, {result.records} record(s), {result.rows} row(s); "
        f"reference {escape(result.reference_path)} (md5 {result.reference_md5}, "
        f"{result.reference_rows} rows)</p>"
        "<h2>Drift</h2><table id='drift'><tr><th>column</th><th>kind</th><th>live rows</th>"
        "<th>Wasserstein (σ)</th><th>KS</th><th>KS p</th><th>PSI</th><th>JS</th><th>χ² p</th>"
        f"<th>verdict</th></tr>{''.join(_row(c) for c in columns)}</table>"
        f"<h2>Schema findings</h2><ul id='schema'>{findings}</ul>"
        f"{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}{perf}"
        '<h2>Histograms</h2><p class="legend"><span style="background:'
        f'{REF_COLOUR}"></span>reference<span style="background:{LIVE_COLOUR}"></span>live</p>'
        f'<div class="charts">{"".join(charts)}</div></body></html>\n'
    )


def write(
    path: Path,
    result: MonitorResult,
    reference: dict[str, np.ndarray],
    live: dict[str, np.ndarray],
    predictions: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """The report, written whole or not at all."""
    text = render(result, reference, live, predictions)
    # ASCII with character references: the same file whatever the locale's encoding
    contract.atomic_write(path, text.encode("ascii", "xmlcharrefreplace").decode(), 0o644)
