"""Data normalisation of a face image (Sugano et al. CVPR 2014; Zhang et al. ETRA 2018).

A virtual camera is rotated to look straight at the face centre, with its x axis
parallel to the head's x axis (so head roll is cancelled), and moved to a fixed
distance; the image is warped into that camera and the gaze direction is rotated
with it. Following the "modified" normalisation of Zhang et al. (ETRA 2018), the
distance scaling applies to the image only, the gaze is only rotated.

The warp is computed as an inverse map (output pixel -> undistorted input pixel ->
distorted input pixel, OpenCV's k1, k2, p1, p2, k3 lens model) and sampled
bilinearly, so undistortion and warping are one resampling step (OpenCV-based code
does ``cv2.undistort`` then ``cv2.warpPerspective``: two).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# The normalised face camera of Zhang et al. (ETRA 2018; X-Shi/Data-Normalization-
# Gaze-Estimation): focal length 960 px for a 224x224 image, 600 mm from the face.
REFERENCE_SIZE = 224
FOCAL_AT_REFERENCE = 960.0
DISTANCE_MM = 600.0


@dataclasses.dataclass(frozen=True)
class NormalizedView:
  """The normalising transformation of one sample.

  Attributes:
    rotation: ``[3, 3]`` camera -> normalised camera rotation (rows: right, down, forward).
    warp: ``[3, 3]`` homography from undistorted input pixels to output pixels.
    camera: ``[3, 3]`` intrinsics of the normalised camera.
  """
  rotation: np.ndarray
  warp: np.ndarray
  camera: np.ndarray


def normalizing_view(center: np.ndarray, head_rotation: np.ndarray, camera_matrix: np.ndarray,
                     output_hw: tuple[int, int], focal: float | None = None,
                     distance: float = DISTANCE_MM) -> NormalizedView:
  """The virtual camera looking at ``center`` (mm, camera coordinates) from ``distance``.

  Args:
    center: ``[3]`` the face centre in the real camera's coordinates (mm).
    head_rotation: ``[3, 3]`` head -> camera rotation; its x axis fixes the roll.
    camera_matrix: ``[3, 3]`` the real camera's intrinsics.
    output_hw: ``(height, width)`` of the normalised image.
    focal: the normalised focal length in pixels; default 960 scaled to the output
      size (the field of view of the 224x224 reference).
    distance: the normalised distance in mm.
  """
  height, width = output_hw
  if focal is None:
    focal = FOCAL_AT_REFERENCE * min(height, width) / REFERENCE_SIZE
  center = np.asarray(center, np.float64).reshape(3)
  current = float(np.linalg.norm(center))
  forward = center / current
  down = np.cross(forward, np.asarray(head_rotation, np.float64)[:, 0])
  down /= np.linalg.norm(down)
  right = np.cross(down, forward)
  right /= np.linalg.norm(right)
  rotation = np.stack([right, down, forward])
  scale = np.diag([1.0, 1.0, distance / current])
  camera = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
  warp = camera @ scale @ rotation @ np.linalg.inv(np.asarray(camera_matrix, np.float64))
  return NormalizedView(rotation=rotation, warp=warp, camera=camera)


def distort_pixels(points: np.ndarray, camera_matrix: np.ndarray,
                   dist_coeffs: np.ndarray) -> np.ndarray:
  """``[N, 2]`` ideal (undistorted) pixel positions -> where the lens images them.

  OpenCV's model with coefficients ``(k1, k2, p1, p2[, k3])``.
  """
  k = np.zeros(5)
  coeffs = np.asarray(dist_coeffs, np.float64).ravel()[:5]
  k[:len(coeffs)] = coeffs
  k1, k2, p1, p2, k3 = k
  fx, fy = camera_matrix[0, 0], camera_matrix[1, 1]
  cx, cy = camera_matrix[0, 2], camera_matrix[1, 2]
  x = (points[:, 0] - cx) / fx
  y = (points[:, 1] - cy) / fy
  r2 = x * x + y * y
  radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
  xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
  yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
  return np.stack([xd * fx + cx, yd * fy + cy], axis=1)


def warp_image(image: np.ndarray, view: NormalizedView, camera_matrix: np.ndarray,
               dist_coeffs: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
  """Resamples ``image`` (``[H, W]`` or ``[H, W, C]`` uint8) into the normalised camera."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  height, width = output_hw
  v, u = np.mgrid[0:height, 0:width].astype(np.float64)
  out_pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
  src = np.linalg.inv(view.warp) @ out_pixels
  src = (src[:2] / src[2]).T
  src = distort_pixels(src, np.asarray(camera_matrix, np.float64), dist_coeffs)
  coords = [src[:, 1].reshape(height, width), src[:, 0].reshape(height, width)]
  image = np.asarray(image)
  channels = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]
  warped = [ndimage.map_coordinates(ch.astype(np.float32), coords, order=1, mode='constant',
                                    cval=0.0) for ch in channels]
  out = np.stack(warped, axis=-1) if image.ndim == 3 else warped[0]
  return np.clip(np.round(out), 0, 255).astype(np.uint8)
