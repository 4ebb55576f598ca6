"""Multi-host runs on JAX's own distributed runtime: one process per host.

The same config runs on several hosts: every host starts the same command with
its own process id; they meet at a coordinator (process 0's ``host:port``)::

  PRIVATEYES_COORDINATOR=host0:7777 PRIVATEYES_NUM_PROCESSES=2 PRIVATEYES_PROCESS_ID=0 \
      python -m experiments.train --config=... --config.fl.executor=sharded --workdir=...

(or the ``--coordinator_address``, ``--num_processes``, ``--process_id`` flags of
``experiments/train.py``, which take precedence over the environment). After
`initialize`, ``jax.devices()`` lists every device of every process and the
``sharded`` executor splits the client axis over all of them
(federated/executors.py); the global params stay replicated, every process runs
the aggregation and the server step on the same gathered updates, so all
processes hold the same model.

Only process 0 writes the workdir's files (`is_primary`); checkpoints are saved
by all processes together (Orbax is multi-process aware) and written by process
0 (privateyes_jax/workdir.py).

On CPU the cross-process collectives are gloo's (TCP): `initialize` selects them
before the CPU backend starts. The library defines no absl flag (DESIGN.md §2):
the entry points pass their flags in, the environment fills what they leave unset.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import jax
from absl import logging

ENV_COORDINATOR = 'PRIVATEYES_COORDINATOR'
ENV_NUM_PROCESSES = 'PRIVATEYES_NUM_PROCESSES'
ENV_PROCESS_ID = 'PRIVATEYES_PROCESS_ID'
ENV_LOCAL_DEVICE_IDS = 'PRIVATEYES_LOCAL_DEVICE_IDS'

# How jax spells "use gloo for CPU collectives": jax >= 0.4.3x (0.10.2 and 0.11.x
# included) has an enum option; older releases had a boolean.
_COLLECTIVES_OPTIONS = (('jax_cpu_collectives_implementation', 'gloo'),
                        ('jax_cpu_enable_gloo_collectives', True))


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
  """Where this process stands in a multi-process run (resolved flags and environment).

  Attributes:
    coordinator_address: ``host:port`` of process 0's coordination service.
    num_processes: how many processes take part (1: a single-process run).
    process_id: this process, in ``[0, num_processes)``.
    local_device_ids: the local devices this process uses (None: all).
  """
  coordinator_address: str | None
  num_processes: int
  process_id: int
  local_device_ids: tuple[int, ...] | None = None

  @property
  def multi_process(self) -> bool:
    return self.num_processes > 1


def _from_env(environ: Mapping[str, str], name: str, kind: type):
  value = environ.get(name, '').strip()
  if not value:
    return None
  try:
    return kind(value)
  except ValueError as e:
    raise ValueError(f'${name}={value!r} is not a valid {kind.__name__}.') from e


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None,
            local_device_ids: Sequence[int] | None = None,
            environ: Mapping[str, str] | None = None) -> ProcessGroup:
  """Combines explicit arguments (flags) with ``PRIVATEYES_*`` environment variables.

  An argument that is None (or '' for the address) falls back to the environment;
  ``num_processes`` defaults to 1 and ``process_id`` to 0.

  Raises:
    ValueError: a multi-process run without a coordinator address, or a process id
      outside ``[0, num_processes)``.
  """
  environ = os.environ if environ is None else environ
  address = coordinator_address or environ.get(ENV_COORDINATOR) or None
  if num_processes is None:
    num_processes = _from_env(environ, ENV_NUM_PROCESSES, int)
  if process_id is None:
    process_id = _from_env(environ, ENV_PROCESS_ID, int)
  if local_device_ids is None and environ.get(ENV_LOCAL_DEVICE_IDS, '').strip():
    local_device_ids = [int(x) for x in environ[ENV_LOCAL_DEVICE_IDS].split(',')]
  num_processes = 1 if num_processes is None else int(num_processes)
  process_id = 0 if process_id is None else int(process_id)
  if num_processes < 1:
    raise ValueError(f'num_processes must be >= 1, got {num_processes}.')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id={process_id} is not in [0, num_processes={num_processes}).')
  if num_processes > 1 and not address:
    raise ValueError(f'A run with num_processes={num_processes} needs the coordinator '
                     f'address (process 0\'s host:port): pass --coordinator_address or set '
                     f'${ENV_COORDINATOR}.')
  return ProcessGroup(address, num_processes, process_id,
                      None if local_device_ids is None else tuple(local_device_ids))


def enable_cpu_collectives() -> str | None:
  """Selects gloo for cross-process collectives on CPU, however this jax spells it.

  Must run before the CPU backend is created. Returns the option set, or None when
  this jax has neither spelling (then the jax default applies: gloo in 0.10.2).
  """
  for name, value in _COLLECTIVES_OPTIONS:
    try:
      jax.config.update(name, value)
      return name
    except (AttributeError, KeyError, ValueError):
      continue
  logging.warning('This jax (%s) has no option to select CPU collectives; using its '
                  'default.', jax.__version__)
  return None


def cpu_collectives_available() -> bool:
  """Whether the installed jaxlib was built with gloo CPU collectives."""
  try:
    from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  except ImportError:  # Older jaxlib names the extension module differently.
    try:
      from jax._src.lib import xla_extension as _jax  # pylint: disable=g-import-not-at-top
    except ImportError:
      return False
  return hasattr(_jax, 'make_gloo_tcp_collectives')


def is_initialized() -> bool:
  """Whether `initialize` (``jax.distributed.initialize``) ran in this process."""
  probe = getattr(jax.distributed, 'is_initialized', None)
  if probe is not None:
    return bool(probe())
  from jax._src import distributed as _distributed  # pylint: disable=g-import-not-at-top
  return _distributed.global_state.client is not None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: Sequence[int] | None = None,
               initialization_timeout_s: int = 300) -> ProcessGroup:
  """Joins a multi-process run (``jax.distributed.initialize``) when there is one.

  Call it first, before anything touches a jax device. With one process
  (the default) nothing happens. Arguments left None come from the
  ``PRIVATEYES_*`` environment variables (`resolve`).

  Args:
    coordinator_address: ``host:port`` where process 0 serves coordination.
    num_processes: processes in the run (one per host, usually).
    process_id: this process's index; process 0 hosts the coordinator.
    local_device_ids: restrict this process to these local accelerators.
    initialization_timeout_s: how long to wait for every process to join.

  Returns:
    The resolved `ProcessGroup`.
  """
  group = resolve(coordinator_address, num_processes, process_id, local_device_ids)
  if not group.multi_process:
    return group
  if is_initialized():
    logging.info('jax.distributed is already initialized; not initializing again.')
    return group
  enable_cpu_collectives()  # Only the CPU client reads it; harmless on GPU hosts.
  jax.distributed.initialize(
      coordinator_address=group.coordinator_address, num_processes=group.num_processes,
      process_id=group.process_id,
      local_device_ids=None if group.local_device_ids is None else list(group.local_device_ids),
      initialization_timeout=initialization_timeout_s)
  logging.info('Process %d of %d joined %s: %d local / %d global devices (%s).',
               group.process_id, group.num_processes, group.coordinator_address,
               jax.local_device_count(), jax.device_count(), jax.devices()[0].device_kind)
  return group


def is_primary() -> bool:
  """True in process 0 (and in any single-process run): the process that writes files.

  Does not start a jax backend in a single-process run.
  """
  return not is_initialized() or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches ``name`` (no-op with one process)."""
  if is_initialized() and jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
