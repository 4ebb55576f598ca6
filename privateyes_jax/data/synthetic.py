"""Synthetic identities: a procedural renderer of normalised 36x60 eye patches.

Each person has a fixed identity (eye shape, lid opening, canthal tilt, iris size and
brightness, sclera, skin tone and a fixed skin texture, lid crease, brow) and their
own gaze distribution (their own screen region) and head-pose habit. Each sample
draws a gaze direction and head pose from the person's distributions and renders
the eye under random illumination and sensor noise.

Geometry follows the normalised camera of MPIIGaze (see `privateyes_jax.metrics`
for the sign convention): the camera looks at the eye centre, so the iris moves
with the gaze direction in camera space (positive yaw moves it left in the image,
positive pitch up), while the lids and corners move with the head pose; the upper
lid drops when the eye looks down relative to the head. Both gaze and head pose
therefore shape the image, which is why the gaze model takes the head pose too.

How alike people look and how much one person's images vary is a `Difficulty`:
``'easy'`` (the original renderer; the tests' default) or ``'realistic'`` (as hard
to tell apart from coarse layout as real eye crops, issue #14; the demo's). Both
render the same people from the same draws.

Rendering is vectorised NumPy, deterministic from ``(seed, person index)``: person
``i`` looks and behaves the same whatever the number of people requested, so
auxiliary people for the attack's prior (indices past the federation's) are
genuinely other people.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from privateyes_jax.data import base

HEIGHT, WIDTH = 36, 60
# Eyeball radius in pixels of the normalised 36x60 patch: sets how far the iris moves
# per radian of gaze (about 0.38 px per degree, close to real MPIIGaze patches).
EYEBALL_RADIUS = 22.0


@dataclasses.dataclass(frozen=True)
class Identity:
  """Appearance and behaviour parameters of one synthetic person (scalars, texture)."""
  skin_tone: float
  skin_texture: np.ndarray  # [HEIGHT, WIDTH] float32, zero-mean.
  eye_dx: float
  eye_dy: float
  half_width: float
  upper_lid: float
  lower_lid: float
  tilt: float
  iris_radius: float
  iris_brightness: float
  sclera: float
  pupil_fraction: float
  lash_darkness: float
  crease_offset: float
  crease_darkness: float
  brow_height: float
  brow_thickness: float
  brow_darkness: float
  brow_slant: float
  gaze_mean: np.ndarray  # [2] (pitch, yaw) radians.
  gaze_cov: np.ndarray  # [2, 2].
  head_mean: np.ndarray  # [2] (pitch, yaw) radians.
  head_std: float


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """How far apart people are and how much one person's images vary (`DIFFICULTIES`).

  Attributes:
    identity_spread: between-person spread of the appearance parameters, as a
      fraction of their ranges around the range's middle (1: the full ranges).
    texture_spread: amplitude of each person's fixed skin texture (1: as drawn).
    eye_jitter_px: per-image standard deviation (pixels) of the eye's position
      relative to the skin (eye-in-socket and landmark noise).
    crop_shift_px, crop_scale, crop_rotation: per-image standard deviations of a
      misalignment of the whole normalised crop (pixels, relative scale, radians),
      as the landmark-based normalisation of real datasets leaves it.
    gain: range of the per-image global illumination gain.
    max_gradient: upper end of the per-image linear illumination gradient strength.
    gamma_jitter: standard deviation of the log of a per-image gamma (exposure curve).
    lid_jitter: per-image relative standard deviation of the upper lid's opening
      (squinting, partial blinks).
    noise: range of the per-image sensor noise standard deviation.
  """
  identity_spread: float = 1.0
  texture_spread: float = 1.0
  eye_jitter_px: float = 0.6
  crop_shift_px: float = 0.0
  crop_scale: float = 0.0
  crop_rotation: float = 0.0
  gain: tuple[float, float] = (0.65, 1.2)
  max_gradient: float = 0.35
  gamma_jitter: float = 0.0
  lid_jitter: float = 0.0
  noise: tuple[float, float] = (0.01, 0.04)

  @property
  def misaligns(self) -> bool:
    return bool(self.crop_shift_px or self.crop_scale or self.crop_rotation
                or self.gamma_jitter or self.lid_jitter)


# 'easy': the original renderer. Its people are far easier to tell apart than real
#   eyes: 0.87 nearest-centroid accuracy on brightness-normalised 4x4 block means among
#   10 people (`identity_difficulty`), against 0.375 for real lab eye crops.
# 'realistic': calibrated on other people (seeds 1001-1005) to 0.30-0.45 among 10 people,
#   by narrower between-person differences and the within-person variation of real
#   recordings (misaligned crops, lighting, exposure, lids); see docs/DECISIONS.md.
DIFFICULTIES = {
    'easy': Difficulty(),
    'realistic': Difficulty(
        identity_spread=0.3, texture_spread=0.6, eye_jitter_px=0.6,
        crop_shift_px=1.5, crop_scale=0.05, crop_rotation=0.05,
        gain=(0.55, 1.3), max_gradient=0.7, gamma_jitter=0.2, lid_jitter=0.15,
        noise=(0.01, 0.05)),
}
DEFAULT_DIFFICULTY = 'easy'


def get_difficulty(difficulty: 'str | Difficulty') -> Difficulty:
  """The `Difficulty` named ``difficulty`` (or ``difficulty`` itself)."""
  if isinstance(difficulty, Difficulty):
    return difficulty
  name = difficulty or DEFAULT_DIFFICULTY
  if name not in DIFFICULTIES:
    raise base.DatasetError(f'Unknown synthetic difficulty {difficulty!r}; available: '
                            f'{", ".join(DIFFICULTIES)}.')
  return DIFFICULTIES[name]


def _smooth_noise(rng: np.random.Generator, grid: tuple[int, int]) -> np.ndarray:
  """Low-frequency noise: a coarse random grid bilinearly upsampled to the patch."""
  coarse = rng.standard_normal(grid)
  ys = np.linspace(0, grid[0] - 1, HEIGHT)
  xs = np.linspace(0, grid[1] - 1, WIDTH)
  y0 = np.clip(np.floor(ys).astype(int), 0, grid[0] - 2)
  x0 = np.clip(np.floor(xs).astype(int), 0, grid[1] - 2)
  wy = (ys - y0)[:, None]
  wx = (xs - x0)[None, :]
  c = coarse
  top = c[y0][:, x0] * (1 - wx) + c[y0][:, x0 + 1] * wx
  bot = c[y0 + 1][:, x0] * (1 - wx) + c[y0 + 1][:, x0 + 1] * wx
  return (top * (1 - wy) + bot * wy).astype(np.float32)


# Appearance parameters in the order they are drawn, with their ranges (uniform).
# The order is part of the renderer's determinism: person i of seed s looks the same
# in every version that keeps it.
_APPEARANCE = (
    ('skin_tone', 0.35, 0.82),
    ('eye_dx', -3.0, 3.0),
    ('eye_dy', -2.0, 2.5),
    ('half_width', 16.5, 23.0),
    ('upper_lid', 6.0, 10.5),
    ('lower_lid', 3.0, 6.0),
    ('tilt', -0.13, 0.13),
    ('iris_radius', 6.0, 9.5),
    ('iris_brightness', 0.08, 0.55),
    ('sclera', 0.72, 0.95),
    ('pupil_fraction', 0.3, 0.5),
    ('lash_darkness', 0.25, 0.8),
    ('crease_offset', 2.5, 5.5),
    ('crease_darkness', 0.05, 0.35),
    ('brow_height', 11.0, 16.0),
    ('brow_thickness', 1.8, 4.5),
    ('brow_darkness', 0.15, 0.6),
    ('brow_slant', -0.15, 0.15),
)


def make_identity(seed: int, person_index: int,
                  difficulty: 'str | Difficulty' = 'easy') -> Identity:
  """The identity of person ``person_index``; a pure function of its arguments.

  The same random draws make person ``i`` under every difficulty; ``difficulty``
  only pulls the appearance parameters towards the middle of their ranges
  (`Difficulty.identity_spread`, `Difficulty.texture_spread`), so a person keeps
  their traits, less pronounced. Gaze and head-pose habits are never shrunk.
  """
  settings = get_difficulty(difficulty)
  rng = np.random.default_rng([seed, person_index, 0])
  u = rng.uniform
  texture = 0.07 * _smooth_noise(rng, (5, 8)) + 0.025 * _smooth_noise(rng, (12, 20))
  texture -= texture.mean()
  # Everyone looks at a similar screen, each with their own habits: per-person means
  # differ by up to ~15 degrees and the distributions overlap, as in MPIIGaze.
  sd_pitch, sd_yaw = u(0.07, 0.12), u(0.09, 0.16)
  rho = u(-0.5, 0.5)
  cov = np.array([[sd_pitch**2, rho * sd_pitch * sd_yaw],
                  [rho * sd_pitch * sd_yaw, sd_yaw**2]])
  spread = settings.identity_spread
  appearance = {}
  for name, lo, hi in _APPEARANCE:
    value, mid = u(lo, hi), 0.5 * (lo + hi)
    appearance[name] = value if spread == 1.0 else mid + spread * (value - mid)
  return Identity(
      skin_texture=(settings.texture_spread * texture).astype(np.float32),
      **appearance,
      gaze_mean=np.array([u(-0.28, 0.0), u(-0.25, 0.25)]),
      gaze_cov=cov,
      head_mean=np.array([u(-0.15, 0.15), u(-0.25, 0.25)]),
      head_std=u(0.03, 0.08),
  )


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # Logistic, without overflow warnings.


def _misalign(img: np.ndarray, rng: np.random.Generator, settings: Difficulty) -> np.ndarray:
  """``[N, H, W]`` images seen through a slightly shifted, scaled and rotated crop.

  Bilinear resampling about the patch centre, edges clamped (the skin continues).
  """
  n = img.shape[0]
  shift = rng.normal(0.0, settings.crop_shift_px, (n, 2))
  scale = np.exp(rng.normal(0.0, settings.crop_scale, n))
  angle = rng.normal(0.0, settings.crop_rotation, n)
  cy, cx = (HEIGHT - 1) / 2, (WIDTH - 1) / 2
  v, uu = np.meshgrid(np.arange(HEIGHT) - cy, np.arange(WIDTH) - cx, indexing='ij')
  cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
  src_v = np.clip(cy + cos * v - sin * uu - shift[:, 0, None, None], 0, HEIGHT - 1)
  src_u = np.clip(cx + sin * v + cos * uu - shift[:, 1, None, None], 0, WIDTH - 1)
  v0 = np.minimum(np.floor(src_v).astype(int), HEIGHT - 2)
  u0 = np.minimum(np.floor(src_u).astype(int), WIDTH - 2)
  wv, wu = src_v - v0, src_u - u0
  k = np.arange(n)[:, None, None]
  return ((img[k, v0, u0] * (1 - wu) + img[k, v0, u0 + 1] * wu) * (1 - wv)
          + (img[k, v0 + 1, u0] * (1 - wu) + img[k, v0 + 1, u0 + 1] * wu) * wv)


def render(identity: Identity, gaze: np.ndarray, head_pose: np.ndarray,
           rng: np.random.Generator, difficulty: 'str | Difficulty' = 'easy',
           variation_rng: np.random.Generator | None = None) -> np.ndarray:
  """Renders ``[N, 36, 60]`` float32 images in [0, 1] for one person.

  Args:
    identity: the person (made with the same ``difficulty``).
    gaze: ``[N, 2]`` (pitch, yaw) radians in normalised camera space.
    head_pose: ``[N, 2]`` (pitch, yaw) radians.
    rng: source of per-sample illumination, jitter and noise.
    difficulty: the within-person variation (`Difficulty`); ``'easy'`` draws
      nothing from ``variation_rng``.
    variation_rng: source of the variation that ``'easy'`` lacks (crop misalignment,
      exposure, lids), kept apart from ``rng`` so that adding it leaves the other
      draws as they were; default ``rng``.
  """
  settings = get_difficulty(difficulty)
  variation_rng = variation_rng if variation_rng is not None else rng
  n = len(gaze)
  col = lambda a: np.asarray(a, np.float32).reshape(n, 1, 1)
  v, uu = np.meshgrid(np.arange(HEIGHT, dtype=np.float32),
                      np.arange(WIDTH, dtype=np.float32), indexing='ij')
  v, uu = v[None], uu[None]
  pitch, yaw = col(gaze[:, 0]), col(gaze[:, 1])
  h_pitch, h_yaw = col(head_pose[:, 0]), col(head_pose[:, 1])
  idn = identity

  # Eye contour follows the head: shifted and foreshortened by head yaw/pitch.
  jitter = rng.normal(0.0, settings.eye_jitter_px, size=(n, 2))
  cu = WIDTH / 2 + idn.eye_dx - 7.0 * np.sin(h_yaw) + col(jitter[:, 0])
  cv = HEIGHT / 2 + idn.eye_dy + 6.0 * np.sin(h_pitch) + col(jitter[:, 1])
  a = idn.half_width * (0.8 + 0.2 * np.cos(2.0 * h_yaw))
  x = (uu - cu) / a
  base_line = cv + idn.tilt * (uu - cu)
  bulge = np.clip(1.0 - x**2, 0.0, None)
  # The upper lid follows the eye's rotation within the head: lower when looking down.
  eye_in_head_pitch = pitch - h_pitch
  lid_drop = 9.0 * np.clip(-eye_in_head_pitch, 0.0, None) - 3.0 * np.clip(eye_in_head_pitch, 0.0, None)
  upper_lid = idn.upper_lid
  if settings.lid_jitter:
    upper_lid = upper_lid * col(np.exp(variation_rng.normal(0.0, settings.lid_jitter, n)))
  upper = base_line - np.clip(upper_lid - lid_drop, 1.0, None) * bulge
  lower = base_line + idn.lower_lid * bulge
  soft = 0.7
  eye_mask = (_sigmoid((v - upper) / soft) * _sigmoid((lower - v) / soft)
              * _sigmoid((1.0 - np.abs(x)) * a / soft))

  # Iris and pupil follow the gaze in camera space (camera looks at the eye centre).
  iu = WIDTH / 2 + idn.eye_dx - EYEBALL_RADIUS * np.cos(pitch) * np.sin(yaw) + col(jitter[:, 0])
  iv = HEIGHT / 2 + idn.eye_dy - EYEBALL_RADIUS * np.sin(pitch) + col(jitter[:, 1])
  dist = np.sqrt((uu - iu) ** 2 + (v - iv) ** 2)
  r = idn.iris_radius
  iris = _sigmoid((r - dist) / 0.6)
  pupil = _sigmoid((r * idn.pupil_fraction - dist) / 0.5)
  limbus = np.exp(-((dist - r * 0.92) ** 2) / 1.5)
  sclera = idn.sclera * (1.0 - 0.25 * np.abs(x) ** 3)
  eye = sclera * (1 - iris) + idn.iris_brightness * iris
  eye = eye * (1 - 0.35 * limbus * iris) * (1 - 0.85 * pupil)
  # Skin above/below the eye, with the person's fixed texture.
  skin = idn.skin_tone * (1.0 + idn.skin_texture[None])
  crease_v = upper - idn.crease_offset * (0.5 + bulge)
  crease = np.exp(-((v - crease_v) ** 2) / 1.2) * (np.abs(x) < 1.1)
  skin = skin * (1 - idn.crease_darkness * crease)
  brow_v = cv - idn.brow_height + idn.brow_slant * (uu - cu) + 2.5 * x**2
  brow = _sigmoid((idn.brow_thickness - np.abs(v - brow_v)) / 0.8) * _sigmoid((1.25 - np.abs(x)) * 6)
  skin = skin * (1 - idn.brow_darkness * brow)
  img = skin * (1 - eye_mask) + eye * eye_mask
  lash = np.exp(-((v - upper + 0.6) ** 2) / 0.8) * _sigmoid((1.0 - np.abs(x)) * a / soft)
  img = img * (1 - idn.lash_darkness * lash)

  # Illumination: global gain, a linear gradient in a random direction, a glint.
  gain = col(rng.uniform(*settings.gain, size=n))
  angle = rng.uniform(0, 2 * np.pi, size=n)
  strength = col(rng.uniform(0.0, settings.max_gradient, size=n))
  grad = (np.cos(angle)[:, None, None] * (uu - WIDTH / 2) / WIDTH
          + np.sin(angle)[:, None, None] * (v - HEIGHT / 2) / HEIGHT)
  img = img * gain * (1.0 + strength * grad)
  gu = iu + 0.35 * r * col(np.cos(angle))
  gv = iv - 0.35 * r * col(np.abs(np.sin(angle)))
  glint = np.exp(-((uu - gu) ** 2 + (v - gv) ** 2) / 1.1) * eye_mask
  img = img + 0.5 * glint
  if settings.misaligns:
    img = _misalign(img, variation_rng, settings)
    gamma = np.exp(variation_rng.normal(0.0, settings.gamma_jitter, n))
    img = np.clip(img, 0.0, 1.0) ** col(gamma)
  img = img + col(rng.uniform(*settings.noise, size=n)) * rng.standard_normal(img.shape)
  return np.clip(img, 0.0, 1.0).astype(np.float32)


def sample_person(seed: int, person_index: int, num_samples: int, chunk: int = 1024,
                  difficulty: 'str | Difficulty' = 'easy') -> base.PersonData:
  """Draws and renders ``num_samples`` samples of person ``person_index``."""
  identity = make_identity(seed, person_index, difficulty)
  rng = np.random.default_rng([seed, person_index, 1])
  variation_rng = np.random.default_rng([seed, person_index, 2])
  gaze = rng.multivariate_normal(identity.gaze_mean, identity.gaze_cov, size=num_samples)
  gaze = np.clip(gaze, [-0.7, -0.8], [0.5, 0.8])
  head = identity.head_mean + identity.head_std * rng.standard_normal((num_samples, 2))
  images = np.empty((num_samples, HEIGHT, WIDTH, 1), np.uint8)
  for start in range(0, num_samples, chunk):
    sl = slice(start, start + chunk)
    images[sl, ..., 0] = np.round(255 * render(identity, gaze[sl], head[sl], rng, difficulty,
                                                 variation_rng)).astype(np.uint8)
  return base.PersonData(
      person=f'p{person_index:02d}',
      images=images,
      labels=gaze.astype(np.float32),
      head_pose=head.astype(np.float32),
      sample_id=np.arange(num_samples, dtype=np.int64),
  )


def make_dataset(num_people: int = 15, samples_per_person: int = 600, seed: int = 0,
                 first_person: int = 0,
                 difficulty: 'str | Difficulty' = 'easy') -> base.GazeDataset:
  """The synthetic identities dataset: people ``first_person .. first_person+num_people-1``.

  ``difficulty``: ``'easy'`` (the original renderer, the default for tests) or
  ``'realistic'`` (people as hard to tell apart as real eyes; the demo's); see
  `DIFFICULTIES`.
  """
  if num_people < 1:
    raise base.DatasetError(f'num_people must be >= 1, got {num_people}.')
  if samples_per_person < 1:
    raise base.DatasetError(f'samples_per_person must be >= 1, got {samples_per_person}.')
  if first_person < 0:
    raise base.DatasetError(f'first_person must be >= 0, got {first_person}.')
  get_difficulty(difficulty)  # Fail fast on an unknown name.
  people = tuple(sample_person(seed, i, samples_per_person, difficulty=difficulty)
                 for i in range(first_person, first_person + num_people))
  return base.GazeDataset(name='synthetic', people=people, label_kind='gaze')


def from_config(data_config) -> base.GazeDataset:
  """`make_dataset` from a data config (``num_people``, ``samples_per_person``, ``seed``,
  and optionally ``first_person`` (0) and ``difficulty`` (``'easy'``))."""
  return make_dataset(data_config.num_people, data_config.samples_per_person, data_config.seed,
                      first_person=data_config.get('first_person', 0) or 0,
                      difficulty=data_config.get('difficulty', '') or DEFAULT_DIFFICULTY)
