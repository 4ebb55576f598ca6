"""Tuning on shadow people: target runs are never attacked, overlapping people are refused."""

import json
import os

import pytest

from experiments import tune_attack
from privateyes_jax.attacks import pipeline
from privateyes_jax.attacks import tuning


def test_tuning_selects_on_shadow_people_only(recorded_runs, tmp_path, monkeypatch):
  """Mutant killed: tuning attacks (or scores) the target runs, i.e. model selection on
  the test set (issue #14 item 4)."""
  loaded = []
  real_load = pipeline.load_round
  monkeypatch.setattr(pipeline, 'load_round',
                      lambda run, round_=-1: loaded.append(run) or real_load(run, round_))
  config = tuning.default_config('tiny')
  config.grid = ('attack.feature_weight=0,3',)
  record = tuning.tune(config, tune_attack.training_config('tiny'), str(tmp_path / 'tune'),
                       target_runs=list(recorded_runs))
  shadow = os.path.join(str(tmp_path / 'tune'), 'shadow_fedavg')
  assert loaded and set(loaded) == {shadow}  # Target runs are read for overlap only.
  assert record['chosen']['attack.feature_weight'] in (0.0, 3.0)
  assert record['overrides'] == [f'--config.attack.feature_weight='
                                 f'{record["chosen"]["attack.feature_weight"]}']
  assert len(record['candidates']) == 2 and record['shadow']['data_seed'] == 1000
  saved = json.load(open(tmp_path / 'tune' / tuning.TUNING_FILE))
  assert saved['chosen'] == record['chosen']
  # Shadow people that are the targets' people are refused.
  config.shadow_data_seed = 0  # The recorded runs' data.seed.
  with pytest.raises(ValueError, match='are the people of target run'):
    tuning.tune(config, tune_attack.training_config('tiny'), str(tmp_path / 'again'),
                target_runs=list(recorded_runs))
