"""Training with Lightning: what runs inside ``trainer.fit`` for the SFT and distillation stages.

- ``optimizer.py``  the configured optimizer and LR schedule, and ``GuardedStepModule``: the manual
  optimisation step that skips a step whose loss or gradients are not finite (base of both modules)
- ``modules.py``    the LightningModules ``SFTModule`` and ``DistillModule``
- ``trainer.py``    Trainer set-up: ``fit_sft`` (checkpoint chosen on validation), ``fit_distill``
- ``callbacks.py``  ``BestWeights`` and ``ValidationQuality`` (SFT checkpoint selection)
- ``weights.py``    the full trained weights, gathered when FSDP/DeepSpeed shard them
- ``resume.py``     which checkpoint ``ckpt_path`` resumes from
- ``loggers.py``    the run's experiment loggers
- ``compat.py``     the paths these modules had before they moved here (old checkpoints, run configs)
"""
