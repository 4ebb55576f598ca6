"""Chunked, fused aggregation: bit-for-bit equal to the step-by-step protocol; PRG; memory."""

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax.federated.aggregators import weighted_mean
from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import costs
from privateyes_jax.mpc import fused
from privateyes_jax.mpc import prg
from privateyes_jax.mpc import ring

SPEC = ring.RingSpec()
MAX_WEIGHT = 16.0


# Random123 kat_vectors, threefry2x64: (rounds, counter, key, expected output).
THREEFRY2X64_KAT = [
    (13, (0, 0), (0, 0), (0xf167b032c3b480bd, 0xe91f9fee4b7a6fb5)),
    (20, (0, 0), (0, 0), (0xc2b6e3a8c2c69865, 0x6f81ed42f350084d)),
    (20, (2**64 - 1, 2**64 - 1), (2**64 - 1, 2**64 - 1),
     (0xe02cb7c4d95d277a, 0xd06633d0893b8b68)),
    (20, (0x243f6a8885a308d3, 0x13198a2e03707344),
     (0xa4093822299f31d0, 0x082efa98ec4e6c89),
     (0x263c7d30bb0f0af1, 0x56be8361d3311526)),
]


@pytest.mark.parametrize('rounds, counter, key, expected', THREEFRY2X64_KAT)
def test_threefry2x64_matches_random123_known_answers(rounds, counter, key, expected):
  with jax.enable_x64(True):
    u = lambda v: jnp.asarray(np.uint64(v))
    out = prg.threefry2x64(u(key[0]), u(key[1]), u(counter[0]), u(counter[1]),
                           rounds=rounds)
    assert tuple(int(w) for w in out) == expected


def test_threefry2x32_is_jax_threefry():
  keys = np.random.default_rng(0).integers(0, 2**32, (3, 2), dtype=np.uint32)
  count = np.random.default_rng(1).integers(0, 2**32, 64, dtype=np.uint32)
  for k in keys:
    expected = np.asarray(jex_random.threefry_2x32((jnp.uint32(k[0]), jnp.uint32(k[1])),
                                                   jnp.asarray(count)))
    a, b = prg.threefry2x32(k[0], k[1], count[:32], count[32:])
    np.testing.assert_array_equal(np.concatenate([a, b]), expected)


def test_streams_are_uniform_and_seed_dependent():
  with jax.enable_x64(True):
    counter = prg.element_counter(4096)
    seeds = jnp.asarray(np.array([[1, 2], [1, 3]], np.uint64))
    for name in prg.PRGS:
      a, b = (np.asarray(prg.words64(seeds[i], counter, 1, name)[0]) for i in range(2))
      assert (a != b).mean() > 0.99
      bits = np.unpackbits(a.view(np.uint8))
      assert abs(bits.mean() - 0.5) < 0.01, name
      low = np.asarray(prg.words32(seeds[0], counter, 1, name)[0])
      np.testing.assert_array_equal(low, a.astype(np.uint32))


@pytest.mark.parametrize('spec', [SPEC, ring.RingSpec(k=40, f=20, s=24),
                                  ring.RingSpec(k=12, f=4, s=52)])
def test_fused_encode_is_ring_encode(spec):
  bound = ring.max_abs_value(spec, 1)
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.uniform(-bound, bound, 2000),
                      (rng.integers(-1000, 1000, 200) + 0.5) / 2.0**spec.f,  # Ties.
                      [0.0, -0.0, bound, -bound]]).astype(np.float32)
  x = x[np.abs(x.astype(np.float64)) <= bound]  # As the range check compares.
  with jax.enable_x64(True):
    expected = np.asarray(ring.encode(jnp.asarray(x), spec))
    got = np.asarray(fused.encode(jnp.asarray(x), spec, jnp.uint64))
  np.testing.assert_array_equal(got, expected)


NUM_CLIENTS, NUM_PARAMS = 7, 5


