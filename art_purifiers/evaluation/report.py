"""Result tables: one row per (defence, threat model, attack), rendered as text, Markdown, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from art_purifiers.evaluation.names import FORMATS


def describe_data(source: str, first: int, last: int, shard: tuple[int, int] | None = None,
                  split: str = "test") -> str:
    """``"<source>: CIFAR-10 <split> images <first>..<last>"``, with the shard when there is one."""
    text = f"{source}: CIFAR-10 {split} images {first}..{last}"
    return text + (f" (shard {shard[0]}/{shard[1]})" if shard is not None and shard[1] > 1 else "")


def _without_seed(spec: str) -> str:
    """A defence spec with its ``seed=N`` option removed (``dir:ratio=0.3,seed=1`` -> ``dir:ratio=0.3``)."""
    name, _, options = spec.partition(":")
    kept = [o for o in options.split(",") if o and not re.fullmatch(r"seed=\d+", o)] if options else []
    return name + (":" + ",".join(kept) if kept else "")


def _joined_notes(labels: list[str], notes: list[str]) -> str:
    """The notes of rows combined into one (shards of a table, deployment seeds of a defence): ``""`` when none has
    one, the note when all agree, else ``"LABEL: NOTE / LABEL: NOTE"`` (per-shard or per-seed counts differ)."""
    if not any(notes):
        return ""
    if len(set(notes)) == 1:
        return notes[0]
    return " / ".join(f"{label}: {note or '-'}" for label, note in zip(labels, notes, strict=True))


#: Row settings that are means over the row's images (a test-time protocol's mean single-draw accuracies): rows
#: combined over shards or deployment seeds average them, weighted by their images.
_MEANS = ("mean_single_draw_sa", "mean_single_draw_ra")


def _combined_attack_params(rows: list[ResultRow]) -> dict:
    """The attack settings of ``rows`` combined into one row's: the first row's, with :data:`_MEANS` averaged
    (weighted by ``n``) and a protocol's seeds gathered from every row."""
    params = dict(rows[0].attack_params)
    for key in _MEANS:
        values = [row.attack_params.get(key) for row in rows]
        if key in params and all(value is not None for value in values):
            params[key] = sum(value * row.n for value, row in zip(values, rows, strict=True)) / sum(r.n for r in rows)
    if params.get("protocol_seeds") is not None:
        seeds = [seed for row in rows for seed in row.attack_params.get("protocol_seeds") or []]
        params["protocol_seeds"] = list(dict.fromkeys(seeds))
    return params


