"""Every shipped config loads, validates, and (where it names one) selects its method."""

import glob
import importlib
import os

import pytest

from privateyes_jax import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(ROOT, 'experiments', 'configs', '*.py'))
                 if not p.endswith('__init__.py'))


# attack.py and tune_attack.py configure DualView, not a training run (tested below and in
# tests/attacks); poisoning.py holds an experiment's training config as its ``base``.
@pytest.mark.parametrize('name', [m for m in MODULES
                                  if m not in ('paper', 'demo', 'attack', 'tune_attack',
                                               'poisoning', 'dp_curve')])
def test_config_validates(name):
  config = importlib.import_module(f'experiments.configs.{name}').get_config()
  runner.validate(config)
  tiny = importlib.import_module(f'experiments.configs.{name}').get_config('tiny')
  runner.validate(tiny)


def test_demo_configs():
  from experiments.configs import demo  # pylint: disable=g-import-not-at-top
  for method in demo.METHODS:
    runner.validate(demo.get_config(method))
  assert demo.get_config('privateyes').aggregator.name == 'privateyes'
  assert demo.get_config('fedavg').record_views == 'last'
  with pytest.raises(ValueError, match='Unknown demo method'):
    demo.get_config('tiny')


def test_paper_configs():
  from experiments.configs import paper  # pylint: disable=g-import-not-at-top
  for dataset in paper.DATASETS:
    for method in paper.METHODS:
      config = paper.get_config(f'{dataset},{method}')
      runner.validate(config)
      assert config.data.name == dataset
  assert paper.get_config('mpiigaze,privateyes').aggregator.name == 'privateyes'
  assert paper.get_config('gazecapture,fedavg').model.head == 'screen'
  with pytest.raises(ValueError, match='Unknown dataset'):
    paper.get_config('nvgaze,fedavg')
  with pytest.raises(ValueError, match='Unknown method'):
    paper.get_config('mpiigaze,fedprox')


def test_attack_configs():
  from experiments.configs import attack  # pylint: disable=g-import-not-at-top
  for preset in ('demo', 'full', 'tiny'):
    config = attack.get_config(preset)
    assert config.attack.restarts >= 1 and config.prior.steps >= 1
  assert attack.get_config().attack.steps == attack.get_config('demo').attack.steps
  with pytest.raises(ValueError, match='Unknown attack preset'):
    attack.get_config('huge')


def test_poisoning_configs():
  from experiments.configs import poisoning  # pylint: disable=g-import-not-at-top
  for preset in ('demo', 'tiny'):
    config = poisoning.get_config(preset)
    runner.validate(config.base)
    assert config.base.fl.rounds == config.rounds
  with pytest.raises(ValueError, match='Unknown poisoning preset'):
    poisoning.get_config('full')