def _inputs():
  updates = jax.random.normal(jax.random.key(0), (NUM_CLIENTS, NUM_PARAMS)) * 0.2
  weights = jnp.array([16.0, 0.0, 3.0, 16.0, 7.0, 1.0, 0.0])  # Two dropouts.
  return updates, weights


def _run(agg, updates, weights, round_idx=0, state=None):
  state = agg.init(jax.random.key(1)) if state is None else state
  return agg.apply(state, updates, weights, jax.random.key(2 + round_idx), round_idx)


def _step_by_step(agg, updates, weights, round_idx=0, state=None):
  state = agg.init(jax.random.key(1)) if state is None else state
  key = jax.random.key(2 + round_idx)
  prep = agg.preprocess(state, key, updates.shape[0], updates.shape[1] + 1)
  submission = agg.package_client_inputs(prep, updates, weights, key, round_idx)
  state, result, _ = agg.aggregate(state, prep, submission, key, round_idx,
                                   updates.shape[1])
  return state, result


VIEW_KEYS = ('opened_sum', 'opened_sum_shares', 'coalition_input_estimate',
             'check_values', 'check_coefficients', 'output_mean')


def _assert_same_view(a, b):
  for name in VIEW_KEYS:
    if a.get(name) is None:
      assert b.get(name) is None, name
    else:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize('mode', aggregator_lib.MODES)
def test_chunked_apply_is_the_step_by_step_protocol_bit_for_bit(mode):
  updates, weights = _inputs()
  # The servers' coins are OS entropy; the same injected stream makes views comparable.
  make = lambda **kw: aggregator_lib.SecureAggregator(
      spec=SPEC, num_servers=3, max_weight=MAX_WEIGHT, mode=mode, coalition=(0, 2),
      record_view=True, server_rng=np.random.default_rng(0), **kw)
  _, reference = _step_by_step(make(), updates, weights)
  assert reference.ok
  # 7 clients: one chunk, chunks of 1, 3 (7 = 3 + 3 + 1, last chunk overlaps).
  for chunk in (0, 1, 3):
    agg = make(client_chunk=chunk)
    _, result = _run(agg, updates, weights)
    assert result.ok
    _assert_same_view(result.view, reference.view)
    np.testing.assert_array_equal(result.mean_update, reference.mean_update)
  # Host-resident updates (one chunk on the device at a time): same again.
  _, host = _run(make(client_chunk=3), np.asarray(updates), weights)
  _assert_same_view(host.view, reference.view)
  # Without a view (what training runs): the same output.
  plain = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=3,
                                          max_weight=MAX_WEIGHT, mode=mode,
                                          client_chunk=3)
  _, result = _run(plain, updates, weights)
  np.testing.assert_array_equal(result.mean_update, reference.mean_update)
  expected, _ = weighted_mean(updates, weights)
  np.testing.assert_allclose(result.mean_update, expected, atol=1e-4)
  # The coalition's per-client knowledge is uniform noise; absent clients are 0.
  estimate = reference.view['coalition_input_estimate']
  np.testing.assert_array_equal(estimate[[1, 6]], 0)
  with jax.enable_x64(True):
    decoded = np.asarray(ring.decode(jnp.asarray(estimate[[0, 2, 3]]), SPEC))
  assert np.abs(decoded).max() > 1.0


@pytest.mark.parametrize('kind', ['drop_client', 'replay_client', 'add_error'])
def test_deviations_on_sums_match_deviations_on_shares(kind):
  # Shapes as in the randomized suite (3 clients, 4 params): shared compilations.
  updates = jax.random.normal(jax.random.key(5), (3, 4)) * 0.2
  weights = jnp.array([16.0, 4.0, 9.0])
  make = lambda: aggregator_lib.SecureAggregator(
      spec=SPEC, num_servers=3, max_weight=MAX_WEIGHT, num_params=4, coalition=(1,),
      record_view=True, client_chunk=2, server_rng=np.random.default_rng(0),
      adversary=adversary_lib.AdversarySpec(kind=kind, server=2, client=1,
                                            magnitude=12345))
  agg, agg_b = make(), make()
  state_a = state_b = agg.init(jax.random.key(1))
  rounds = 2 if kind == 'replay_client' else 1
  for round_idx in range(rounds):
    state_a, fused_result = _run(agg, updates, weights, round_idx, state_a)
    state_b, reference = _step_by_step(agg_b, updates, weights, round_idx, state_b)
    _assert_same_view(fused_result.view, reference.view)
    # Replay is honest in the first round (nothing to replay); then all abort.
    assert fused_result.ok == reference.ok == (round_idx < rounds - 1)
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


