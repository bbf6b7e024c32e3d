"""Summarization: compress a short news-like document into a one-line headline summary.

The embedded generator writes 3-5 sentence documents: one key event sentence (who / what / where
/ a number), in one of two phrasings and at a random position, among distractor sentences that
carry their own names, places and numbers. The summary restates the event's facts in a fixed,
compressed headline form (with a tense change, "opened" -> "opens"). A model must find the key
sentence by its form and copy the right entities: tiny models learn it in minutes, a bigger one
makes fewer entity and selection errors.

Real data: TL;DR-style (post, summary) pairs, e.g. columns ``prompt`` / ``label`` of the public
Reddit TL;DR SFT sets, mapped to ``document`` / ``reference``.

``task`` holds ``SummarizationTask`` (what ``configs/task/summarization.yaml`` instantiates) and the
ROUGE metric; ``pools`` the generator's word lists, event phrasings and distractor sentences.
"""

from plad.tasks.summarization.task import SummarizationTask

__all__ = ["SummarizationTask"]
