"""Robustness evaluation on top of ART's attacks: threat models, attacks, result tables."""

from art_purifiers.evaluation.attacks import ATTACKS, AttackSpec, parse_eps
from art_purifiers.evaluation.autoattack import StandardAutoAttack
from art_purifiers.evaluation.report import ResultRow, ResultTable
from art_purifiers.evaluation.runner import THREATS, AdversarialCache, accuracy, art_classifier, evaluate

__all__ = [
    "ATTACKS",
    "THREATS",
    "AdversarialCache",
    "AttackSpec",
    "ResultRow",
    "ResultTable",
    "StandardAutoAttack",
    "accuracy",
    "art_classifier",
    "evaluate",
    "parse_eps",
]
