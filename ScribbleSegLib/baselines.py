"""Tools a user would pick instead of ScribbleSeg, run on the same volumes and scribbles.

Both need the ``bench`` extra (scikit-image, scikit-learn); they are imported
inside the functions so the core never depends on them.
"""

from __future__ import annotations

import numpy as np

from .errors import ScribbleSegError


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ScribbleSegError(f"the baselines need the bench extra: pip install 'scribbleseg[bench]' (in a clone: "
                               f"pip install -e '.[bench]') ({exc})")


def random_walker_segment(image: np.ndarray, scribbles: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0),
                          beta: float = 130.0) -> np.ndarray:
    """scikit-image's ``random_walker`` seeded by the scribbles (Grady 2006).

    The RGB volume is scaled to [0, 1]; seeds: 1 heart, 2 background.  Returns a
    uint8 (Z, Y, X) labelmap, 1 = heart.
    """
    segmentation = _require("skimage.segmentation")
    data = image.astype(np.float32) / 255.0
    # random_walker divides squared gradients by spacing**2: spacing in mm (~0.01) would make every
    # weight vanish, so pass it relative to the finest axis.
    spacing = np.asarray(spacing_zyx, float) / min(spacing_zyx)
    labels = segmentation.random_walker(data, scribbles.astype(np.int32), beta=beta, mode="cg_j", tol=1e-3,
                                        channel_axis=-1, spacing=spacing)
    return (labels == 1).astype(np.uint8)


def forest_segment(image: np.ndarray, scribbles: np.ndarray, seed: int = 0, max_samples: int = 50000,
                   sigma_max: float = 8.0) -> np.ndarray:
    """An ilastik-style pixel classifier: a random forest on multiscale filter features.

    Features are scikit-image's ``multiscale_basic_features`` (intensity, edges
    and texture at scales 1 to ``sigma_max``, per colour channel, in 3D); the
    forest (100 trees, as ilastik's default) is trained on the scribbled voxels
    and predicts every voxel.  Returns a uint8 (Z, Y, X) labelmap, 1 = heart.
    """
    feature = _require("skimage.feature")
    ensemble = _require("sklearn.ensemble")
    feats = feature.multiscale_basic_features(image, channel_axis=-1, sigma_min=1.0, sigma_max=sigma_max,
                                              workers=1).astype(np.float32)
    idx = np.flatnonzero(scribbles.ravel() > 0)
    rng = np.random.default_rng(seed)
    if idx.size > max_samples:
        idx = rng.choice(idx, max_samples, replace=False)
    flat = feats.reshape(-1, feats.shape[-1])
    forest = ensemble.RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed)
    forest.fit(flat[idx], (scribbles.ravel()[idx] == 1).astype(np.uint8))
    prob = np.empty(flat.shape[0], np.float32)
    for start in range(0, flat.shape[0], 1 << 20):
        prob[start:start + (1 << 20)] = forest.predict_proba(flat[start:start + (1 << 20)])[:, 1]
    return (prob.reshape(scribbles.shape) > 0.5).astype(np.uint8)
