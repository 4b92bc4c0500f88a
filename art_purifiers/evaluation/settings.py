"""The axes of an evaluation as data: what the attack was crafted on, which gradient it sees, how many EOT draws it
averages, how a random defence answers at test time, which deployment seeds, attacks and images.

:class:`ThreatModel` names one attack scenario by its axes; the threat models users know (``clean``, ``oblivious``,
``transfer``, ``bpda``, ``adaptive``, ``eot``, ``decision``) are presets of it (:data:`PRESETS`, :func:`threat_model`).
:class:`EvaluationSettings` holds the threat models and every other axis of one
:func:`~art_purifiers.evaluation.runner.evaluate` call; :func:`preset` builds it from threat names, as the command
line does. Both are frozen and checked when built: a bad value is a one-line ``ValueError``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from art_purifiers.base import MAX_SEED
from art_purifiers.checks import check_choice, check_integer
from art_purifiers.deploy import GRADIENT_MODES
from art_purifiers.devices import resolve_device
from art_purifiers.evaluation.attacks import AttackSpec
from art_purifiers.evaluation.names import CRAFTED_ON, PROTOCOLS, THREATS

#: The gradient a threat model's attack gets through the defence: ``exact`` or ``bpda`` (a copy of the defence in
#: that mode), ``own`` (the defence's own mode, BPDA where it is not differentiable), ``labels`` (none: HopSkipJump
#: on the predicted labels). ``None`` where no defence is in the attack's loop (clean, oblivious, transfer).
THREAT_GRADIENTS = (*GRADIENT_MODES, "own", "labels")


@dataclass(frozen=True)
class ThreatModel:
    """One attack scenario, by its axes.

    :param name: The row's ``threat`` column (a preset's name, or one of your own).
    :param crafted_on: Where the adversarial examples are crafted: ``none`` (no attack: clean images), ``victim``
        (the bare victim, then judged through every defence), ``source`` (a transfer source classifier) or
        ``defence`` (victim + each defence, once per defence).
    :param gradient: One of :data:`THREAT_GRADIENTS` for ``crafted_on="defence"``; ``None`` otherwise.
    :param eot: Attack a random defence through :class:`~art_purifiers.deploy.EOTClassifier` (the settings'
        ``eot_draws``). A gradient threat model with ``eot`` skips deterministic defences, with a note.
    """

    name: str
    crafted_on: str
    gradient: str | None = None
    eot: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a threat model's name must be a non-empty string, got {self.name!r}.")
        check_choice("crafted_on", self.crafted_on, CRAFTED_ON)
        if self.crafted_on == "defence":
            check_choice("gradient", self.gradient, THREAT_GRADIENTS)
        elif self.gradient is not None:
            raise ValueError(f"gradient applies to attacks crafted on the defence; crafted_on={self.crafted_on!r} "
                             f"takes gradient=None, got {self.gradient!r}.")
        if not isinstance(self.eot, bool):
            raise ValueError(f"eot must be True or False, got {self.eot!r}.")
        if self.eot and self.crafted_on != "defence":
            raise ValueError(f"eot applies to attacks crafted on the defence, not crafted_on={self.crafted_on!r}.")

    @property
    def attacks_defence(self) -> bool:
        """Whether the attack runs once per defence (on victim + defence)."""
        return self.crafted_on == "defence"

    def key_parts(self) -> tuple:
        """What names the threat model in cache keys: the name alone for a preset (so keys stay as they were before
        the axes were data), the name and every axis for a threat model of your own."""
        return (self.name,) if PRESETS.get(self.name) == self else (self.name, asdict(self))


#: The threat models users know, as axes (``docs/evaluating.md`` says what each shows).
PRESETS: dict[str, ThreatModel] = {
    "clean": ThreatModel("clean", "none"),
    "oblivious": ThreatModel("oblivious", "victim"),
    "transfer": ThreatModel("transfer", "source"),
    "bpda": ThreatModel("bpda", "defence", "bpda"),
    "adaptive": ThreatModel("adaptive", "defence", "exact"),
    "eot": ThreatModel("eot", "defence", "own", eot=True),
    "decision": ThreatModel("decision", "defence", "labels", eot=True),
}
assert tuple(PRESETS) == THREATS  # noqa: S101 (names.py lists them for the command line, in row order)


def threat_model(base: str, /, **axes) -> ThreatModel:
    """The preset ``base`` with some axes changed, e.g. ``threat_model("eot", gradient="bpda")`` (BPDA+EOT; give it
    ``name="eot-bpda"`` to report it beside the preset).

    :raises ValueError: ``base`` is no preset, or an axis is unknown or bad.
    """
    if base not in PRESETS:
        raise ValueError(f"Unknown threat models [{base!r}]; choose from {THREATS}.")
    unknown = sorted(set(axes) - {f.name for f in fields(ThreatModel)})
    if unknown:
        raise ValueError(f"ThreatModel has no axis {unknown}; its axes: name, crafted_on, gradient, eot.")
    return replace(PRESETS[base], **axes)


@dataclass(frozen=True)
class DataSlice:
    """Which images an evaluation ran on, recorded in the table's metadata.

    :param source: Where they come from (a data folder, or ``"bundled sample"``).
    :param split: ``"test"`` or ``"train"``.
    :param first: Index of the first image in the split; the images are ``first .. first + n - 1``.
    :param shard: ``(index, count)`` of the shard this run evaluates.
    """

    source: str
    split: str = "test"
    first: int = 0
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"data source must be a non-empty string, got {self.source!r}.")
        check_choice("split", self.split, ("test", "train"))
        check_integer("first image", self.first, minimum=0)
        if (not isinstance(self.shard, tuple) or len(self.shard) != 2
                or not 0 <= check_integer("shard index", self.shard[0], minimum=0)
                < check_integer("shard count", self.shard[1], minimum=1)):
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {self.shard!r}.")

    def meta(self, n: int) -> dict:
        """The table's data fields for ``n`` images."""
        from art_purifiers.evaluation.report import describe_data

        last = self.first + n - 1
        return {"data_source": self.source, "split": self.split, "images": [self.first, last],
                "shard": list(self.shard), "data": describe_data(self.source, self.first, last, self.shard, self.split)}


