r"""GazeNet for many clients at once, each with its own weights (batched GEMMs).

Federated simulation trains ``C`` clients side by side, every one with its own
copy of the `gaze.GazeNet` weights. ``jax.vmap`` of ``model.apply`` over the
clients turns each per-client convolution kernel into a grouped convolution,
which XLA runs slower than a sequential per-client loop (DESIGN.md §7: 0.78x the
loop at 256 clients on an H200). Here the convolutions are written as im2col
matrix products whose *client axis is a batch dimension of* ``dot_general``, so
each client's convolution is one GEMM ``[B*H*W, kh*kw*Cin] x [kh*kw*Cin, Cout]``
and all ``C`` of them are a single batched GEMM:

  * patches are built by padding and stacking the ``kh*kw`` shifted slices, a
    single XLA fusion (``lax.conv_general_dilated_patches`` is kept as
    ``patch_impl='conv'`` for comparison: it is a real convolution with a one-hot
    kernel, and its autodiff transpose another convolution, ~7x slower than the
    whole training step on CPU, hence the hand-written VJP below);
  * bias + 2x2 max-pool is one fused pass over the convolution output that also
    writes the int8 position of each window's maximum, so the backward pass keeps
    1 byte per pooled value instead of the float32 pre-pool activations (or the
    float32 "where is the max" mask that autodiff of ``max`` would save);
  * the convolution + pool block has a hand-written VJP: the weight gradient is a
    batched GEMM accumulated in float32 (``preferred_element_type``), the input
    gradient a GEMM followed by a fused col2im (sum of ``kh*kw`` shifted pads);
  * activations and convolution GEMMs run in ``compute_dtype`` (e.g. bfloat16,
    halving the im2col traffic that dominates the convolutions); parameters,
    accumulation and the two dense layers stay float32 (the dense layers are
    bound by reading the per-client 3.4M weights, which a per-step cast would
    only add to).

Gradients follow flax exactly, including ties inside a pooling window: the
first maximum in row-major window order gets the gradient, as XLA's
``select_and_scatter`` does for ``nn.max_pool``.

Typical use, per-client losses and gradients of stacked parameters::

  params = jax.vmap(lambda k: model.init(k, x0, h0)['params'])(keys)  # [C, ...]
  losses = client_losses(params, batch)                                # [C]
  grads = jax.grad(lambda p: client_losses(p, batch).sum())(params)    # [C, ...]

The losses are separable per client, so the gradient of their sum with respect
to the stacked parameters is the stack of per-client gradients.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from privateyes_jax.models import gaze

Params = Any  # GazeNet params pytree with a leading client axis on every leaf.

_PADDINGS = ('SAME', 'VALID')
_PATCH_IMPLS = ('slices', 'conv')


def _conv_padding(padding: str, kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """``((lo_h, hi_h), (lo_w, hi_w))`` as flax/XLA pad for stride-1 'SAME'/'VALID'."""
  if padding == 'VALID':
    return (0, 0), (0, 0)
  return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)


def _patches(x, kh: int, kw: int, pads, patch_impl: str):
  """im2col: ``[C, B, H, W, Cin] -> [C, B*Ho*Wo, kh*kw*Cin]``.

  Column order is ``(i, j, cin)`` for 'slices' (the HWIO kernel's own order, so
  the kernel is a plain reshape) and ``(cin, i, j)`` for 'conv' (the order of
  ``lax.conv_general_dilated_patches``).
  """
  c, b, h, w, cin = x.shape
  (lo_h, hi_h), (lo_w, hi_w) = pads
  ho, wo = h + lo_h + hi_h - kh + 1, w + lo_w + hi_w - kw + 1
  if patch_impl == 'conv':
    p = lax.conv_general_dilated_patches(
        x.reshape(c * b, h, w, cin), (kh, kw), (1, 1), pads,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return p.reshape(c, b * ho * wo, cin * kh * kw)
  xp = jnp.pad(x, ((0, 0), (0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
  p = jnp.stack([xp[:, :, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)],
                axis=-2)
  return p.reshape(c, b * ho * wo, kh * kw * cin)


def _col2im(dp, x_shape, kh: int, kw: int, pads, patch_impl: str):
  """Transpose of `_patches`: ``[C, B*Ho*Wo, K] -> [C, B, H, W, Cin]``.

  Each of the ``kh*kw`` patch columns is shifted back to where it was read with
  ``lax.pad`` (negative padding crops) and the shifts are summed: elementwise ops
  XLA fuses into one loop, where the autodiff of a stack of slices would give the
  same and that of ``conv_general_dilated_patches`` a transposed convolution.
  """
  c, b, h, w, cin = x_shape
  (lo_h, hi_h), (lo_w, hi_w) = pads
  ho, wo = h + lo_h + hi_h - kh + 1, w + lo_w + hi_w - kw + 1
  if patch_impl == 'conv':
    dp = dp.reshape(c, b, ho, wo, cin, kh * kw)
    dp = jnp.swapaxes(dp, -1, -2)
  dp = dp.reshape(c, b, ho, wo, kh * kw, cin)
  zero = jnp.zeros((), dp.dtype)
  dx = None
  for i in range(kh):
    for j in range(kw):
      # Output row `r` read input row `r + i - lo_h`.
      shifted = lax.pad(dp[:, :, :, :, i * kw + j, :], zero,
                        ((0, 0, 0), (0, 0, 0), (i - lo_h, h - ho - (i - lo_h), 0),
                         (j - lo_w, w - wo - (j - lo_w), 0), (0, 0, 0)))
      dx = shifted if dx is None else dx + shifted
  return dx


def _kernel_matrix(kernel, patch_impl: str):
  """HWIO kernels ``[C, kh, kw, Cin, Cout]`` -> ``[C, K, Cout]`` in `_patches` order."""
  c, kh, kw, cin, cout = kernel.shape
  if patch_impl == 'conv':
    kernel = jnp.transpose(kernel, (0, 3, 1, 2, 4))
  return kernel.reshape(c, kh * kw * cin, cout)


def _kernel_from_matrix(dk, kernel_shape, patch_impl: str):
  """Inverse of `_kernel_matrix`."""
  c, kh, kw, cin, cout = kernel_shape
  if patch_impl == 'conv':
    return jnp.transpose(dk.reshape(c, cin, kh, kw, cout), (0, 2, 3, 1, 4))
  return dk.reshape(kernel_shape)


# Contract the patch columns, batch over clients: [C, M, K] x [C, K, N] -> [C, M, N].
_CONV_DIMS = (((2,), (1,)), ((0,), (0,)))


def _pool_windows(z):
  """``[C, B, H, W, N] -> [C, B, H//2, 2, W//2, 2, N]`` (odd edges dropped, as 'VALID')."""
  c, b, h, w, n = z.shape
  z = z[:, :, :h // 2 * 2, :w // 2 * 2, :]
  return z.reshape(c, b, h // 2, 2, w // 2, 2, n)


def _max_pool_with_index(z):
  """2x2 stride-2 max-pool and the int8 window position (0..3) of each maximum.

  The position is the first maximum in row-major window order, the element XLA's
  ``select_and_scatter`` (flax ``nn.max_pool``'s gradient) routes the gradient to.
  """
  zw = _pool_windows(z)
  v = [zw[:, :, :, di, :, dj, :] for di in range(2) for dj in range(2)]
  y = jnp.maximum(jnp.maximum(v[0], v[1]), jnp.maximum(v[2], v[3]))
  idx = jnp.where(v[0] == y, 0, jnp.where(v[1] == y, 1, jnp.where(v[2] == y, 2, 3)))
  return y, idx.astype(jnp.int8)


def _max_unpool(g, idx, z_shape):
  """Transpose of `_max_pool_with_index`: ``g`` to each window's chosen position."""
  c, b, h, w, n = z_shape
  hp, wp = h // 2, w // 2
  pos = lax.broadcasted_iota(jnp.int8, (1, 1, 1, 2, 1, 2, 1), 3) * 2 + (
      lax.broadcasted_iota(jnp.int8, (1, 1, 1, 2, 1, 2, 1), 5))
  dz = jnp.where(idx[:, :, :, None, :, None, :] == pos, g[:, :, :, None, :, None, :],
                 jnp.zeros((), g.dtype))
  dz = dz.reshape(c, b, hp * 2, wp * 2, n)
  if (hp * 2, wp * 2) != (h, w):
    dz = jnp.pad(dz, ((0, 0), (0, 0), (0, h - hp * 2), (0, w - wp * 2), (0, 0)))
  return dz


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv_pool(x, kernel, bias, padding: str, compute_dtype, patch_impl: str):
  """Per-client stride-1 convolution, bias and 2x2 max-pool.

  Args:
    x: ``[C, B, H, W, Cin]`` activations in ``compute_dtype``.
    kernel: ``[C, kh, kw, Cin, Cout]`` float32 HWIO kernels, one per client.
    bias: ``[C, Cout]`` float32.
    padding: 'SAME' or 'VALID'.
    compute_dtype: dtype of the GEMM operands and of the output.
    patch_impl: 'slices' or 'conv', see `_patches`.

  Returns:
    ``[C, B, Ho//2, Wo//2, Cout]`` in ``compute_dtype``.
  """
  return _conv_pool_fwd(x, kernel, bias, padding, compute_dtype, patch_impl)[0]


def _conv_pool_fwd(x, kernel, bias, padding, compute_dtype, patch_impl):
  c, b, h, w, _ = x.shape
  _, kh, kw, _, cout = kernel.shape
  pads = _conv_padding(padding, kh, kw)
  ho, wo = h + sum(pads[0]) - kh + 1, w + sum(pads[1]) - kw + 1
  kernel = kernel.astype(compute_dtype)
  km = _kernel_matrix(kernel, patch_impl)
  # The GEMM output is written and read once more by the pooling pass, so it is
  # kept in compute_dtype; GPU GEMMs accumulate bfloat16 products in float32.
  z = lax.dot_general(_patches(x, kh, kw, pads, patch_impl), km, _CONV_DIMS,
                      preferred_element_type=compute_dtype)
  # The bias is added before the max (as flax does) so ties break identically;
  # it fuses into the pooling pass either way.
  z = z.reshape(c, b, ho, wo, cout) + bias[:, None, None, None, :]
  y, idx = _max_pool_with_index(z)
  return y.astype(compute_dtype), (x, kernel, idx)


def _conv_pool_bwd(padding, compute_dtype, patch_impl, res, g):
  x, kernel, idx = res  # kernel already in compute_dtype.
  c, b, h, w, _ = x.shape
  _, kh, kw, _, cout = kernel.shape
  pads = _conv_padding(padding, kh, kw)
  ho, wo = h + sum(pads[0]) - kh + 1, w + sum(pads[1]) - kw + 1
  km = _kernel_matrix(kernel, patch_impl)
  dbias = jnp.sum(g.astype(jnp.float32), axis=(1, 2, 3))
  dz = _max_unpool(g.astype(compute_dtype), idx, (c, b, ho, wo, cout)).reshape(c, b * ho * wo, cout)
  patches = _patches(x, kh, kw, pads, patch_impl)
  # Weight gradient: [C, K, M] x [C, M, N], the client axis again a batch axis;
  # float32 accumulation over the B*Ho*Wo positions.
  dkm = lax.dot_general(patches, dz, (((1,), (1,)), ((0,), (0,))),
                        preferred_element_type=jnp.float32)
  dkernel = _kernel_from_matrix(dkm, kernel.shape, patch_impl)
  # Input gradient: [C, M, N] x [C, K, N] -> [C, M, K], then col2im. XLA drops it
  # when nothing consumes it (the first block's input is the image).
  dp = lax.dot_general(dz, km, (((2,), (2,)), ((0,), (0,))),
                       preferred_element_type=compute_dtype)
  dx = _col2im(dp, x.shape, kh, kw, pads, patch_impl).astype(x.dtype)
  return dx, dkernel, dbias


_conv_pool.defvjp(_conv_pool_fwd, _conv_pool_bwd)


def _check_params(params: Params, conv_features: Sequence[int], padding: str,
                  patch_impl: str) -> int:
  """Validates the stacked params against the configuration; returns ``C``."""
  if padding not in _PADDINGS:
    raise ValueError(f'padding must be one of {_PADDINGS}, got {padding!r}.')
  if patch_impl not in _PATCH_IMPLS:
    raise ValueError(f'patch_impl must be one of {_PATCH_IMPLS}, got {patch_impl!r}.')
  expected = {f'Conv_{i}' for i in range(len(conv_features))} | {'Dense_0', 'Dense_1'}
  if set(params) != expected:
    raise ValueError(f'Expected GazeNet params {sorted(expected)}, got {sorted(params)}.')
  num_clients = params['Dense_1']['bias'].shape[0]
  for i, features in enumerate(conv_features):
    kernel = params[f'Conv_{i}']['kernel']
    if kernel.ndim != 5 or kernel.shape[0] != num_clients or kernel.shape[-1] != features:
      raise ValueError(f'Conv_{i} kernel must be [clients={num_clients}, kh, kw, Cin, '
                       f'{features}], got {kernel.shape}.')
  return num_clients


def gazenet_apply_clients(params: Params, images, head_pose, *,
                          conv_features: Sequence[int] = (20, 50), padding: str = 'SAME',
                          compute_dtype=jnp.float32, patch_impl: str = 'slices'):
  """`gaze.GazeNet` forward pass for ``C`` clients, each with its own weights.

  Equals ``jax.vmap(lambda p, x, h: model.apply({'params': p}, x, h))(params,
  images, head_pose)`` for ``model = GazeNet(conv_features, hidden, padding)``
  (``hidden`` is read from the params), up to float rounding, and so do its
  gradients.

  Args:
    params: GazeNet params with a leading client axis on every leaf, e.g.
      ``{'Conv_0': {'kernel': [C, 5, 5, 1, 20], 'bias': [C, 20]}, 'Conv_1': ...,
      'Dense_0': {'kernel': [C, 6750, 500], ...}, 'Dense_1': ...}``.
    images: uint8 ``[C, B, H, W, Cin]`` eye patches (36x60x1 for MPIIGaze).
    head_pose: ``[C, B, 2]`` head pose angles.
    conv_features: output channels of each convolution, as in GazeNet.
    padding: 'SAME' or 'VALID', as in GazeNet.
    compute_dtype: dtype of the convolution activations and GEMM operands
      (float32 or bfloat16); accumulation, params and dense layers are float32.
    patch_impl: 'slices' (default, fused shifted slices) or 'conv'
      (``lax.conv_general_dilated_patches``) for the im2col step.

  Returns:
    float32 ``[C, B, 2]`` (pitch, yaw) predictions.

  Raises:
    ValueError: for a padding, patch_impl or params layout it does not handle.
  """
  _check_params(params, conv_features, padding, patch_impl)
  x = gaze.scale_images(images).astype(compute_dtype)
  for i in range(len(conv_features)):
    layer = params[f'Conv_{i}']
    x = _conv_pool(x, layer['kernel'], layer['bias'], padding, compute_dtype, patch_impl)
  c, b = x.shape[:2]
  # Flattened in (h, w, channel) order, as flax's reshape, so Dense_0's kernel is
  # used as stored.
  x = x.reshape(c, b, -1).astype(jnp.float32)
  dense0, dense1 = params['Dense_0'], params['Dense_1']
  x = jnp.einsum('cbi,cio->cbo', x, dense0['kernel']) + dense0['bias'][:, None, :]
  x = jax.nn.relu(x)
  x = jnp.concatenate([x, head_pose.astype(jnp.float32)], axis=-1)
  return jnp.einsum('cbi,cio->cbo', x, dense1['kernel']) + dense1['bias'][:, None, :]


def client_losses(params: Params, batch, **model_kwargs) -> jax.Array:
  """Per-client `training.loss_fn` (masked mean L1) of `gazenet_apply_clients`.

  Args:
    params: stacked GazeNet params, leading client axis ``C``.
    batch: dict with ``images`` uint8 ``[C, B, H, W, 1]``, ``head_pose``
      ``[C, B, 2]``, ``labels`` ``[C, B, 2]``, ``mask`` ``[C, B]``.
    **model_kwargs: passed to `gazenet_apply_clients`.

  Returns:
    float32 ``[C]``: client ``c``'s loss depends only on ``params[c]``, so
    ``jax.grad`` of the sum gives each client's own gradient.
  """
  pred = gazenet_apply_clients(params, batch['images'], batch['head_pose'], **model_kwargs)
  per_sample = jnp.sum(jnp.abs(pred - batch['labels']), axis=-1)
  mask = batch['mask']
  return jnp.sum(per_sample * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
