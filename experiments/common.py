"""What every absl entry point shares: flag parsing with readable config errors, and
turning the library's user-facing exceptions into one clear line and exit status 1."""

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging

from privateyes_jax.data.base import DatasetError
from privateyes_jax.federated.engine import RoundAborted
from privateyes_jax.workdir import CheckpointError, WorkdirError

# Errors that describe a problem with the user's input or files, or a run stopped on
# purpose (a NaN round: FloatingPointError; cheating detected: RoundAborted), not a
# bug: print the message alone instead of a traceback.
USER_ERRORS = (WorkdirError, CheckpointError, DatasetError, FloatingPointError, ValueError,
               FileNotFoundError, RoundAborted)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    msg = str(e)
    if 'Traceback (most recent call last)' in msg:
      # ml_collections embeds the config file's traceback: keep where and what.
      lines = [l for l in msg.splitlines() if l.strip()]
      msg = f'{lines[0]} {lines[-1]}'
    sys.stderr.write(f'FATAL Flags parsing error: {msg}\nPass --helpfull to see all flags.\n')
    sys.exit(2)
  except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.x field.
    msg = str(e).strip('"\'').replace("\\'", "'").replace('\\n', ' ')
    sys.stderr.write(f'FATAL Unknown config field in a --config override: {msg}\n')
    sys.exit(2)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO chatter of orbax, etils and TFDS (checkpoint internals) from the log."""

  NOISY = ('/orbax/', '/etils/', '/tensorflow_datasets/', '/jax/_src/')

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or not any(
        n in record.pathname for n in self.NOISY)


def run(main):
  """``app.run(main)`` with readable errors for bad flags, configs, data and workdirs."""
  def wrapped(argv):
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
      return main(argv)
    except USER_ERRORS as e:
      sys.stderr.write(f'ERROR ({type(e).__name__}): {e}\n')
      sys.exit(1)
  app.run(wrapped, flags_parser=_parse_flags)
