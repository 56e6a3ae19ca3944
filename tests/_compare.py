"""How fastsas results are compared with the float64 reference.

Most metrics are compared relative to themselves. A metric that is a difference of two
nearly equal quantities is compared on the scale of those quantities, since its own
relative error is meaningless when they nearly cancel: the SAS imbalance on the scale of
the two scores, CORAL (||Sx - Sy||) on the scale of ||Sx|| and ||Sy||, and the
cosine-derived differences on the scale of a cosine, which is 1.
"""
import numpy as np

import fastsas as fs
from fastsas import reference as ref

KEYS = [k for k in fs.moments.ALIGNMENT_KEYS if k != "matched_cosine"]


def scales(want, x, y):
    n = len(x)
    cx, cy, _ = ref.covariances(x, y)
    coral_scale = max(np.linalg.norm(cx), np.linalg.norm(cy)) * n / (n - 1)
    out = {k: abs(want[k]) for k in KEYS}
    out["sas_imbalance"] = max(abs(want["sas_i2t"]), abs(want["sas_t2i"]))
    out["coral"] = max(abs(want["coral"]), coral_scale)
    out["delta_cos"] = out["centroid_cosine"] = 1.0
    return out


def worst_error(got, want, x, y, keys=KEYS):
    s = scales(want, x, y)
    return max(abs(got[k] - want[k]) / max(s[k], 1e-300) for k in keys)


def worst_key(got, want, x, y, keys=KEYS):
    s = scales(want, x, y)
    return max(keys, key=lambda k: abs(got[k] - want[k]) / max(s[k], 1e-300))
