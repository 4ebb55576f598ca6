"""Periodic progress lines with rate and ETA (log-friendly, no terminal control codes)."""

from __future__ import annotations

import datetime
import time

from absl import logging


class Progress:
  """Logs ``label i/n`` with throughput and ETA at most every ``every_s`` seconds."""

  def __init__(self, label: str, total: int, start: int = 0, every_s: float = 5.0,
               unit: str = 'step'):
    self.label, self.total, self.unit = label, total, unit
    self.start, self.every_s = start, every_s
    self.t0 = time.perf_counter()
    self.last = -float('inf')

  def update(self, done: int, force: bool = False, **values) -> None:
    now = time.perf_counter()
    if not force and now - self.last < self.every_s:
      return
    self.last = now
    elapsed = now - self.t0
    rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float('nan')
    eta_s = str(datetime.timedelta(seconds=int(eta))) if eta == eta else '?'
    extra = ' '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}'
                     for k, v in values.items())
    logging.info('%s %s %d/%d  %s  %.2f %s/s  ETA %s', self.label, self.unit, done,
                 self.total, extra, rate, self.unit, eta_s)
