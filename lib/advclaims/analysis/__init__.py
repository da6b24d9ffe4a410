"""Analyses: each turns models and adversarial sets into a Measurement for one claim."""
