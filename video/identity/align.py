"""Five-point face alignment to the 112×112 ArcFace template.

ArcFace embeddings are only comparable when every face is warped onto the same
template (eye centres, nose tip, mouth corners at fixed pixels), so alignment is a
least-squares similarity transform (rotation, uniform scale, translation; Umeyama
1991) from the detector's five keypoints onto that template, then one affine warp.
Written here rather than taken from `insightface.utils.face_align` because that
module goes through a scikit-image call deprecated in 0.26.
"""

from __future__ import annotations

import numpy as np

#: Keypoints of the 112×112 ArcFace template: left eye, right eye, nose, left/right mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 matrix M of the similarity transform that best maps `src` onto `dst`.

    Umeyama's closed form: centre both point sets, take the SVD of their covariance,
    the rotation is U·diag(1, det)·Vᵀ (det fixes reflections), the scale is the
    ratio of explained variance to source variance.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    assert src.shape == dst.shape and src.shape[1] == 2
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = float((s * d).sum() / src_var) if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp `image` (H, W, 3 uint8) so the five `keypoints` land on the ArcFace template.

    `size` must be a multiple of 112 (the template is scaled with it).
    """
    import cv2

    if size % 112:
        raise ValueError(f"aligned face size must be a multiple of 112, got {size}")
    matrix = similarity_transform(keypoints, ARCFACE_TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
