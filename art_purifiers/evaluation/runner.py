"""Run threat models against defences and collect one table.

Threat models (see ``docs/evaluating.md`` for what each does and does not prove):

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
RA <= SA, as in AutoAttack's robust accuracy).
"""

from __future__ import annotations

import functools
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
from art_purifiers.evaluation.decision import BudgetedHopSkipJump
from art_purifiers.evaluation.names import THREATS
from art_purifiers.evaluation.norms import within_budget
from art_purifiers.evaluation.report import ResultRow, ResultTable
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
    """The gradient mode of the EOT attack on ``defence``: its own, or BPDA when it is not differentiable."""
    return defence.gradient if defence.differentiable else "bpda"


class _Evaluation:
    """State shared by the threat models of one :func:`evaluate` call."""

    def __init__(self, victim, defences, x, y, seed, batch_size, device, cache_dir, verbose, eot_draws, queries,
                 source=None, source_name="source"):
        device = resolve_device(device)
        self.victim, self.defences, self.x, self.y = victim, dict(defences), x, y
        self.source, self.source_name = source, source_name
        self.source_classifier = None if source is None else Deployment(source).classifier(device=device)
        self.seed, self.batch_size, self.device, self.verbose = seed, batch_size, device, verbose
        self.eot_draws, self.queries = eot_draws, queries
        self.cache = AdversarialCache(cache_dir)
        # GPU numerics differ from the CPU's: the device type joins the key, but not on the CPU, so older keys hold.
        self.base_key = (fingerprint(victim), fingerprint(x, y), seed, *([device.type] if device.type != "cpu" else []))
        self.deployed = {NO_VICTIM_DEFENCE: Deployment(victim).classifier(device=device)}
        self.deployed.update({name: self.classifier(d) for name, d in defences.items()})
        self.clean_correct = {name: correct(c, x, y, batch_size) for name, c in self.deployed.items()}
        self.params = {name: d.describe() for name, d in defences.items()}
        self.params[NO_VICTIM_DEFENCE] = {}

    def classifier(self, defence: Defence, eot: int | None = None) -> PyTorchClassifier:
        return defence.deploy(self.victim, eot=eot).classifier(device=self.device)

    def eot_classifier(self, defence: Defence) -> PyTorchClassifier:
        """The defence averaged over ``eot_draws`` draws, with its own gradient mode (``gradient="bpda"`` set on a
        differentiable defence gives BPDA+EOT), BPDA for one that is not differentiable."""
        return self.classifier(attacked(defence).configured(gradient=eot_gradient(defence)), eot=self.eot_draws)

    def crafted(self, key_parts, make_attack, budget: tuple[str, float] | None) -> tuple[np.ndarray, float]:
        """Adversarial examples and attack wall time, from the cache or by running ``make_attack(checkpoint)``
        (``checkpoint``: a file for the attack's partial progress, or ``None`` without a cache).

        :param budget: ``(norm, eps)`` a cached entry must respect (``None``: no budget, as for HopSkipJump).
        """
        key = fingerprint("adv-v2", *key_parts, *self.base_key)
        hit = self.cache.get(key, self.x, budget)
        if hit is not None:
            logger.info("cache hit %s", key)
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
        return x_adv, seconds

    def row(self, defence: str, threat: str, attack: str, x_adv: np.ndarray | None, seconds: float,
            note: str = "", attack_params: dict | None = None) -> ResultRow:
        clean = self.clean_correct[defence]
        robust = None
        if x_adv is not None:
            robust = int((clean & correct(self.deployed[defence], x_adv, self.y, self.batch_size)).sum())
        return ResultRow.from_counts(defence, threat, attack, int(clean.sum()), robust, len(self.x), seconds, note,
                                     self.params[defence], attack_params or {})


