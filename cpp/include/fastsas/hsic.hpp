// The Hilbert-Schmidt independence criterion from the few sums its estimators need, shared by
// every kernel-alignment metric (linear CKA from the moments, RBF CKA on tiles, CKNNA on
// neighbour masks). Definitions: docs/definitions.md, "Neighbourhood family".
#pragma once

#include <cstdint>

namespace fastsas {

// Sums of two n x n kernel matrices K, L whose diagonals are zero (or treated as zero): K and
// L need not be symmetric (CKNNA masks are not).
struct HsicSums {
  double trace = 0;        // tr(K L) = sum_ij K_ij L_ji
  double sum_k = 0;        // 1' K 1
  double sum_l = 0;        // 1' L 1
  double col_k_row_l = 0;  // 1' K L 1 = sum_j (K' 1)_j (L 1)_j
  double col_l_row_k = 0;  // 1' L K 1
};

// Song et al. (2012), eq. 5: [tr(K L) + (1'K1)(1'L1) / ((n-1)(n-2)) - 2/(n-2) 1'KL1] / (n (n-3)).
// An unbiased estimate: it may be negative when the dependence is near zero. Needs n >= 4.
double hsic_unbiased(const HsicSums& s, std::int64_t n);

// tr(K H L H) / (n - 1)^2 with H = I - 11'/n, for the same K, L.
double hsic_biased(const HsicSums& s, std::int64_t n);

// One kernel-alignment estimate: HSIC(K, L), HSIC(K, K), HSIC(L, L) and their normalised
// value (normalised_alignment).
struct HsicTerms {
  double kl = 0, kk = 0, ll = 0;
  double value = 0;
};

// kl / sqrt(kk ll) when kk > 0 and ll > 0; 0 otherwise (the estimate sees no spread in one of
// the kernels: there is nothing to align). Never NaN for finite terms; a negative kl gives a
// negative value, the honest estimate of an alignment near zero. Not clipped.
double normalised_alignment(double kl, double kk, double ll);

inline HsicTerms hsic_terms(double kl, double kk, double ll) { return {kl, kk, ll, normalised_alignment(kl, kk, ll)}; }

}  // namespace fastsas
