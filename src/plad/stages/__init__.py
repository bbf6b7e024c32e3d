"""One module per stage of ``plad.pipeline.run``: what it caches under which key, and how it calls
the packages that do the work. Stages pass references (``ModelRef``: a saved directory and its
fingerprint), never loaded models."""
