"""Exercises every C++ code path once, for the sanitizer build (.ci/sanitize)."""
import pickle

import numpy as np

import fastsas as fs

for dtype in (np.float32, np.float64):
    x, y = fs.synthetic.paired_embeddings(5000, 40, image_only_factors=3, seed=1, dtype=dtype)
    fs.alignment(x, y, threads=2)
    fs.alignment(np.asfortranarray(x), y[::-1].copy()[::-1], threads=1)
    m = fs.Moments(40, threads=2)
    for i in range(0, 5000, 999):
        m.update(x[i:i + 999], y[i:i + 999])
    other = fs.Moments(40).update(x[:7], y[:7])
    m.merge(other)
    pickle.loads(pickle.dumps(m)).alignment(topq=1.0)
    m.sas_sweep()
    fs.sas(x[:3], y[:3])
    bad = x.copy()
    bad[4321, 0] = np.nan
    try:
        fs.alignment(bad, y)
    except ValueError:
        pass
    else:
        raise SystemExit("a NaN row was not refused")
    for name in ("retrieval", "mmd"):
        if hasattr(fs, name):
            if name == "retrieval":
                fs.retrieval(x[:700], y[:700], threads=2)
            else:
                fs.mmd(x[:300], y[:500])
    # The neighbourhood family: neighbours with ties and odd tiles, their metrics, RBF CKA.
    dup = x[:900].copy()
    dup[::7] = dup[1::7][: len(dup[::7])]
    for threads, tile in ((1, 1000), (2, 97)):
        r = fs.neighbourhood(dup, y[:900], 7, threads=threads, tile=tile, return_neighbours=True)
        fs.neighbourhood_scores(r.image_neighbours, r.text_neighbours, topk=3)
    fs.knn(x[:50], 49, tile=1)
    fs.cka_rbf(x[:333], y[:333], sigma=(0.7, 3.0), threads=2, tile=64, return_terms=True)
    fs.procrustes(x, y, "angular_whitened")
print("sanitizer workload: clean")
