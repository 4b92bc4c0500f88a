"""Result tables: one row per (defence, threat model, attack), rendered as text, Markdown, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field

FORMATS = ("text", "markdown", "json", "csv")


@dataclass
class ResultRow:
    """One measured figure: standard accuracy (SA) and robust accuracy (RA), in percent."""

    defence: str
    threat: str
    attack: str
    sa: float
    ra: float | None
    n: int
    seconds: float
    note: str = ""
    defence_params: dict = field(default_factory=dict)
    attack_params: dict = field(default_factory=dict)


@dataclass
class ResultTable:
    rows: list[ResultRow] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def add(self, row: ResultRow) -> None:
        self.rows.append(row)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["defence", "threat", "attack", "SA %", "RA %", "n", "time s", "note"]
        body = [
            [r.defence, r.threat, r.attack, f"{r.sa:.2f}", "-" if r.ra is None else f"{r.ra:.2f}", str(r.n),
             f"{r.seconds:.1f}", r.note]
            for r in self.rows
        ]
        return header, body

    def to_markdown(self) -> str:
        header, body = self._cells()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        meta = ", ".join(f"{k}={v}" for k, v in self.meta.items())
        return "\n".join(lines) + (f"\n\n{meta}\n" if meta else "\n")

    def to_text(self) -> str:
        header, body = self._cells()
        widths = [max(len(c) for c in column) for column in zip(header, *body, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in body]
        lines += [f"{k}: {v}" for k, v in self.meta.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps({"meta": self.meta, "rows": [asdict(r) for r in self.rows]}, indent=2, default=str)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        names = list(asdict(self.rows[0]).keys()) if self.rows else [f for f in ResultRow.__dataclass_fields__]
        writer = csv.DictWriter(buffer, fieldnames=names)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in asdict(row).items()})
        return buffer.getvalue()

    def render(self, fmt: str = "text") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
        return {"text": self.to_text, "markdown": self.to_markdown, "json": self.to_json, "csv": self.to_csv}[fmt]()
