"""Test-wide set-up: 8 virtual CPU devices (sharded executors) and CPU-only JAX.

Runs before any test module imports jax, which is when XLA reads these flags.
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (_flags + ' --xla_force_host_platform_device_count=8').strip()
