"""The defences and their parameters as plain text (``art-purifiers defences``), read from the classes themselves:
names and defaults from the constructors' signatures, descriptions (and the ranges they state) from the docstrings'
``:param NAME:`` lines, so the listing cannot drift from the code."""

from __future__ import annotations

import inspect
import re

#: Constructor arguments of ART's switches, not settings of the purification, listed apart.
_SWITCHES = ("device_type", "apply_fit", "apply_predict")


def plain(text: str) -> str:
    """reStructuredText roles and literals as plain text: ``x`` -> x, :class:`~a.b.C` -> C, :data:`X` -> X."""
    text = re.sub(r":\w+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1),
                  text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return " ".join(text.split())


def parameter_docs(cls) -> dict[str, str]:
    """``{name: description}`` from the ``:param NAME: text`` lines of ``cls``'s docstring (continuations joined)."""
    docs: dict[str, str] = {}
    current = None
    for line in (inspect.getdoc(cls) or "").splitlines():
        match = re.match(r":param (\w+):\s*(.*)", line.strip())
        if match:
            current = match.group(1)
            docs[current] = match.group(2)
        elif current and line.startswith(" ") and line.strip():
            docs[current] += " " + line.strip()
        else:
            current = None
    return {name: plain(text) for name, text in docs.items()}


def summary(cls) -> str:
    """The first sentence of ``cls``'s docstring, as plain text."""
    first = plain((inspect.getdoc(cls) or "").split("\n\n")[0])
    return first if len(first) < 200 else first[:197] + "..."


def parameters(cls) -> list[tuple[str, str, str]]:
    """``(name, default, description)`` of the named constructor arguments of ``cls`` (``**kwargs`` excluded)."""
    docs = parameter_docs(cls)
    rows = []
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        default = "required" if parameter.default is inspect.Parameter.empty else repr(parameter.default)
        rows.append((name, default, docs.get(name, "")))
    return rows


def _block(rows: list[tuple[str, str, str]], indent: str = "    ", widest: int = 28) -> list[str]:
    """Aligned ``name=default  description`` lines; an entry wider than ``widest`` puts its description below."""
    entries = [(f"{name}={default}", text) for name, default, text in rows]
    width = max((len(entry) for entry, _ in entries if len(entry) <= widest), default=0)
    lines = []
    for entry, text in entries:
        if len(entry) > widest:
            lines += [f"{indent}{entry}", f"{indent}{'':<{width}}  {text}".rstrip()]
        else:
            lines.append(f"{indent}{entry:<{width}}  {text}".rstrip())
    return lines


def catalogue() -> str:
    """Every registered defence with its parameters, defaults and descriptions; the shared options of the input
    purifiers; ART's preprocessors. Plain text for the terminal."""
    from art_purifiers.base import PurifierPreprocessor
    from art_purifiers.defences import ART_DEFENCES, DEFENCES, ARTPreprocessor

    lines = ["Defences for --defence NAME[:key=value,...] (e.g. --defence irad:sampler=none), or in Python the "
             "classes named below. Values are Python literals. On the command line, dip's classifier is the "
             "victim.", ""]
    for name, factory in DEFENCES.items():
        lines.append(f"{name}  ({factory.__name__}): {summary(factory)}")
        lines += _block(parameters(factory))
        if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory.__init__).parameters.values()):
            lines.append("    ...and the shared options below.")
        lines.append("")
    shared = [row for row in parameters(PurifierPreprocessor) if row[0] not in _SWITCHES]
    lines.append("Shared options of every defence above (a defence may set other defaults, as its own text says):")
    lines += _block(shared)
    lines.append("")
    lines.append(f"art:CLASS[:key=value,...]  ({ARTPreprocessor.__name__}): {summary(ARTPreprocessor)} CLASS is one "
                 f"of {', '.join(ART_DEFENCES)}; key=value pairs are the ART class's own arguments (e.g. "
                 "art:JpegCompression:quality=75) or the shared options.")
    return "\n".join(lines) + "\n"


def _object_role(obj) -> str:
    """A MyST cross-reference to a class or function (plain text inside a table cell)."""
    role = "class" if inspect.isclass(obj) else "func"
    return f"{{{role}}}`~{obj.__module__}.{obj.__qualname__}`"


def methods_markdown() -> str:
    """The methods table of the docs (MyST Markdown) and a toctree of the methods' pages, from the registry: each
    method's ``--defence`` class and first sentence, its trainer's presets, its shipped weight files and its page.
    Imports every adapter and trainer."""
    from art_purifiers.methods import registered_methods
    from art_purifiers.weights import registry

    shipped: dict[str, list[str]] = {}
    for file, entry in registry().items():
        shipped.setdefault(entry["method"], []).append(f"`{file}`")
    lines = ["| method | adapter (`--defence`) | `train` presets | shipped weights | page |", "|---|---|---|---|---|"]
    pages: list[str] = []
    for name, method in registered_methods().items():
        adapter = "" if method.adapter is None else method.load_adapter()
        described = f"{_object_role(adapter)}: {summary(adapter)}".replace("|", "\\|") if adapter else "(trains only)"
        presets = ", ".join(method.load_trainer().presets) if method.trainer is not None else ""
        page = f"{{doc}}`/{method.docs}`" if method.docs else ""
        lines.append(f"| `{name}` | {described} | {presets} | {', '.join(shipped.get(name, []))} | {page} |")
        if method.docs and method.docs not in pages:
            pages.append(method.docs)
    toctree = ["", "```{toctree}", ":maxdepth: 2", ":hidden:", "", *pages, "```"]
    return "\n".join(lines + toctree) + "\n"
