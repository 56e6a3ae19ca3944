// Estimators from the streaming moments beyond the covariance family: the unbiased linear CKA
// (the unbiased HSIC of Song et al. with linear kernels, from the moments and the fourth-order
// sums kept beside them) and the orthogonal Procrustes distances (nuclear norm of the
// cross-covariance, unwhitened and whitened). Definitions: docs/definitions.md.
#pragma once

#include "fastsas/hsic.hpp"
#include "fastsas/moments.hpp"

namespace fastsas {

// Unbiased HSIC of the linear kernels K = X X', L = Y Y' (and of K, K and L, L) and the
// unbiased CKA. Exact from the moments: the estimator is unchanged by adding one vector to
// every row, so it is evaluated about the mean, where it needs only the centred scatter and
// [sum a^2, sum a b, sum b^2] with a_i = |x_i - mean_x|^2, b_i = |y_i - mean_y|^2.
// Needs count() >= 4 and tracks_norm_moments().
HsicTerms linear_cka_unbiased(const Moments& moments);

// Eigen-directions of a covariance below this fraction of its largest eigenvalue are null for
// the whitening: float32 blocks resolve a covariance to about 1e-7 of its scale, so smaller
// eigenvalues are rounding, and whitening them would invent canonical correlations.
inline constexpr double kProcrustesRcond = 1e-6;

struct ProcrustesResult {
  double distance = 0;           // min over orthogonal Q of |Xc Q - Yc|_F^2 / n = tr Cx + tr Cy - 2 |Cxy|_*
  double angular = 0;            // arccos(|Cxy|_* / sqrt(tr Cx tr Cy)), radians in [0, pi / 2]
  double whitened_angular = 0;   // arccos(sum of canonical correlations / sqrt(rank_x rank_y))
  double nuclear = 0;            // |Cxy|_*
  double canonical_sum = 0;      // |Wx Cxy Wy|_*: the sum of the canonical correlations
  Index rank_x = 0, rank_y = 0;  // directions kept by the whitening
};

// From the biased covariances. Whitening keeps the eigen-directions of each covariance whose
// eigenvalue exceeds `rcond` times the largest (Wx = Cx^{-1/2} on them, 0 elsewhere).
// Needs count() >= 2; `threads` workers run the independent decompositions side by side.
ProcrustesResult procrustes(const Moments& moments, int threads, double rcond = kProcrustesRcond);

}  // namespace fastsas
