"""Robustness evaluation on top of ART's attacks: threat models, attacks, result tables."""

from art_purifiers.evaluation.attacks import ATTACKS, AttackSpec, CWMarginLoss, parse_eps, project_to_ball
from art_purifiers.evaluation.autoattack import StandardAutoAttack
from art_purifiers.evaluation.decision import BudgetedHopSkipJump
from art_purifiers.evaluation.eot import EOTClassifier
from art_purifiers.evaluation.fab import FABTargeted
from art_purifiers.evaluation.report import FORMATS, ResultRow, ResultTable
from art_purifiers.evaluation.runner import THREATS, AdversarialCache, accuracy, art_classifier, correct, evaluate

__all__ = [
    "ATTACKS",
    "FORMATS",
    "THREATS",
    "AdversarialCache",
    "AttackSpec",
    "BudgetedHopSkipJump",
    "CWMarginLoss",
    "EOTClassifier",
    "FABTargeted",
    "ResultRow",
    "ResultTable",
    "StandardAutoAttack",
    "accuracy",
    "art_classifier",
    "correct",
    "evaluate",
    "parse_eps",
    "project_to_ball",
]
