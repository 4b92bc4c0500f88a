"""Run threat models against defences and collect one table.

Every axis of a run is data (:class:`~art_purifiers.evaluation.settings.EvaluationSettings`); the threat models
below are presets of :class:`~art_purifiers.evaluation.settings.ThreatModel` (see ``docs/evaluating.md`` for what
each does and does not prove):

* ``clean``: accuracy of the victim, and of victim + defence, on clean images (SA).
* ``oblivious``: adversarial examples crafted on the bare victim, classified through the defence.
* ``transfer``: adversarial examples crafted on another bare classifier (``source``), classified by the victim with
  and without the defence (the black-box setting of IDFR's Table 1).
* ``bpda``: the attack runs on victim + defence with ``gradient="bpda"`` (identity backward).
* ``adaptive``: the attack runs on victim + defence with ``gradient="exact"`` (refused, with a note, for
  defences that are not differentiable).
* ``eot``: for random defences, the attack runs on :class:`~art_purifiers.evaluation.eot.EOTClassifier`
  (gradients and decisions averaged over ``eot_draws`` draws; exact gradient where the defence allows it,
  BPDA otherwise). Deterministic defences are skipped with a note (``eot`` equals ``adaptive``/``bpda``).
* ``decision``: HopSkipJump with ``queries`` model queries per image on victim + defence (on the EOT
  classifier for random defences, whose single-draw decisions would be noise to the attack).

Every row is about the *deployed* classifier (victim + defence as constructed): SA is its accuracy on the clean
images, RA the share of images it classifies correctly both clean and under the threat model's attack (so
RA <= SA, as in AutoAttack's robust accuracy). A random defence's rows are single draws; the settings' protocols
add rows for the majority vote and the worst case over N draws beside them.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn
from tqdm.auto import tqdm

from art_purifiers.deploy import Defence, Deployment
from art_purifiers.devices import resolve_device
from art_purifiers.evaluation.attacks import AttackSpec
from art_purifiers.evaluation.names import THREATS
from art_purifiers.evaluation.norms import within_budget
from art_purifiers.evaluation.protocols import Draws, draw_labels, protocol_correct
from art_purifiers.evaluation.report import ResultRow, ResultTable, _without_seed
from art_purifiers.evaluation.settings import EvaluationSettings, ThreatModel
from art_purifiers.keys import fingerprint

logger = logging.getLogger(__name__)

NO_VICTIM_DEFENCE = "none"


def art_classifier(
    model: nn.Module,
    defences: list | None = None,
    nb_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    device: str | torch.device | None = None,
) -> PyTorchClassifier:
    """An ART ``PyTorchClassifier`` for a model taking ``[0, 1]`` images, optionally with preprocessing defences, on
    ``device`` (``None``: the best available, see :meth:`~art_purifiers.deploy.Deployment.classifier`)."""
    return Deployment(model, list(defences or [])).classifier(nb_classes, input_shape, device=device)


def correct(classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Boolean mask of the correctly classified images."""
    return classifier.predict(x, batch_size=batch_size).argmax(1) == y


def accuracy(classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, batch_size: int = 128) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float(correct(classifier, x, y, batch_size).mean())


