"""Robustness evaluation on top of ART's attacks: threat models, attacks, result tables."""

from art_purifiers.evaluation.names import ATTACKS, FORMATS, THREATS
from art_purifiers.lazy import lazy_exports

_EXPORTS = {
    "AttackSpec": "art_purifiers.evaluation.attacks",
    "CWMarginLoss": "art_purifiers.evaluation.attacks",
    "parse_eps": "art_purifiers.evaluation.attacks",
    "project_to_ball": "art_purifiers.evaluation.attacks",
    "StandardAutoAttack": "art_purifiers.evaluation.autoattack",
    "BudgetedHopSkipJump": "art_purifiers.evaluation.decision",
    "EOTClassifier": "art_purifiers.deploy",
    "FABTargeted": "art_purifiers.evaluation.fab",
    "ResultRow": "art_purifiers.evaluation.report",
    "ResultTable": "art_purifiers.evaluation.report",
    "AdversarialCache": "art_purifiers.evaluation.runner",
    "accuracy": "art_purifiers.evaluation.runner",
    "art_classifier": "art_purifiers.evaluation.runner",
    "correct": "art_purifiers.evaluation.runner",
    "evaluate": "art_purifiers.evaluation.runner",
}
__all__ = ["ATTACKS", "FORMATS", "THREATS", *_EXPORTS]
__getattr__ = lazy_exports(__name__, _EXPORTS)