def evaluate(
    victim: nn.Module,
    defences: Mapping[str, Defence],
    x: np.ndarray,
    y: np.ndarray,
    threats: Sequence[str] = ("clean", "oblivious"),
    attack: AttackSpec | Sequence[AttackSpec] | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    victim_name: str = "victim",
    verbose: bool = False,
    eot_draws: int = 8,
    queries: int = 1000,
    source: nn.Module | None = None,
    source_name: str = "source",
) -> ResultTable:
    """Evaluate each defence under each threat model on ``(x, y)``.

    :param victim: Classifier taking ``(N, 3, H, W)`` images in ``[0, 1]`` and returning logits.
    :param defences: ``{row name: defence}``; the bare victim is always reported too (as ``"none"``).
    :param x: Images, float32 ``(N, 3, H, W)`` in ``[0, 1]``.
    :param y: Integer labels ``(N,)``.
    :param threats: Subset of :data:`THREATS`.
    :param attack: The attack(s) of every gradient threat model, one row each (default: AutoAttack, Linf
        8/255). ``decision`` uses HopSkipJump with each attack's norm and eps.
    :param seed: Seed of numpy/torch before every attack.
    :param device: Where the victim and the defences run: ``None`` (the best available: the current CUDA device when
        torch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    :param cache_dir: Folder of the adversarial-example cache, or ``None``.
    :param eot_draws: Draws averaged by the ``eot`` threat model (and ``decision`` on random defences).
    :param queries: HopSkipJump's query budget per image (``decision``).
    :param source: The classifier ``transfer`` crafts its examples on (images in ``[0, 1]`` to logits).
    :param source_name: Its name in the rows' notes and the table's settings.
    :return: A :class:`~art_purifiers.evaluation.report.ResultTable`. SA is the clean accuracy of the
        deployed classifier, RA its accuracy on the threat model's adversarial examples.
    """
    unknown = set(threats) - set(THREATS)
    if unknown:
        raise ValueError(f"Unknown threat models {sorted(unknown)}; choose from {THREATS}.")
    if NO_VICTIM_DEFENCE in defences:
        raise ValueError(f"{NO_VICTIM_DEFENCE!r} names the bare victim; give the defence another name.")
    if "transfer" in threats and source is None:
        raise ValueError("The transfer threat model needs a source classifier to craft its examples on.")
    specs = [AttackSpec()] if attack is None else [attack] if isinstance(attack, AttackSpec) else list(attack)
    run = _Evaluation(victim, defences, x.astype(np.float32), np.asarray(y, dtype=np.int64), seed, batch_size, device,
                      cache_dir, verbose, eot_draws, queries, source, source_name)
    table = ResultTable(meta={"victim": victim_name, "n": len(x), "seed": seed,
                              **({"source": source_name} if "transfer" in threats else {}),
                              "attacks": [s.settings() for s in specs],
                              "defences": {name: d.fingerprint() for name, d in defences.items()}})
    if "clean" in threats:
        for name in run.deployed:
            table.add(run.row(name, "clean", "-", None, 0.0))
    # HopSkipJump depends only on the norm and eps, not on the gradient attack: one decision row per budget.
    budgets = list({(s.norm, s.eps): s for s in specs}.values())
    jobs = [(threat, spec, name) for threat in THREATS if threat in threats and threat != "clean"
            for spec in (budgets if threat == "decision" else specs)
            for name in ([None] if threat in ("oblivious", "transfer") else list(defences))]
    # Counted in attacked images, so the bar gives images per second and the time left over the whole run.
    with tqdm(total=len(jobs) * len(x), desc="attacked images", unit="img", disable=not verbose or not jobs) as bar:
        for threat, spec, name in jobs:
            bar.set_postfix_str(f"{threat} {spec.label()}" + ("" if name is None else f" on {name}"))
            table.rows.extend(_THREAT_MODELS[threat](run, spec, name))
            bar.update(len(x))
    return table


def _oblivious(run: _Evaluation, spec: AttackSpec, _: None) -> list[ResultRow]:
    x_adv, seconds = run.crafted(("oblivious", spec.settings()),
                                 lambda partial: spec.build(run.deployed[NO_VICTIM_DEFENCE], run.batch_size,
                                                            run.verbose, run.seed, partial), spec.budget())
    return [run.row(name, "oblivious", spec.label(), x_adv, seconds,
                    "" if name == NO_VICTIM_DEFENCE else "adv. crafted on the bare victim", spec.settings())
            for name in run.deployed]


