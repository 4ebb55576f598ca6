"""Converters from the public datasets' on-disk formats (logic: privateyes_jax.data.builders)."""
