"""A verdict as text for a terminal: the verdict line, each signal, quality, what to do."""

from __future__ import annotations

from monitors.results import Verdict


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
    if verdict.signals:
        lines.append("")
        lines.append(f"  {'signal':<16} {'method':<24} {'score':>8} {'threshold':>9}  drifted")
        for s in verdict.signals:
            lines.append(
                f"  {s.name:<16} {s.method:<24} {s.score:>8.3f} {s.threshold:>9.3f}  "
                f"{'YES' if s.drifted else 'no'}"
            )
    for name, why in (w.get("skipped_signals") or {}).items():
        lines.append(f"  {name:<16} not checked: {why}")
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
        for c in found.get("clusters", [])[:10]:
            example = f"  e.g. {c['examples'][0]!r}" if c.get("examples") else ""
            terms = ", ".join(c.get("top_terms", [])[:5]) or "-"
            lines.append(
                f"  #{c['id']:<3} {c['size']:>6} ({c['share']:.1%})  terms: {terms}  "
                f"nearest: {c.get('nearest_label') or '-'}"
                f" ({_num(c.get('nearest_distance'), '.2f')}){example}"
            )
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
