"""The one table the benchmark prints: each figure beside its same-run baseline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None  # None: no target, or not measurable


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def section(self, name: str) -> None:
        self.rows.append(Row(f"[{name}]", ""))

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        headers = ("figure", "meterd", "baseline", "ratio", "target", "")
        cells = [
            (r.figure, r.value, r.baseline, r.ratio, r.target, "" if r.ok is None else ("PASS" if r.ok else "MISS"))
            for r in self.rows
        ]
        sized = [c for c in cells if not c[0].startswith("[")]  # section titles span the row
        widths = [max([len(h)] + [len(c[i]) for c in sized]) for i, h in enumerate(headers)]

        def line(values: tuple[str, ...]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

        out = [self.title, "=" * len(self.title), line(headers), line(tuple("-" * w for w in widths))]
        for c in cells:
            out.append(c[0] if c[0].startswith("[") else line(c))
        if self.notes:
            out.append("")
            out.extend(f"* {n}" for n in self.notes)
        return "\n".join(out)


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "n/a"
    return f"{value / baseline:.2f}x"


def rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}/s"


def ms(v_s: float | None) -> str:
    return "n/a" if v_s is None else f"{v_s * 1000:.1f} ms"