def _readable(key: str, value) -> str:
    """A setting of the table's footer as plain text: no Python dictionaries or lists; budgets as fractions of 255;
    fingerprints shortened (the JSON keeps them whole)."""
    if key == "defences" and isinstance(value, dict):
        return ", ".join(f"{name} {str(fingerprint)[:12]}" for name, fingerprint in value.items())
    if key == "images" and isinstance(value, list) and len(value) == 2:
        return f"{value[0]}..{value[1]}"
    if key == "shard" and isinstance(value, list) and len(value) == 2:
        return f"{value[0]}/{value[1]}"
    if key == "attacks" and isinstance(value, list):
        return "; ".join(_attack_text(attack) for attack in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_readable(k, v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(key, v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _attack_text(attack) -> str:
    """``pgd L-inf eps=8/255 steps=20 step=2/255`` from an attack's settings."""
    if not isinstance(attack, dict):
        return str(attack)
    parts = [str(attack.get("name", "?"))]
    if "norm" in attack:
        parts.append("L-inf" if str(attack["norm"]) == "inf" else f"L{attack['norm']}")
    for name, value in attack.items():
        if name in ("name", "norm") or value in (None, {}, ""):
            continue
        label = {"step_size": "step"}.get(name, name)
        if isinstance(value, float) and name in ("eps", "step_size"):
            scaled = value * 255
            value = f"{round(scaled)}/255" if abs(scaled - round(scaled)) < 1e-6 else f"{value:.6g}"
        parts.append(f"{label}={_readable(name, value)}")
    return " ".join(parts)


@dataclass
class ResultRow:
    """One measured figure: standard accuracy (SA) and robust accuracy (RA) in percent, with the counts they
    come from (so shards can be merged exactly), the wall time of the attack and its settings."""

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
    sa_correct: int = 0
    ra_correct: int | None = None

    @classmethod
    def from_counts(cls, defence: str, threat: str, attack: str, sa_correct: int, ra_correct: int | None, n: int,
                    seconds: float, note: str = "", defence_params: dict | None = None,
                    attack_params: dict | None = None) -> ResultRow:
        """A row from numbers of correctly classified clean and adversarial images out of ``n``."""
        ra = None if ra_correct is None else 100.0 * ra_correct / n
        return cls(defence, threat, attack, 100.0 * sa_correct / n, ra, n, seconds, note, defence_params or {},
                   attack_params or {}, sa_correct, ra_correct)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.defence, self.threat, self.attack)


@dataclass
class ResultTable:
    """Rows of one evaluation plus its settings (``meta``: victim, data, seed, attacks, command)."""

    rows: list[ResultRow] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def add(self, row: ResultRow) -> None:
        """Append a row."""
        self.rows.append(row)

    @classmethod
    def from_json(cls, text: str) -> ResultTable:
        """Inverse of :meth:`to_json`.

        :raises ValueError: ``text`` is not JSON, or not a table's (a ``rows`` list of rows with the fields of
            :class:`ResultRow`, an optional ``meta`` object).
        """
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError("no 'rows' list at the top level")
        if not isinstance(data.get("meta", {}), dict):
            raise ValueError("'meta' is not an object")
        rows = []
        for index, row in enumerate(data["rows"]):
            try:
                rows.append(ResultRow(**row))
            except TypeError as error:  # not a mapping, or missing or unexpected fields
                raise ValueError(f"row {index} is not a result row ({error})") from None
        return cls(rows, data.get("meta", {}))

    @classmethod
    def read(cls, path) -> ResultTable:
        """The table in the JSON file ``path`` (written by ``evaluate --json`` or ``merge --json``).

        :raises ValueError: One line naming the file: missing, unreadable, not JSON (truncated) or not a table.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file.") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not readable: {error}.") from None
        try:
            return cls.from_json(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a results JSON (evaluate --json writes one): not valid JSON, "
                             f"{error} (truncated?).") from None
        except ValueError as error:
            raise ValueError(f"{path} is not a results JSON (evaluate --json writes one): {error}.") from None

    @classmethod
    def merge(cls, tables: list[ResultTable]) -> ResultTable:
        """Combine tables of disjoint sample shards: counts and wall times add up, rows keep their order.

        Every table must hold the same rows (same defences, threat models and attacks).
        """
        if not tables:
            raise ValueError("Nothing to merge.")
        keys = [row.key for row in tables[0].rows]
        for table in tables[1:]:
            if [row.key for row in table.rows] != keys:
                raise ValueError("Tables to merge must hold the same rows (defence, threat, attack) in order.")
            for field_name in ("victim", "seed", "attacks", "data_source", "split"):
                if table.meta.get(field_name) != tables[0].meta.get(field_name):
                    raise ValueError(f"Tables to merge must share their {field_name}.")
        shards = [tuple(t.meta["shard"]) for t in tables if "shard" in t.meta]
        if len(set(shards)) != len(shards):
            raise ValueError(f"A shard is given twice: {sorted(shards)}.")
        meta = {k: v for k, v in tables[0].meta.items() if k not in ("shard", "command")}
        meta.update({"n": sum(t.meta.get("n", 0) for t in tables), "shards": len(tables)})
        if all("images" in t.meta for t in tables):
            first, last = min(t.meta["images"][0] for t in tables), max(t.meta["images"][1] for t in tables)
            meta["images"] = [first, last]
            meta["data"] = describe_data(meta.get("data_source", "?"), first, last, split=meta.get("split", "test"))
        merged = cls(meta=meta)
        labels = [f"shard {t.meta['shard'][0]}" if "shard" in t.meta else f"table {i}" for i, t in enumerate(tables)]
        for rows in zip(*(t.rows for t in tables), strict=True):
            first = rows[0]
            robust = None if first.ra_correct is None else sum(r.ra_correct for r in rows)
            merged.add(ResultRow.from_counts(first.defence, first.threat, first.attack, sum(r.sa_correct for r in rows),
                                             robust, sum(r.n for r in rows), sum(r.seconds for r in rows),
                                             _joined_notes(labels, [r.note for r in rows]), first.defence_params,
                                             _combined_attack_params(list(rows))))
        return merged

    def over_seeds(self) -> ResultTable:
        """The table with the rows of one random defence deployed with several seeds (the same settings but
        ``seed``, the same threat model and attack) collapsed into one row: SA and RA are the means over the seeds,
        the note gives their min..max, the seeds and what each seed's note said (once when they agree). Other rows
        are kept as they are."""
        groups: dict[tuple, list[ResultRow]] = {}
        for row in self.rows:
            params = {k: v for k, v in row.defence_params.items() if k != "seed"}
            key = (_without_seed(row.defence), json.dumps(params, sort_keys=True, default=str), row.threat,
                   row.attack)
            groups.setdefault(key, []).append(row)
        table = ResultTable(meta=dict(self.meta))
        for (name, _, threat, attack), rows in groups.items():
            if len(rows) == 1 or any(r.defence_params.get("seed") is None for r in rows):
                table.rows.extend(rows)
                continue
            seeds = ",".join(str(r.defence_params["seed"]) for r in rows)
            spread = [f"SA {min(r.sa for r in rows):.1f}..{max(r.sa for r in rows):.1f}"]
            robust = None
            if all(r.ra is not None for r in rows):
                robust = sum(r.ra for r in rows) / len(rows)
                spread.append(f"RA {min(r.ra for r in rows):.1f}..{max(r.ra for r in rows):.1f}")
            notes = _joined_notes([f"seed {row.defence_params['seed']}" for row in rows], [row.note for row in rows])
            note = f"mean over deployment seeds {seeds} ({', '.join(spread)})" + (f"; {notes}" if notes else "")
            table.add(ResultRow(name, threat, attack, sum(r.sa for r in rows) / len(rows), robust, rows[0].n,
                                rows[0].seconds, note, {**rows[0].defence_params, "seed": seeds},
                                _combined_attack_params(rows)))
        return table

    def reading(self) -> str | None:
        """One line comparing, per defence, RA under the oblivious attack with RA under the strongest attack that
        went through the defence (``None`` when the table holds no such pair)."""
        order = ("decision", "bpda", "eot", "adaptive")  # later entries are stronger when both are present
        parts = []
        for defence in dict.fromkeys(r.defence for r in self.rows if r.defence != "none"):
            # Single-draw rows only: a test-time protocol's rows (worst, majority) judge otherwise.
            rows = {r.threat: r for r in self.rows
                    if r.defence == defence and r.ra is not None and "protocol" not in r.attack_params}
            attacked = [rows[t] for t in order if t in rows]
            if "oblivious" in rows and attacked:
                worst = min(attacked, key=lambda r: r.ra)
                parts.append(f"{defence} {rows['oblivious'].ra:.1f}% oblivious -> {worst.ra:.1f}% {worst.threat}")
        if not parts:
            return None
        return ("Reading: " + "; ".join(parts) + ". RA under the oblivious attack is no evidence of robustness; "
                "the attack that goes through the defence is the figure to report.")

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["defence", "threat", "attack", "SA %", "RA %", "n", "time s", "note"]
        body = [
            [r.defence, r.threat, r.attack, f"{r.sa:.2f}", "-" if r.ra is None else f"{r.ra:.2f}", str(r.n),
             f"{r.seconds:.1f}", r.note]
            for r in self.rows
        ]
        return header, body

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown table followed by the settings."""
        header, body = self._cells()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        meta = ", ".join(f"{k}={v}" for k, v in self.meta.items())
        return "\n".join(lines) + (f"\n\n{meta}\n" if meta else "\n")

    def to_text(self) -> str:
        """Aligned plain-text table for the terminal."""
        header, body = self._cells()
        widths = [max(len(c) for c in column) for column in zip(header, *body, strict=True)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in body]
        lines += [f"{k}: {_readable(k, v)}" for k, v in self.meta.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """Everything, rows and settings, as JSON (readable back with :meth:`from_json`)."""
        return json.dumps({"meta": self.meta, "rows": [asdict(r) for r in self.rows]}, indent=2, default=str)

    def to_csv(self) -> str:
        """One CSV line per row; parameter dictionaries are JSON-encoded."""
        buffer = io.StringIO()
        names = list(asdict(self.rows[0]).keys()) if self.rows else [f for f in ResultRow.__dataclass_fields__]
        writer = csv.DictWriter(buffer, fieldnames=names)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in asdict(row).items()})
        return buffer.getvalue()

    def render(self, fmt: str = "text") -> str:
        """The table in one of :data:`FORMATS`."""
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
        return {"text": self.to_text, "markdown": self.to_markdown, "json": self.to_json, "csv": self.to_csv}[fmt]()