def _transfer(run: _Evaluation, spec: AttackSpec, _: None) -> list[ResultRow]:
    x_adv, seconds = run.crafted(("transfer", spec.settings(), run.source),
                                 lambda partial: spec.build(run.source_classifier, run.batch_size, run.verbose,
                                                            run.seed, partial), spec.budget())
    return [run.row(name, "transfer", spec.label(), x_adv, seconds, f"adv. crafted on the bare {run.source_name}",
                    spec.settings()) for name in run.deployed]


def _gradient_threat(threat: str, gradient: str):
    def attack_defended(run: _Evaluation, spec: AttackSpec, name: str) -> list[ResultRow]:
        defence = run.defences[name]
        if gradient == "exact" and not defence.differentiable:
            return [run.row(name, threat, spec.label(), None, 0.0, "refused: defence is not differentiable")]
        copy = attacked(defence)  # one deep copy (weights included), used for the attack and its cache key
        target = run.classifier(copy.configured(gradient=gradient))
        x_adv, seconds = run.crafted((threat, spec.settings(), copy),
                                     lambda partial: spec.build(target, run.batch_size, run.verbose, run.seed, partial),
                                     spec.budget())
        note = "random defence: single-draw gradients, see eot" if defence.randomized else ""
        return [run.row(name, threat, spec.label(), x_adv, seconds, note, spec.settings())]

    return attack_defended


def _eot(run: _Evaluation, spec: AttackSpec, name: str) -> list[ResultRow]:
    defence = run.defences[name]
    if not defence.randomized:
        return [run.row(name, "eot", spec.label(), None, 0.0, "deterministic defence: eot equals adaptive/bpda")]
    target = run.eot_classifier(defence)
    x_adv, seconds = run.crafted(("eot", spec.settings(), attacked(defence), run.eot_draws),
                                 lambda partial: spec.build(target, run.batch_size, run.verbose, run.seed, partial),
                                 spec.budget())
    gradient = eot_gradient(defence)
    return [run.row(name, "eot", f"{spec.label()} eot={run.eot_draws}", x_adv, seconds,
                    f"gradients and decisions averaged over {run.eot_draws} draws ({gradient})",
                    {**spec.settings(), "eot_draws": run.eot_draws, "gradient": gradient})]


def _decision(run: _Evaluation, spec: AttackSpec, name: str) -> list[ResultRow]:
    defence = run.defences[name]
    target = run.eot_classifier(defence) if defence.randomized else run.classifier(defence)
    hsj = functools.partial(BudgetedHopSkipJump, target, norm=spec.norm_value, eps=spec.eps,
                            max_queries=run.queries, batch_size=run.batch_size, seed=run.seed, verbose=run.verbose)
    key = ("decision-v2", spec.norm, run.queries, attacked(defence), defence.randomized and run.eot_draws)
    x_adv, seconds = run.crafted(key, lambda partial: hsj(checkpoint=partial), None)
    # HopSkipJump minimises the perturbation without a budget: keep only what lies within eps.
    kept = within_budget(run.x, x_adv, spec.norm, spec.eps)
    x_adv = np.where(kept[:, None, None, None], x_adv, run.x).astype(np.float32)
    eps = spec.label().split(" ", 1)[1]
    note = f"on EOT classifier ({run.eot_draws} draws)" if defence.randomized else ""
    params = {**hsj().params, "norm": spec.norm, "eps": spec.eps}
    return [run.row(name, "decision", f"hopskipjump-{run.queries}q {eps}", x_adv, seconds, note, params)]


_THREAT_MODELS = {
    "oblivious": _oblivious,
    "transfer": _transfer,
    "bpda": _gradient_threat("bpda", "bpda"),
    "adaptive": _gradient_threat("adaptive", "exact"),
    "eot": _eot,
    "decision": _decision,
}
