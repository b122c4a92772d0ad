"""A verdict as text for a terminal: the verdict line, each signal, quality, what to do.

Also the one helper that lays out every table the ``lifecycle`` CLI prints
(:func:`render_table`): rich aligns the columns, the text stays plain. It lives here,
not in ``lifecycle.cli``, because the monitors may not import the CLI layer.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from monitors.results import Verdict

#: The width of a table when stdout is not a terminal (a pipe, a file, a test's runner).
PLAIN_WIDTH = 120


def _width() -> int:
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size((PLAIN_WIDTH, 24)).columns
    return PLAIN_WIDTH


def render_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Collection[str] = (),
    indent: int = 2,
    width: int | None = None,
) -> str:
    """Rows under their headers, aligned by rich, as plain text: no colour, no escape codes.

    A cell is ``str()`` of its value, ``-`` for None, taken literally (no rich markup).
    Columns whose header is in ``right`` are right-aligned (numbers). A cell too long for
    its column folds onto the next line rather than being cut short with "…". ``width``:
    the terminal's when stdout is one, else :data:`PLAIN_WIDTH`; each line is indented by
    ``indent`` spaces and has no trailing blanks.
    """
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="", highlight=False
    )
    for header in headers:
        table.add_column(
            Text(header), justify="right" if header in right else "left", overflow="fold"
        )
    for row in rows:
        table.add_row(*(Text("-" if value is None else str(value)) for value in row))
    out = io.StringIO()
    console = Console(
        file=out,
        width=max((width or _width()) - indent, 40),
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        markup=False,
        emoji=False,
        legacy_windows=False,
    )
    console.print(table)
    return "\n".join((" " * indent + line).rstrip() for line in out.getvalue().splitlines())


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def verdict_table(verdict: Verdict, *, actions: list[str] | None = None) -> str:
    w = verdict.window
    lines = [
        f"{verdict.specialist}  v{verdict.champion_version if verdict.champion_version else '-'}"
        f"  verdict: {verdict.status.value}",
        f"window: {w.get('rows', 0)} requests"
        + (f" ({w['first_request']} .. {w['last_request']})" if w.get("first_request") else "")
        + f", {w.get('labelled', 0)} labelled",
    ]
    skipped = (w.get("skipped_signals") or {}).items()
    if verdict.signals or skipped:
        lines.append("")
        lines.append(
            render_table(
                ("signal", "method", "score", "threshold", "drifted"),
                [
                    *(
                        (
                            s.name,
                            s.method,
                            f"{s.score:.3f}",
                            f"{s.threshold:.3f}",
                            "YES" if s.drifted else "no",
                        )
                        for s in verdict.signals
                    ),
                    *((name, "-", "-", "-", f"not checked: {why}") for name, why in skipped),
                ],
                right=("score", "threshold"),
            )
        )
    lines.append("")
    ref = verdict.reference
    if verdict.quality is not None and verdict.quality.accuracy is not None:
        q = verdict.quality
        assert q.accuracy_ci is not None and q.macro_f1_ci is not None
        lines.append(
            f"  accuracy {q.accuracy:.3f} [{q.accuracy_ci[0]:.3f}, {q.accuracy_ci[1]:.3f}]"
            f"  macro-F1 {_num(q.macro_f1)} [{q.macro_f1_ci[0]:.3f}, {q.macro_f1_ci[1]:.3f}]"
            f"  on {q.labelled} labels (reference {_num(ref.get('accuracy'))})"
        )
    if verdict.estimate is not None:
        e = verdict.estimate
        if e.accuracy_high is None:
            lines.append(
                f"  estimated accuracy {e.accuracy:.3f} (at least {e.accuracy_low:.3f}; "
                f"{e.out_of_support:.1%} of requests outside the reference's support; "
                f"reference confidence {_num(ref.get('confidence'))})"
            )
        else:
            used = f", {e.labels_used} labels" if e.labels_used else ", no labels"
            lines.append(
                f"  estimated accuracy {e.accuracy:.3f} [{e.accuracy_low:.3f}, "
                f"{e.accuracy_high:.3f}] ({e.method}{used}; reference confidence "
                f"{_num(ref.get('confidence'))})"
            )
            lines.append(
                f"  out of scope: {_num(e.out_of_scope, '.1%')} flagged, "
                f"{e.out_of_support:.1%} estimated outside the label set"
            )
            lines.extend(f"    assumes: {a}" for a in e.assumptions)
    note = (w.get("detector") or {}).get("note")
    if note:
        lines.append(f"  detector: {note}")
    found = verdict.discovery
    if found is not None:
        lines.append("")
        lines.append(f"new traffic: {found.get('headline', '')}")
        clusters = found.get("clusters", [])[:10]
        if clusters:
            lines.append(_clusters_table(clusters))
    if verdict.reasons:
        lines.append("")
        lines.append("because:")
        for r in verdict.reasons:
            value = "" if r.value is None else f" {r.value:.3f}"
            limit = "" if r.threshold is None else f" (threshold {r.threshold:.3f})"
            lines.append(f"  - {r.signal}{value}{limit}: {r.detail}")
    if verdict.report_uri:
        lines.append(f"report: {verdict.report_uri}")
    if actions:
        lines.append("next:")
        lines.extend(f"  {a}" for a in actions)
    return "\n".join(lines)


def nearest_cell(cluster: dict[str, Any]) -> str:
    """The nearest known label, or for a group hiding under a label, that label said so."""
    if cluster.get("hidden_under"):
        return f"answered as {cluster['hidden_under']}"
    return str(cluster.get("nearest_label") or "-")


def _clusters_table(clusters: list[dict[str, Any]]) -> str:
    """New traffic's clusters: size, share, top terms, nearest known label, an example."""
    return render_table(
        ("#", "requests", "share", "terms", "nearest label", "distance", "example"),
        [
            (
                c["id"],
                c["size"],
                f"{c['share']:.1%}",
                ", ".join(c.get("top_terms", [])[:5]) or "-",
                nearest_cell(c),
                _num(c.get("nearest_distance"), ".2f"),
                repr(c["examples"][0]) if c.get("examples") else "-",
            )
            for c in clusters
        ],
        right=("#", "requests", "share", "distance"),
    )
