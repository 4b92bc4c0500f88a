"""The names the harness accepts, in a module light enough for the command line to check arguments with."""

#: Threat models of :func:`~art_purifiers.evaluation.runner.evaluate`, in the order their rows appear.
THREATS = ("clean", "oblivious", "transfer", "bpda", "adaptive", "eot", "decision")
#: AutoAttack's attack names and the version of :class:`~art_purifiers.evaluation.autoattack.StandardAutoAttack`
#: each runs.
AUTOATTACKS = {"autoattack": "standard", "autoattack-rand": "rand"}
#: Attacks of :class:`~art_purifiers.evaluation.attacks.AttackSpec` (HopSkipJump needs labels only; ``decision``
#: runs it at each budget of the others).
ATTACKS = (*AUTOATTACKS, "pgd", "fgsm", "bim", "mifgsm", "cw", "deepfool", "hopskipjump")
#: Where a threat model crafts its adversarial examples (:class:`~art_purifiers.evaluation.settings.ThreatModel`).
CRAFTED_ON = ("none", "victim", "source", "defence")
#: How a random defence answers at test time: one draw, a majority vote of N draws, the worst case of N draws.
PROTOCOLS = ("single", "majority", "worst")
#: Output formats of :meth:`~art_purifiers.evaluation.report.ResultTable.render`.
FORMATS = ("text", "markdown", "json", "csv")
