"""Run threat models against defences and collect one table.

Threat models (see ``docs/evaluating.md``):

* ``clean``: accuracy of the victim, and of victim + defence, on clean images (SA).
* ``oblivious``: adversarial examples crafted on the bare victim, classified through the defence.
* ``bpda``: the attack runs on victim + defence with ``gradient="bpda"`` (identity backward).
* ``adaptive``: the attack runs on victim + defence with ``gradient="exact"`` (refused, with a note, for
  defences that are not differentiable).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers.base import PurifierPreprocessor
from art_purifiers.evaluation.attacks import AttackSpec
from art_purifiers.evaluation.report import ResultRow, ResultTable

logger = logging.getLogger(__name__)

THREATS = ("clean", "oblivious", "bpda", "adaptive")


def art_classifier(
    model: nn.Module,
    defences: list[PurifierPreprocessor] | None = None,
    nb_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    device: str = "cpu",
) -> PyTorchClassifier:
    """An ART ``PyTorchClassifier`` for a model taking ``[0, 1]`` images, optionally defended."""
    return PyTorchClassifier(
        model=model.eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=input_shape,
        nb_classes=nb_classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=defences or None,
        device_type="cpu" if device == "cpu" else "gpu",
    )


def accuracy(classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, batch_size: int = 128) -> float:
    """Top-1 accuracy in percent."""
    return float((classifier.predict(x, batch_size=batch_size).argmax(1) == y).mean() * 100)


def fingerprint(*parts) -> str:
    """A short stable hash of arrays, modules and JSON-able settings."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


class AdversarialCache:
    """Adversarial examples on disk, keyed by a hash of everything that determines them, so a rerun or a
    crashed run resumes instead of recomputing. ``directory=None`` disables caching."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def get(self, key: str) -> tuple[np.ndarray, float] | None:
        if self.directory is None or not (self.directory / f"{key}.npz").is_file():
            return None
        with np.load(self.directory / f"{key}.npz") as archive:
            return archive["x_adv"], float(archive["seconds"])

    def put(self, key: str, x_adv: np.ndarray, seconds: float) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f"{key}.tmp.npz"
        np.savez_compressed(tmp, x_adv=x_adv, seconds=np.float64(seconds))
        tmp.replace(self.directory / f"{key}.npz")


def _seed_everything(seed: int) -> None:
    # ART's attacks draw from numpy's and torch's global generators; seed both for reproducible rows.
    np.random.seed(seed)  # noqa: NPY002 (ART uses the legacy global generator)
    torch.manual_seed(seed)


def _with_gradient(defence: PurifierPreprocessor, gradient: str) -> PurifierPreprocessor:
    attacked = copy.deepcopy(defence)
    attacked.set_params(gradient=gradient)
    return attacked


def evaluate(
    victim: nn.Module,
    defences: Mapping[str, PurifierPreprocessor],
    x: np.ndarray,
    y: np.ndarray,
    threats: tuple[str, ...] = ("clean", "oblivious"),
    attack: AttackSpec | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    victim_name: str = "victim",
    verbose: bool = False,
) -> ResultTable:
    """Evaluate each defence under each threat model on ``(x, y)``.

    :param victim: Classifier taking ``(N, 3, H, W)`` images in ``[0, 1]`` and returning logits.
    :param defences: ``{row name: defence}``; the bare victim is always reported too.
    :param x: Images, float32 ``(N, 3, H, W)`` in ``[0, 1]``.
    :param y: Integer labels ``(N,)``.
    :param threats: Subset of :data:`THREATS`.
    :param attack: The attack run by every threat model but ``clean`` (default: AutoAttack, Linf 8/255).
    :param seed: Seed of numpy/torch before every attack.
    :param cache_dir: Folder of the adversarial-example cache, or ``None``.
    :return: A :class:`ResultTable`; SA is the clean accuracy of the same classifier, RA the accuracy on
        the adversarial examples of that threat model.
    """
    unknown = set(threats) - set(THREATS)
    if unknown:
        raise ValueError(f"Unknown threat models {sorted(unknown)}; choose from {THREATS}.")
    attack = attack or AttackSpec()
    y = np.asarray(y, dtype=np.int64)
    cache = AdversarialCache(cache_dir)
    data_key = fingerprint(x, y)
    victim_key = fingerprint(victim)
    bare = art_classifier(victim, device=device)
    defended = {name: art_classifier(victim, [d], device=device) for name, d in defences.items()}
    table = ResultTable(meta={"victim": victim_name, "n": len(x), "seed": seed, "attack": attack.settings()})
    clean_accuracy = {"none": accuracy(bare, x, y, batch_size)}
    clean_accuracy.update({name: accuracy(c, x, y, batch_size) for name, c in defended.items()})
    params = {name: {p: getattr(d, p) for p in d.params} for name, d in defences.items()}
    params["none"] = {}

    def crafted(threat: str, target: PyTorchClassifier, defence_key) -> tuple[np.ndarray, float]:
        key = fingerprint("adv-v1", threat, attack.settings(), victim_key, data_key, defence_key, seed)
        hit = cache.get(key)
        if hit is not None:
            logger.info("cache hit %s for %s", key, threat)
            return hit
        _seed_everything(seed)
        start = time.perf_counter()
        x_adv = attack.build(target, batch_size=batch_size, verbose=verbose).generate(x, y).astype(np.float32)
        seconds = time.perf_counter() - start
        cache.put(key, x_adv, seconds)
        return x_adv, seconds

    def row(defence: str, threat: str, ra: float | None, seconds: float, note: str = "") -> None:
        label = "-" if threat == "clean" else attack.label()
        table.add(ResultRow(defence, threat, label, clean_accuracy[defence], ra, len(x), seconds, note,
                            params[defence], {} if threat == "clean" else attack.settings()))

    if "clean" in threats:
        for name in clean_accuracy:
            row(name, "clean", None, 0.0)
    if "oblivious" in threats:
        x_adv, seconds = crafted("oblivious", bare, None)
        row("none", "oblivious", accuracy(bare, x_adv, y, batch_size), seconds)
        for name, classifier in defended.items():
            ra = accuracy(classifier, x_adv, y, batch_size)
            row(name, "oblivious", ra, seconds, "adv. crafted on the bare victim")
    for threat, gradient in (("bpda", "bpda"), ("adaptive", "exact")):
        if threat not in threats:
            continue
        for name, defence in defences.items():
            if gradient == "exact" and not defence.differentiable:
                row(name, threat, None, 0.0, "refused: defence is not differentiable")
                continue
            target = art_classifier(victim, [_with_gradient(defence, gradient)], device=device)
            x_adv, seconds = crafted(threat, target, [repr(defence), gradient])
            note = "random defence: single draw, see eot" if defence.randomized else ""
            row(name, threat, accuracy(defended[name], x_adv, y, batch_size), seconds, note)
    return table
