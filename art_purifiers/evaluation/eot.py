"""Expectation over transformation (EOT) for defences with randomness inside: see
:class:`art_purifiers.deploy.EOTClassifier` and ``Defence.deploy(victim, eot=k)``."""

from art_purifiers.deploy import EOTClassifier

__all__ = ["EOTClassifier"]
