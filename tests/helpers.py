"""Helpers shared by the test modules: tiny configs with dotted overrides, saved params."""

from experiments.configs import default
from privateyes_jax import workdir as workdir_lib


def tiny_config(**overrides):
  """``default.py:tiny`` with ``{'a.b': value}`` overrides (use ``**{'fl.rounds': 2}``)."""
  config = default.get_config('tiny')
  for key, value in overrides.items():
    target = config
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    assert last in target, f'tiny_config: no config field {key!r}'  # Catch typos in tests.
    target[last] = value
  return config


def final_params(workdir):
  """The params (or local-only client params) of the latest checkpoint in ``workdir``."""
  wd = workdir_lib.Workdir(str(workdir))
  latest = wd.latest_step()
  assert latest is not None, f'no checkpoint in {workdir}'
  state = wd._manager.restore(latest)  # pylint: disable=protected-access
  wd.close()
  return state.get('params', state.get('client_params'))
