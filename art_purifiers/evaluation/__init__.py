"""Robustness evaluation on top of ART's attacks: threat models, attacks, result tables."""

from art_purifiers.evaluation.names import ATTACKS, CRAFTED_ON, FORMATS, PROTOCOLS, THREATS
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
    "draw_labels": "art_purifiers.evaluation.protocols",
    "protocol_correct": "art_purifiers.evaluation.protocols",
    "ResultRow": "art_purifiers.evaluation.report",
    "ResultTable": "art_purifiers.evaluation.report",
    "AdversarialCache": "art_purifiers.evaluation.runner",
    "accuracy": "art_purifiers.evaluation.runner",
    "art_classifier": "art_purifiers.evaluation.runner",
    "correct": "art_purifiers.evaluation.runner",
    "evaluate": "art_purifiers.evaluation.runner",
    "DataSlice": "art_purifiers.evaluation.settings",
    "EvaluationSettings": "art_purifiers.evaluation.settings",
    "PRESETS": "art_purifiers.evaluation.settings",
    "ThreatModel": "art_purifiers.evaluation.settings",
    "preset": "art_purifiers.evaluation.settings",
    "threat_model": "art_purifiers.evaluation.settings",
}
__all__ = ["ATTACKS", "CRAFTED_ON", "FORMATS", "PROTOCOLS", "THREATS", *_EXPORTS]
__getattr__ = lazy_exports(__name__, _EXPORTS)
