"""Checkpoints: spec -> store -> model or adversarial set. ``pipeline`` (the one way through; ``keys`` names every
store entry), ``training``, the health gate (``health``), the ``store`` (``atomic`` writes), a user's models
(``external``, ``own_models``), ``distributed`` (torchrun) and ``provenance``; what an analysis is handed is in
``artifacts`` (plain types, no orchestration)."""
