"""Shared pytest configuration for the library's unit tests."""

from hypothesis import settings

# `pytest --hypothesis-profile ci`: fewer examples for CI machines (tests scale their counts to it)
settings.register_profile("ci", max_examples=10, deadline=None)
