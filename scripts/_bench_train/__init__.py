"""Pieces of ``scripts/bench_train.py``: shared set-up (``common``), the plad and TRL trainer
children (``children``) and the per-batch breakdown child (``breakdown``). Each child runs in its
own process, started by the entry script."""