@dataclass(frozen=True)
class EvaluationSettings:
    """Every axis of one :func:`~art_purifiers.evaluation.runner.evaluate` call.

    :param threats: Threat models (:class:`ThreatModel` or preset names), rows in this order.
    :param attacks: The attacks of every threat model that crafts examples, one row each (default: AutoAttack,
        L-inf 8/255). A ``labels`` threat model (``decision``) runs HopSkipJump at each distinct budget instead.
    :param eot_draws: Draws the EOT classifier averages (threat models with ``eot``), ``>= 1``.
    :param queries: HopSkipJump's queries per image where the settings make its spec (``decision``), ``>= 1``.
    :param protocols: How a random defence answers at test time, beside today's single draw: ``"majority"``
        (plurality vote of ``protocol_draws`` draws; a tie counts as wrong) and ``"worst"`` (robust only if every
        draw is correct). ``"single"`` (the rows as always) may be listed; it is always reported.
    :param protocol_draws: ``N``, the draws of the protocols, ``>= 2``.
    :param draws_per_forward: Draws batched into one forward, for EOT and the protocols (``None``: all of them;
        lower it when ``draws x batch`` images do not fit in memory).
    :param deployment_seeds: Deploy every random defence with each of these seeds (rows ``NAME:seed=S``); ``None``
        keeps the defences' own seeds. The attacks run once per defence, whatever the seeds.
    :param seed: Seed of numpy and torch before every attack, ``>= 0``.
    :param batch_size: Images per batch of the attacks and predictions, ``>= 1``.
    :param device: Where the victim and the defences run: ``None`` (the best available: the current CUDA device
        when torch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`art_purifiers.devices`).
    :param cache_dir: Folder of the adversarial-example cache, or ``None``.
    :param verbose: Progress bars.
    :param victim_name: The victim's name in the table.
    :param source_name: The transfer source's name in the notes and the table.
    :param data: The images' provenance, recorded in the table (``None``: not recorded).
    """

    threats: tuple[ThreatModel, ...] = (PRESETS["clean"], PRESETS["oblivious"])
    attacks: tuple[AttackSpec, ...] = (AttackSpec(),)
    eot_draws: int = 8
    queries: int = 1000
    protocols: tuple[str, ...] = ("single",)
    protocol_draws: int = 16
    draws_per_forward: int | None = None
    deployment_seeds: tuple[int, ...] | None = None
    seed: int = 0
    batch_size: int = 128
    device: str | None = None
    cache_dir: str | Path | None = None
    verbose: bool = False
    victim_name: str = "victim"
    source_name: str = "source"
    data: DataSlice | None = field(default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the checked values replace the given ones once, here
        set_(self, "threats", _threat_models(self.threats))
        set_(self, "attacks", _attacks(self.attacks))
        for name, minimum in (("eot_draws", 1), ("queries", 1), ("protocol_draws", 2), ("batch_size", 1),
                              ("seed", 0)):
            set_(self, name, check_integer(name, getattr(self, name), minimum=minimum))
        if self.draws_per_forward is not None:
            set_(self, "draws_per_forward", check_integer("draws_per_forward", self.draws_per_forward, minimum=1))
        set_(self, "protocols", _protocols(self.protocols))
        if self.deployment_seeds is not None:
            seeds = _sequence("deployment_seeds", self.deployment_seeds)
            seeds = tuple(check_integer("deployment seed", s, minimum=0, maximum=MAX_SEED) for s in seeds)
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"deployment_seeds must be distinct seeds, at least one, got {seeds!r}.")
            set_(self, "deployment_seeds", seeds)
        if self.device is not None:
            set_(self, "device", str(resolve_device(self.device)))  # checked; a torch.device is welcome too
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ValueError(f"cache_dir must be a folder path or None, got {self.cache_dir!r}.")
        for name in ("victim_name", "source_name"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}.")
        if not isinstance(self.verbose, bool):
            raise ValueError(f"verbose must be True or False, got {self.verbose!r}.")
        if self.data is not None and not isinstance(self.data, DataSlice):
            raise ValueError(f"data must be a DataSlice or None, got {self.data!r}.")

    @property
    def extra_protocols(self) -> tuple[str, ...]:
        """The protocols reported beside the single draw."""
        return tuple(p for p in self.protocols if p != "single")

    def crafts_on(self, place: str) -> bool:
        """Whether a threat model crafts its examples on ``place`` (one of :data:`CRAFTED_ON`)."""
        return any(t.crafted_on == place for t in self.threats)