def test_range_error_names_client_and_element_across_chunks():
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=2,
                                        max_weight=MAX_WEIGHT, client_chunk=2)
  updates, weights = _inputs()
  bound = ring.max_abs_value(SPEC, NUM_CLIENTS)
  state = agg.init(jax.random.key(0))
  big = updates.at[4, 2].set(20 * bound * MAX_WEIGHT).at[3, 1].set(5 * bound * MAX_WEIGHT)
  with pytest.raises(ring.RingOverflowError, match=r'index \(4, 2\).*exceeds'):
    agg.apply(state, big, weights, jax.random.key(1), 0)
  nan = updates.at[5, 3].set(jnp.nan).at[6, 0].set(jnp.inf)
  with pytest.raises(ring.RingOverflowError, match=r'index \(5, 3\).*NaN'):
    agg.apply(state, nan, weights, jax.random.key(1), 0)


def test_memory_plan_is_bounded_whatever_the_federation():
  agg = aggregator_lib.SecureAggregator(max_weight=320.0)
  params = 3_402_076
  per_client = agg.bytes_per_client(params)
  assert per_client == (params + 1) * 12
  for clients in (15, 256, 10_000):
    chunk = agg.chunk_size(clients, params)
    assert 1 <= chunk <= clients
    assert chunk * per_client <= aggregator_lib.DEFAULT_CHUNK_MEMORY_BYTES
  plan = agg.memory_plan(10_000, params)
  # Dealer (2S-1) + online (1) sums and their combination (2S), S = 3.
  assert plan['accumulator_bytes'] == 12 * (params + 1) * 8
  assert plan['chunk_working_set_bytes'] <= aggregator_lib.DEFAULT_CHUNK_MEMORY_BYTES
  assert agg.chunk_size(15, 1_800_000) == 15  # The CPU demo runs in one chunk.
  assert aggregator_lib.SecureAggregator(max_weight=1.0, client_chunk=4).chunk_size(
      10, 100) == 4
  with pytest.raises(ValueError, match='client_chunk'):
    aggregator_lib.SecureAggregator(max_weight=1.0, client_chunk=-1)
  with pytest.raises(ValueError, match='prg'):
    aggregator_lib.SecureAggregator(max_weight=1.0, prg='rbg')


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU memory analysis')
def test_chunk_program_writes_no_per_client_arrays():
  num_params = 20_000
  updates = jnp.zeros((8, num_params), jnp.float32)
  weights = jnp.ones((8,), jnp.float32)
  temps = []
  with jax.enable_x64(True):
    seeds = aggregator_lib.round_seeds(jax.random.key(0), 0, 8, 3, 'privateyes')
    acc, stats = fused.init_accumulators('privateyes', SPEC, 3, num_params + 1, 8)
    for chunk in (2, 8):
      compiled = fused.accumulate.lower(
          acc, stats, updates, jnp.int32(0), weights, seeds, jnp.float32(1.0),
          jnp.int32(0), mode='privateyes', spec=SPEC, num_servers=3,
          prg='threefry2x64', chunk=chunk, num_clients=8).compile()
      temps.append(compiled.memory_analysis().temp_size_in_bytes)
  # Four more clients per chunk add less than one byte per client element: the
  # 5 PRG words, encodings and shares per element stay inside the fusion.
  assert temps[1] - temps[0] < 4 * (num_params + 1)


