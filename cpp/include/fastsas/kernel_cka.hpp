// Exact CKA with RBF kernels K_ij = exp(-|x_i - x_j|^2 / (2 sigma_x^2)) within the images and
// L_ij likewise within the texts, biased and unbiased HSIC, blocked and fused: per tile one
// GEMM per modality, the kernel entries and the sums every estimator needs in the same pass,
// never an n x n matrix. Definitions: docs/definitions.md, "Neighbourhood family".
//
// Numerics. Each modality is shifted by its own mean first (distances within a modality are
// unchanged; the cancellation in |a|^2 + |b|^2 - 2 a.b is not). Both estimators are unchanged
// by subtracting one constant from every kernel entry, so the tiles hold K - c with c the
// kernel at a typical distance (the median over consecutive row pairs): for a large sigma, or
// the concentrated distances of high dimensions, every K lies close to c, and K - c =
// c expm1(z - log c) keeps the digits that K itself would round away in float32. K_ii = 1
// exactly: the unbiased estimator never uses it, the biased one adds it analytically. Only
// tiles on and above the block diagonal are computed (the strict upper triangle inside
// diagonal tiles). Per-row kernel sums are accumulated per tile in float64 and added across
// tiles exactly (fixed point, 2^-64 units), scalar sums per tile in a fixed tile order: the
// same bits for any thread count. Kernel entries below the smallest normal of T (about 1e-38
// for float32) are 0.
#pragma once

#include "fastsas/hsic.hpp"
#include "fastsas/moments.hpp"

namespace fastsas {

struct RbfCkaOptions {
  Index tile = 0;  // rows and columns per tile (0: kRbfCkaTile)
  int threads = 1;
};

struct RbfCkaResult {
  Index rows = 0;
  HsicTerms biased, unbiased;  // HSIC(K, L), HSIC(K, K), HSIC(L, L) and CKA for each estimator
};

inline constexpr Index kRbfCkaTile = 512;

// x, y: n x d_x and n x d_y (paired rows, dims may differ), n >= 4, sigmas > 0 and finite.
// Non-finite rows raise BadRowsError ("x" or "y").
template <class T>
RbfCkaResult rbf_cka(const MatrixView<T>& x, const MatrixView<T>& y, double sigma_x, double sigma_y,
                     const RbfCkaOptions& options);

}  // namespace fastsas
