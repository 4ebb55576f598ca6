"""Malicious clients (boosted / sign-flipped updates) and plain FL's norm bound."""

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from privateyes_jax import runner
from privateyes_jax.federated import malicious
from tests.federated.test_engine import fl_config


def _cfg(**fields):
  return ml_collections.ConfigDict({'kind': 'boost', 'clients': (1,), 'factor': 10.0, **fields})


@pytest.mark.parametrize('fields, message', [
    ({'kind': 'scale'}, 'fl.malicious.kind'),
    ({'clients': ()}, 'fl.malicious.clients'),
    ({'clients': (0, 0)}, 'fl.malicious.clients'),
    ({'clients': (9,)}, 'fl.malicious.clients'),
    ({'factor': -1.0}, 'fl.malicious.factor'),
])
def test_bad_malicious_config_is_one_line_error(fields, message):
  with pytest.raises(ValueError, match=message) as info:
    malicious.MaliciousClients.from_config(_cfg(**fields), num_clients=4)
  assert '\n' not in str(info.value)


def test_crafted_updates_replace_only_the_attackers_rows():
  updates = jnp.ones((3, 4), jnp.float32)
  ids = np.array([0, 2, 3])
  boost = malicious.MaliciousClients.from_config(_cfg(clients=(2,)), 4)
  flip = malicious.MaliciousClients.from_config(_cfg(kind='sign_flip', clients=(2,), factor=3.0),
                                                4)
  np.testing.assert_array_equal(np.asarray(boost.apply(updates, ids))[:, 0], [1, 10, 1])
  np.testing.assert_array_equal(np.asarray(flip.apply(updates, ids))[:, 0], [1, -3, 1])
  assert boost.apply(updates, np.array([0, 1, 3])) is updates  # Attacker not sampled.
  assert malicious.MaliciousClients.from_config(_cfg(kind='none'), 4) is None


def test_norm_bound_under_privateyes_is_refused_and_points_to_the_mpc_check(tmp_path):
  config = fl_config(**{'aggregator.name': 'privateyes', 'aggregator.norm_bound': 1.0})
  with pytest.raises(ValueError, match='set aggregator.validity'):
    runner.train_and_evaluate(config, str(tmp_path / 'refused'))
  assert not os.path.exists(os.path.join(tmp_path, 'refused', 'summary.json'))
