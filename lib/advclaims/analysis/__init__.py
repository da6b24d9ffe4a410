"""Analyses: each turns models and adversarial sets into a Measurement for one claim.

One package per paper (``local_properties``, ``high_frequency``, ``info_bottleneck``, ``curvature``), each
re-exporting its claims' analyses; beside them the pieces several papers share: ``frequency`` (Fourier filters),
``responses`` (stage outputs and local response differences) and ``figures`` (matplotlib helpers). Imports run one
way: fixtures and claims -> analysis -> attacks, models, stats (tests/test_layout.py).
"""