class AdversarialCache:
    """Adversarial examples on disk, keyed by a hash of everything that determines them, so a rerun or a
    crashed run resumes instead of recomputing. ``directory=None`` disables caching.

    An entry carries the key it was written for and a sha256 checksum of its content (:func:`entry_checksum`). It
    is checked when loaded (readable, written for this key, content matching its checksum, float32 of the expected
    shape, finite, in ``[0, 1]``, and within the attack's budget when one is given); one that fails (an entry
    edited, swapped, truncated, or written before checksums) is reported with a warning, removed and recomputed.
    """

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def get(self, key: str, x: np.ndarray, budget: tuple[str, float] | None = None) -> tuple[np.ndarray, float] | None:
        """The entry ``key`` for the clean images ``x`` ``(N, C, H, W)``, or ``None`` (absent or rejected).

        :param budget: ``(norm, eps)`` that every adversarial example must respect, or ``None`` (HopSkipJump's
            minimal perturbations are kept whatever their size and judged by the caller).
        """
        path = None if self.directory is None else self.directory / f"{key}.npz"
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                x_adv, seconds = archive["x_adv"], float(archive["seconds"])
                stored = {name: str(archive[name]) if name in archive.files else None for name in ("key", "sha256")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            return self._reject(path, f"unreadable ({type(error).__name__}: {error})")
        if stored["key"] is None or stored["sha256"] is None:
            return self._reject(path, "it has no key and checksum (written by an older version)")
        if stored["key"] != key:
            return self._reject(path, f"it was written for the key {stored['key']}")
        if stored["sha256"] != entry_checksum(key, x_adv, seconds):
            return self._reject(path, "its content does not match its checksum (changed after it was written)")
        problem = _cache_problem(x, x_adv, seconds, budget)
        return self._reject(path, problem) if problem else (x_adv, seconds)

    @staticmethod
    def _reject(path: Path, problem: str) -> None:
        logger.warning("cache entry %s rejected: %s; recomputing it", path, problem)
        path.unlink(missing_ok=True)
        return None

    def put(self, key: str, x_adv: np.ndarray, seconds: float) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f"{key}.tmp.npz"
        np.savez_compressed(tmp, x_adv=x_adv, seconds=np.float64(seconds), key=np.str_(key),
                            sha256=np.str_(entry_checksum(key, x_adv, seconds)))
        tmp.replace(self.directory / f"{key}.npz")


def entry_checksum(key: str, x_adv: np.ndarray, seconds: float) -> str:
    """Hex sha256 of a cache entry: its key, the examples' dtype, shape and bytes, and the attack's wall time."""
    digest = hashlib.sha256(f"{key}|{x_adv.dtype}|{x_adv.shape}|{float(seconds)!r}|".encode())
    digest.update(np.ascontiguousarray(x_adv).tobytes())
    return digest.hexdigest()


def _cache_problem(x: np.ndarray, x_adv: np.ndarray, seconds: float, budget: tuple[str, float] | None) -> str:
    """What is wrong with a cached entry for ``x``, or ``""``."""
    if x_adv.dtype != np.float32 or x_adv.shape != x.shape:
        return f"holds {x_adv.dtype} {x_adv.shape}, expected float32 {x.shape}"
    if not np.isfinite(x_adv).all() or not np.isfinite(seconds) or seconds < 0:
        return "holds non-finite values"
    if x_adv.min() < 0 or x_adv.max() > 1:
        return "holds values outside [0, 1]"
    if budget is not None and not within_budget(x, x_adv, *budget).all():
        return f"holds perturbations beyond the budget (L{budget[0]} eps={budget[1]:.6g})"
    return ""


def _seed_everything(seed: int) -> None:
    # ART's attacks draw from numpy's and torch's global generators; seed both for reproducible rows.
    np.random.seed(seed)  # noqa: NPY002 (ART uses the legacy global generator)
    torch.manual_seed(seed)


def attacked(defence: Defence) -> Defence:
    """The defence as the attacker runs it. A random defence's ``seed`` fixes the *deployment's* draws (what the
    judge sees); the attacker does not know them and draws its own, fresh at every call. So the examples crafted
    against one random defence serve all its deployment seeds, which differ only in the judge's draws."""
    return defence.configured(seed=None) if defence.randomized and "seed" in defence.params else defence


def eot_gradient(defence: Defence) -> str:
    """The gradient mode of the EOT attack on ``defence``: its own, or BPDA when it is not differentiable (a DIP
    defence's ``"full"`` gradient, through its fit, is its own too)."""
    return defence.gradient if defence.differentiable or defence.gradient == "full" else "bpda"


class _Evaluation:
    """State shared by the threat models of one :func:`evaluate` call."""

    def __init__(self, victim: nn.Module, defences: dict[str, Defence], x: np.ndarray, y: np.ndarray,
                 settings: EvaluationSettings, source: nn.Module | None) -> None:
        self.victim, self.defences, self.x, self.y, self.settings = victim, dict(defences), x, y, settings
        self.seed, self.batch_size = settings.seed, settings.batch_size
        self.device = device = resolve_device(settings.device)
        self.verbose, self.eot_draws = settings.verbose, settings.eot_draws
        self.source, self.source_name = source, settings.source_name
        self.source_classifier = None if source is None else Deployment(source).classifier(device=self.device)
        self.cache = AdversarialCache(settings.cache_dir)
        self.crafted_here: dict[str, tuple[np.ndarray, float]] = {}  # shared by the deployment seeds of a defence
        # GPU numerics differ from the CPU's: the device type joins the key, but not on the CPU, so older keys hold.
        self.base_key = (fingerprint(victim), fingerprint(x, y), self.seed,
                         *([device.type] if device.type != "cpu" else []))
        self.deployed = {NO_VICTIM_DEFENCE: Deployment(victim).classifier(device=self.device)}
        self.deployed.update({name: self.classifier(d) for name, d in defences.items()})
        self.clean_correct = {name: correct(c, x, y, self.batch_size) for name, c in self.deployed.items()}
        self.clean_draws: dict[str, Draws] = {}
        self.params = {name: d.describe() for name, d in defences.items()}
        self.params[NO_VICTIM_DEFENCE] = {}

    def classifier(self, defence: Defence, eot: int | None = None) -> PyTorchClassifier:
        deployment = defence.deploy(self.victim)
        if eot is not None:
            deployment = deployment.with_eot(eot, self.settings.draws_per_forward)
        return deployment.classifier(device=self.device)

    def eot_classifier(self, defence: Defence, gradient: str | None = None) -> PyTorchClassifier:
        """The defence averaged over ``eot_draws`` draws, with ``gradient`` (default: its own mode, BPDA when it is
        not differentiable: ``gradient="bpda"`` set on a differentiable defence gives BPDA+EOT)."""
        return self.classifier(attacked(defence).configured(gradient=gradient or eot_gradient(defence)),
                               eot=self.eot_draws)

    def crafted(self, key_parts, make_attack, budget: tuple[str, float] | None) -> tuple[np.ndarray, float]:
        """Adversarial examples and attack wall time, from this run, the cache or by running
        ``make_attack(checkpoint)`` (``checkpoint``: a file for the attack's partial progress, or ``None`` without a
        cache).

        :param budget: ``(norm, eps)`` a cached entry must respect (``None``: no budget, as for HopSkipJump).
        """
        key = fingerprint("adv-v2", *key_parts, *self.base_key)
        if key in self.crafted_here:
            return self.crafted_here[key]
        hit = self.cache.get(key, self.x, budget)
        if hit is not None:
            logger.info("cache hit %s", key)
            self.crafted_here[key] = hit
            return hit
        partial = None if self.cache.directory is None else self.cache.directory / f"{key}.partial.npz"
        _seed_everything(self.seed)
        start = time.perf_counter()
        attack = make_attack(partial)
        x_adv = attack.generate(self.x, self.y).astype(np.float32)
        seconds = time.perf_counter() - start + getattr(attack, "resumed_seconds", 0.0)
        self.cache.put(key, x_adv, seconds)
        if partial is not None:
            partial.unlink(missing_ok=True)
        self.crafted_here[key] = (x_adv, seconds)
        return x_adv, seconds

    def rows(self, defence: str, threat: str, attack: str, x_adv: np.ndarray | None, seconds: float,
             note: str = "", attack_params: dict | None = None) -> list[ResultRow]:
        """The single-draw row, and for a random defence one row per extra protocol of the settings."""
        clean = self.clean_correct[defence]
        robust = None
        if x_adv is not None:
            robust = int((clean & correct(self.deployed[defence], x_adv, self.y, self.batch_size)).sum())
        rows = [ResultRow.from_counts(defence, threat, attack, int(clean.sum()), robust, len(self.x), seconds, note,
                                      self.params[defence], attack_params or {})]
        random = defence != NO_VICTIM_DEFENCE and self.defences[defence].randomized
        if random and (threat == "clean" or x_adv is not None):
            rows += [self.protocol_row(rows[0], protocol, x_adv) for protocol in self.settings.extra_protocols]
        return rows

    def draws(self, defence: str, x: np.ndarray) -> Draws:
        settings = self.settings
        return draw_labels(self.defences[defence], self.victim, x, settings.protocol_draws,
                           settings.draws_per_forward, self.batch_size, self.device)

    def protocol_row(self, single: ResultRow, protocol: str, x_adv: np.ndarray | None) -> ResultRow:
        """``single``'s row under ``protocol`` over ``protocol_draws`` draws: SA counts the images the protocol
        classifies correctly when clean, RA those it classifies correctly both clean and on ``x_adv``."""
        name, n_draws = single.defence, self.settings.protocol_draws
        if name not in self.clean_draws:
            self.clean_draws[name] = self.draws(name, self.x)
        clean = self.clean_draws[name]
        clean_ok = protocol_correct(clean.labels, self.y, protocol)
        per_draw = clean.labels == self.y[None]
        robust = mean_ra = None
        if x_adv is not None:
            adversarial = self.draws(name, x_adv)
            robust = int((clean_ok & protocol_correct(adversarial.labels, self.y, protocol)).sum())
            per_draw = per_draw & (adversarial.labels == self.y[None])
            mean_ra = 100.0 * float(per_draw.mean())
        seeds = "fresh draws" if clean.seeds is None else "seeds " + ",".join(map(str, clean.seeds))
        mean = f"mean single-draw {'RA' if x_adv is not None else 'SA'} {100.0 * float(per_draw.mean()):.1f}%"
        note = f"{protocol} of {n_draws} draws ({seeds}; {clean.draws_per_forward} draws per forward); {mean}"
        label = f"{protocol} of {n_draws}" if single.attack == "-" else f"{single.attack} [{protocol} of {n_draws}]"
        params = {**single.attack_params, "protocol": protocol, "protocol_draws": n_draws,
                  "draws_per_forward": clean.draws_per_forward, "protocol_seeds": clean.seeds,
                  "mean_single_draw_sa": 100.0 * float((clean.labels == self.y[None]).mean()),
                  "mean_single_draw_ra": mean_ra}
        return ResultRow.from_counts(name, single.threat, label, int(clean_ok.sum()), robust, len(self.x),
                                     single.seconds, note, single.defence_params, params)


def evaluate(victim: nn.Module, defences: Mapping[str, Defence], x: np.ndarray, y: np.ndarray,
             settings: EvaluationSettings | None = None, *, source: nn.Module | None = None,
             **keywords) -> ResultTable:
    """Evaluate each defence under each threat model of ``settings`` on ``(x, y)``.

    :param victim: Classifier taking ``(N, 3, H, W)`` images in ``[0, 1]`` and returning logits.
    :param defences: ``{row name: defence}``; the bare victim is always reported too (as ``"none"``).
    :param x: Images, float32 ``(N, 3, H, W)`` in ``[0, 1]``.
    :param y: Integer labels ``(N,)``.
    :param settings: Every axis of the run (default: :class:`~art_purifiers.evaluation.settings.EvaluationSettings`,
        clean and oblivious AutoAttack, L-inf 8/255).
    :param source: The classifier threat models crafted on ``source`` (``transfer``) attack (images in ``[0, 1]``
        to logits).
    :param keywords: The older keyword form, instead of ``settings``: ``threats`` (preset names), ``attack`` (an
        :class:`AttackSpec` or several), ``seed``, ``batch_size``, ``device``, ``cache_dir``, ``victim_name``,
        ``verbose``, ``eot_draws``, ``queries``, ``source_name``.
    :return: A :class:`~art_purifiers.evaluation.report.ResultTable`. SA is the clean accuracy of the
        deployed classifier, RA its accuracy on the threat model's adversarial examples.
    """
    if keywords and settings is not None:
        raise ValueError(f"give evaluate either settings or the keywords {sorted(keywords)}, not both.")
    settings = settings_from_keywords(**keywords) if settings is None else settings
    if not isinstance(settings, EvaluationSettings):
        raise ValueError(f"settings must be an EvaluationSettings, got {type(settings).__name__}.")
    if NO_VICTIM_DEFENCE in defences:
        raise ValueError(f"{NO_VICTIM_DEFENCE!r} names the bare victim; give the defence another name.")
    if settings.crafts_on("source") and source is None:
        raise ValueError("The transfer threat model needs a source classifier to craft its examples on.")
    defences = deployed_with_seeds(defences, settings.deployment_seeds)
    run = _Evaluation(victim, defences, x.astype(np.float32), np.asarray(y, dtype=np.int64), settings, source)
    table = ResultTable(meta=_meta(settings, defences, len(x)))
    jobs = [(threat, spec, name) for threat in settings.threats for spec in _attacks_of(threat, settings)
            for name in ([None] if not threat.attacks_defence else list(defences))]
    # Counted in attacked images, so the bar gives images per second and the time left over the whole run.
    attacked_jobs = [job for job in jobs if job[0].crafted_on != "none"]
    with tqdm(total=len(attacked_jobs) * len(x), desc="attacked images", unit="img",
              disable=not settings.verbose or not attacked_jobs) as bar:
        for threat, spec, name in jobs:
            if threat.crafted_on == "none":
                for deployed in run.deployed:
                    table.rows.extend(run.rows(deployed, threat.name, "-", None, 0.0))
                continue
            bar.set_postfix_str(f"{threat.name} {spec.label()}" + ("" if name is None else f" on {name}"))
            table.rows.extend(_CRAFTED_ON[threat.crafted_on](run, threat, spec, name))
            bar.update(len(x))
    return table


def settings_from_keywords(threats: Sequence[str] = ("clean", "oblivious"),
                           attack: AttackSpec | Sequence[AttackSpec] | None = None, **keywords) -> EvaluationSettings:
    """The settings of :func:`evaluate`'s older keyword form: threat models named by preset, in the order of
    :data:`THREATS` whatever the order given."""
    unknown = sorted(set(threats) - set(THREATS))
    if unknown:
        raise ValueError(f"Unknown threat models {unknown}; choose from {THREATS}.")
    ordered = tuple(name for name in THREATS if name in threats)
    return EvaluationSettings(threats=ordered, attacks=AttackSpec() if attack is None else attack, **keywords)


def deployed_with_seeds(defences: Mapping[str, Defence], seeds: Sequence[int] | None) -> dict[str, Defence]:
    """``defences`` with every random one (that has a ``seed``) deployed with each of ``seeds``, as rows
    ``NAME:seed=S`` (``dir:ratio=0.3`` -> ``dir:ratio=0.3,seed=S``); ``seeds=None`` leaves them as given."""
    if seeds is None:
        return dict(defences)
    expanded = {}
    for name, defence in defences.items():
        if not (defence.randomized and "seed" in defence.settable()):
            expanded[name] = defence
            continue
        base = _without_seed(name)
        for seed in seeds:
            expanded[f"{base}{',' if ':' in base else ':'}seed={seed}"] = defence.configured(seed=seed)
    if NO_VICTIM_DEFENCE in expanded or len(expanded) < len(defences):
        raise ValueError("Deployment seeds gave two defences the same row name; name the defences apart.")
    return expanded


def _meta(settings: EvaluationSettings, defences: Mapping[str, Defence], n: int) -> dict:
    """The table's settings: the same keys as before the axes were data, and the new axes where they are used."""
    meta = {"victim": settings.victim_name, "n": n, "seed": settings.seed,
            **({"source": settings.source_name} if settings.crafts_on("source") else {}),
            "attacks": [s.settings() for s in settings.attacks],
            "defences": {name: d.fingerprint() for name, d in defences.items()}}
    custom = [t for t in settings.threats if t.key_parts() != (t.name,)]
    if custom:
        meta["threat_models"] = {t.name: {"crafted_on": t.crafted_on, "gradient": t.gradient, "eot": t.eot}
                                 for t in custom}
    if settings.extra_protocols:
        meta.update({"protocols": list(settings.protocols), "protocol_draws": settings.protocol_draws})
    if settings.deployment_seeds is not None:
        meta["deployment_seeds"] = list(settings.deployment_seeds)
    if settings.data is not None:
        meta.update(settings.data.meta(n))
    return meta


def _attacks_of(threat: ThreatModel, settings: EvaluationSettings) -> list[AttackSpec | None]:
    """The attacks a threat model runs: none for clean images; HopSkipJump once per distinct budget for a
    ``labels`` threat model (a HopSkipJump spec given for that budget, else one with the settings' ``queries``);
    the settings' attacks otherwise."""
    if threat.crafted_on == "none":
        return [None]
    if threat.gradient != "labels":
        return list(settings.attacks)
    given = {(s.norm, s.eps): s for s in settings.attacks if s.name == "hopskipjump"}
    budgets = dict.fromkeys((s.norm, s.eps) for s in settings.attacks)
    return [given.get(b) or AttackSpec("hopskipjump", norm=b[0], eps=b[1], queries=settings.queries) for b in budgets]


def _crafted_once(run: _Evaluation, threat: ThreatModel, spec: AttackSpec, _: None) -> list[ResultRow]:
    """Examples crafted once, on the bare victim or the transfer source, judged through every deployed classifier."""
    on_source = threat.crafted_on == "source"
    target = run.source_classifier if on_source else run.deployed[NO_VICTIM_DEFENCE]
    key = (*threat.key_parts(), spec.settings(), *([run.source] if on_source else []))
    x_adv, seconds = run.crafted(key, lambda partial: spec.build(target, run.batch_size, run.verbose, run.seed,
                                                                 partial), spec.budget())
    where = f"adv. crafted on the bare {run.source_name}" if on_source else "adv. crafted on the bare victim"
    return [row for name in run.deployed
            for row in run.rows(name, threat.name, spec.label(), x_adv, seconds,
                                where if on_source or name != NO_VICTIM_DEFENCE else "", spec.settings())]


def _crafted_on_defence(run: _Evaluation, threat: ThreatModel, spec: AttackSpec, name: str) -> list[ResultRow]:
    """Examples crafted on victim + defence ``name`` with the threat model's gradient (and EOT)."""
    defence = run.defences[name]
    if threat.gradient == "labels":
        return _decision(run, threat, spec, name)
    gradient = eot_gradient(defence) if threat.gradient == "own" else threat.gradient
    if threat.eot and not defence.randomized:
        return run.rows(name, threat.name, spec.label(), None, 0.0, "deterministic defence: eot equals adaptive/bpda")
    if gradient == "exact" and not defence.differentiable:
        return run.rows(name, threat.name, spec.label(), None, 0.0, "refused: defence is not differentiable")
    copy = attacked(defence)  # one deep copy (weights included), used for the attack and its cache key
    draws = run.eot_draws if threat.eot else None
    target = run.classifier(copy.configured(gradient=gradient), eot=draws)
    key = (*threat.key_parts(), spec.settings(), copy, *([draws] if threat.eot else []))
    x_adv, seconds = run.crafted(key, lambda partial: spec.build(target, run.batch_size, run.verbose, run.seed,
                                                                 partial), spec.budget())
    if not threat.eot:
        note = "random defence: single-draw gradients, see eot" if defence.randomized else ""
        return run.rows(name, threat.name, spec.label(), x_adv, seconds, note, spec.settings())
    return run.rows(name, threat.name, f"{spec.label()} eot={draws}", x_adv, seconds,
                    f"gradients and decisions averaged over {draws} draws ({gradient})",
                    {**spec.settings(), "eot_draws": draws, "gradient": gradient})


def _decision(run: _Evaluation, threat: ThreatModel, spec: AttackSpec, name: str) -> list[ResultRow]:
    """HopSkipJump on the deployed defence's labels (its EOT classifier for a random defence under ``eot``)."""
    defence = run.defences[name]
    eot = defence.randomized and threat.eot
    target = run.eot_classifier(defence) if eot else run.classifier(defence)
    # The examples depend on the norm and the queries, not on eps: rows that differ only in eps share one run.
    key = ("decision-v2", spec.norm, spec.queries, attacked(defence), eot and run.eot_draws,
           *([spec.extra] if spec.extra else []), *([] if threat.key_parts() == (threat.name,) else
                                                    [threat.key_parts()]))
    x_adv, seconds = run.crafted(key, lambda partial: spec.hopskipjump(target, run.batch_size, run.verbose, run.seed,
                                                                       partial), None)
    # HopSkipJump minimises the perturbation without a budget: keep only what lies within eps.
    kept = within_budget(run.x, x_adv, spec.norm, spec.eps)
    x_adv = np.where(kept[:, None, None, None], x_adv, run.x).astype(np.float32)
    note = f"on EOT classifier ({run.eot_draws} draws)" if eot else ""
    params = {**spec.hopskipjump(target, seed=run.seed).params, "norm": spec.norm, "eps": spec.eps}
    return run.rows(name, threat.name, spec.label(), x_adv, seconds, note, params)


_CRAFTED_ON = {"victim": _crafted_once, "source": _crafted_once, "defence": _crafted_on_defence}