def _sequence(name: str, value) -> tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a sequence, got {value!r}.")
    return tuple(value)


def _threat_models(threats) -> tuple[ThreatModel, ...]:
    models = []
    for threat in _sequence("threats", threats):
        if isinstance(threat, str):
            threat = threat_model(threat)
        if not isinstance(threat, ThreatModel):
            raise ValueError(f"threats holds ThreatModel objects or preset names {THREATS}, got {threat!r}.")
        models.append(threat)
    names = [t.name for t in models]
    if len(set(names)) != len(names):
        raise ValueError(f"threat model names must be distinct (they label the rows), got {names}.")
    return tuple(models)


def _attacks(attacks) -> tuple[AttackSpec, ...]:
    specs = (attacks,) if isinstance(attacks, AttackSpec) else _sequence("attacks", attacks)
    if not specs or not all(isinstance(s, AttackSpec) for s in specs):
        raise ValueError(f"attacks must be one or more AttackSpec objects, got {attacks!r}.")
    return specs


def _protocols(protocols) -> tuple[str, ...]:
    names = (protocols,) if isinstance(protocols, str) else _sequence("protocols", protocols)
    for name in names:
        check_choice("protocol", name, PROTOCOLS)
    return tuple(dict.fromkeys(("single", *names)))


def preset(*threats: str, **overrides) -> EvaluationSettings:
    """Settings for the named threat models (default: ``clean`` and ``oblivious``), e.g.
    ``preset("clean", "eot", eot_draws=16, gradient="bpda", protocols=("worst",))``.

    :param overrides: Fields of :class:`EvaluationSettings`, and axes of :class:`ThreatModel` (``crafted_on``,
        ``gradient``, ``eot``), which change every named threat model that attacks the defence.
    :raises ValueError: An unknown name, field or axis, or a bad value.
    """
    axes = {k: overrides.pop(k) for k in ("crafted_on", "gradient", "eot") if k in overrides}
    unknown = sorted(set(overrides) - {f.name for f in fields(EvaluationSettings)} - {"threats"})
    if unknown:
        raise ValueError(f"EvaluationSettings has no field {unknown}.")
    if "threats" in overrides:
        raise ValueError("give the threat models as preset's positional arguments, not threats=.")
    names = threats or ("clean", "oblivious")
    models = tuple(threat_model(name, **(axes if PRESETS.get(name, PRESETS["eot"]).attacks_defence else {}))
                   for name in names)
    return EvaluationSettings(threats=models, **overrides)
