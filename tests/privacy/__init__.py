"""Tests of privateyes_jax.privacy."""
