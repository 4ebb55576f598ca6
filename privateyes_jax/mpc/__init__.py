"""PrivatEyes MPC: SPDZ2k secure aggregation of individual updates over S servers.

Modules: ``ring`` (fixed-point codec, range checks, the scoped-x64 decision),
``sharing`` (additive shares, server axis first), ``prg`` (counter-mode Threefry
share streams), ``fused`` (the chunked, fused round programs), ``spdz2k`` (MACs, DEALER
preprocessing, client input, opening, batched MAC check with
commit-then-reveal), ``adversary`` (malicious server deviations, passive
coalition view), ``costs`` (per-round bytes and rounds; offline and generic-MPC
ESTIMATES), ``aggregator`` (``SecureAggregator``: the aggregator interface of
``privateyes_jax.federated.aggregators``), ``coin`` (the servers' own randomness and the
joint coin toss), ``consistency`` (clients compare every server's model digest),
``security_suite`` (randomized attack trials and escape rates for tests and
experiments/mpc_stress.py). Protocol write-up: docs/MPC.md.
"""