def test_ten_thousand_clients_from_host_memory():
  num_clients, num_params = 10_000, 3
  rng = np.random.default_rng(0)
  updates = rng.normal(0, 0.5, (num_clients, num_params)).astype(np.float32)
  weights = rng.integers(0, 17, num_clients).astype(np.float32)
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=3,
                                        max_weight=MAX_WEIGHT, client_chunk=4096)
  _, result = agg.apply(agg.init(jax.random.key(0)), updates, jnp.asarray(weights),
                        jax.random.key(1), 0)
  assert result.ok and result.stats['mpc/client_chunk'] == 4096.0
  expected, total = weighted_mean(jnp.asarray(updates), jnp.asarray(weights))
  np.testing.assert_allclose(result.mean_update, expected, atol=1e-4)
  np.testing.assert_allclose(result.total_weight, total, rtol=1e-5)


def test_seed_compressed_costs_are_reported():
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=3,
                                        max_weight=MAX_WEIGHT,
                                        mode='privateyes_semi_honest')
  updates, weights = _inputs()
  _, result = _run(agg, updates, weights)
  elements = NUM_PARAMS + 1
  assert result.stats['mpc/client_upload_bytes'] == elements * 4 + 2 * costs.SEED_BYTES
  assert result.stats['mpc/client_upload_bytes_uncompressed'] == 3 * elements * 4
  # Per client: seeds for servers 0 and 1 and for the client itself, server 2's shares.
  assert costs.dealer_send_bytes(SPEC, 3, 10, 1001) == 10 * (3 * 16 + 2 * 1001 * 8)


@pytest.mark.parametrize('kind', ['none', 'add_error'])
def test_opening_and_check_with_and_without_a_view_agree(kind):
  """Training (no view) skips the opened shares; same y, MAC shares and z bit for bit."""
  agg = aggregator_lib.SecureAggregator(
      spec=SPEC, num_servers=3, max_weight=MAX_WEIGHT,
      adversary=adversary_lib.AdversarySpec(kind=kind, server=1, magnitude=99))
  state = agg.init(jax.random.key(1))
  updates = jax.random.normal(jax.random.key(5), (3, 4)) * 0.2
  weights = jnp.array([16.0, 4.0, 9.0])
  with jax.enable_x64(True):
    seeds = aggregator_lib.round_seeds(jax.random.key(2), state.attempt, 3, 3, 'privateyes')
    _, stats = fused.init_accumulators('privateyes', SPEC, 3, 5, 3)
    acc, _, _ = fused.accumulate(None, stats, updates, jnp.int32(0), weights, seeds,
                                 jnp.float32(MAX_WEIGHT), jnp.int32(0),
                                 mode='privateyes', spec=SPEC, num_servers=3,
                                 prg=agg.prg, chunk=3, num_clients=3)
    previous = jnp.zeros((5, 2), jnp.uint32)
    target = fused.TargetRows(updates, jnp.int32(0), weights, seeds)
    static = dict(mode='privateyes', spec=SPEC, num_servers=3)
    if kind == 'none':
      outs = [fused.local_sums_and_open(acc, state.mac_key_shares, jnp.float32(MAX_WEIGHT),
                                        with_view=view, **static)
              for view in (False, True)]
    else:
      outs = [fused.deviating_sums_and_open(
          acc, state.mac_key_shares, jnp.float32(MAX_WEIGHT), agg.adversary.params(),
          target, previous, previous, state.has_previous, with_view=view, prg=agg.prg,
          **static)[0] for view in (False, True)]
    np.testing.assert_array_equal(
        outs[0].opened, ring.mask_bits(jnp.sum(outs[1].opened_shares, axis=0,
                                               dtype=jnp.uint64), SPEC.ring_bits))
    joint = jnp.asarray([3, 4], jnp.uint64)
    z = [fused.check_values(o.mac_shares, o.opened, state.mac_key_shares, joint,
                            spec=SPEC, with_view=False)[0] for o in outs]
  assert outs[0].opened_shares is None
  for name in ('opened', 'mac_shares', 'mean', 'total_weight', 'weight_sum'):
    np.testing.assert_array_equal(getattr(outs[0], name), getattr(outs[1], name),
                                  err_msg=name)
  np.testing.assert_array_equal(z[0], z[1])
  z_sum = int(np.sum(np.asarray(z[0]), dtype=np.uint64)) % (1 << SPEC.ring_bits)
  assert (z_sum == 0) == (kind == 'none')


