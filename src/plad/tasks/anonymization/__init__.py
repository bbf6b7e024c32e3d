"""The anonymization task: replace every piece of personal data by a typed placeholder.

``task`` holds ``AnonymizationTask`` (what ``configs/task/anonymization.yaml`` instantiates); ``spans``
where PII sits in a text (the leak test, gold PII derived from real masked data);
``generator`` the embedded data (sentence templates, filler pools, PII makers); ``metrics`` quality,
leak and keep rates, placeholder P/R/F1; ``ood`` the shipped hand-written out-of-distribution set (``ood.jsonl``);
``rule_based`` the model-free peer system evaluated next to the trained ones; ``presidio`` a second
one, Microsoft Presidio (with the optional ``presidio`` extra).
"""

from plad.tasks.anonymization.task import AnonymizationTask

__all__ = ["AnonymizationTask"]