def test_dealer_and_online_phases_equal_the_one_pass_sums():
  """The offline (dealer) and online phases, combined, are the one-pass sums bit for bit;
  the dealer's part depends on neither the inputs nor who drops out (the servers retract
  the dropped clients' masks online), and the online part is 1 of 2S arrays."""
  num_clients, num_params, chunk = 11, 7, 3
  updates = jax.random.normal(jax.random.key(3), (num_clients, num_params)) * 0.3
  # Dropouts inside a chunk and in the last chunk's overlap with the previous one
  # (rows 8-10 are computed by chunks 2 and 3; 9 is added by chunk 3 only).
  weights = jnp.array([16.0, 0.0, 4.0, 9.0, 1.0, 2.0, 3.0, 5.0, 0.0, 0.0, 7.0])
  with jax.enable_x64(True):
    seeds = aggregator_lib.round_seeds(jax.random.key(4), 0, num_clients, 3,
                                       'privateyes')
    static = dict(mode='privateyes', spec=SPEC, num_servers=3, prg='threefry2x64',
                  chunk=chunk, num_clients=num_clients)

    def run(phase, block, w=weights):
      _, stats = fused.init_accumulators('privateyes', SPEC, 3, num_params + 1, num_clients)
      acc = None
      for n in range(-(-num_clients // chunk)):
        acc, stats, _ = fused.accumulate(acc, stats, block, jnp.int32(0), w, seeds,
                                         jnp.float32(MAX_WEIGHT), jnp.int32(n), phase=phase,
                                         **static)
      return acc

    no_inputs = jnp.zeros((0, num_params), jnp.float32)
    one_pass = run('all', updates)
    dealer = run('dealer', no_inputs)
    online = run('online', updates)
    _, stats = fused.init_accumulators('privateyes', SPEC, 3, num_params + 1, num_clients)
    retract, _ = fused.retract_dropped(np.asarray(weights), stats, weights, seeds,
                                       jnp.float32(MAX_WEIGHT), num_params, **static)
    # The small retraction chunks sum what the round's chunks would.
    for a, b in zip(retract, run('retract', no_inputs)):
      np.testing.assert_array_equal(a, b)
    combined = fused.combine_phases(dealer, online, retract, spec=SPEC, num_servers=3)
    assert len(one_pass) == 6 and len(dealer) == 5 and len(online) == 1
    for a, b in zip(one_pass, combined):
      np.testing.assert_array_equal(a, b)
    # The dealer's sums are the cohort's whoever submits; without the retraction the
    # dropped client's mask would stay in the sum.
    for a, b in zip(dealer, run('dealer', no_inputs, jnp.ones_like(weights))):
      np.testing.assert_array_equal(a, b)
    unretracted = fused.combine_phases(dealer, online, spec=SPEC, num_servers=3)
    assert not np.array_equal(unretracted[0], one_pass[0])
    other = run('online', updates * 2)
    assert not np.array_equal(other[0], online[0])  # The online sum carries the data.
    with pytest.raises(ValueError, match='phase'):
      fused.accumulate(None, None, updates, jnp.int32(0), weights, seeds,
                       jnp.float32(MAX_WEIGHT), jnp.int32(0), phase='dealer',
                       **{**static, 'mode': 'privateyes_semi_honest'})


def test_view_only_in_rounds_that_record_it():
  """An aggregator that records views skips the coalition's view when a round asks not to."""
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=3, max_weight=MAX_WEIGHT,
                                        record_view=True)
  updates, weights = _inputs()
  state = agg.init(jax.random.key(0))
  _, with_view = agg.apply(state, updates, weights, jax.random.key(1), 0)
  _, without = agg.apply(state, updates, weights, jax.random.key(1), 0, record_view=False)
  assert with_view.view is not None and without.view is None
  np.testing.assert_array_equal(with_view.mean_update, without.mean_update)
