#include "fastsas/hsic.hpp"

#include <cmath>

namespace fastsas {

double hsic_unbiased(const HsicSums& s, std::int64_t rows) {
  const double n = static_cast<double>(rows);
  return (s.trace + s.sum_k * s.sum_l / ((n - 1.0) * (n - 2.0)) - 2.0 * s.col_k_row_l / (n - 2.0)) /
         (n * (n - 3.0));
}

// tr(K H L H) = tr(KL) - (1'LK1 + 1'KL1) / n + (1'K1)(1'L1) / n^2 (H is symmetric, 1'H = 0).
double hsic_biased(const HsicSums& s, std::int64_t rows) {
  const double n = static_cast<double>(rows);
  return (s.trace - (s.col_l_row_k + s.col_k_row_l) / n + s.sum_k * s.sum_l / (n * n)) / ((n - 1.0) * (n - 1.0));
}

double normalised_alignment(double kl, double kk, double ll) {
  if (!(kk > 0.0) || !(ll > 0.0)) return 0.0;
  return kl / std::sqrt(kk * ll);
}

}  // namespace fastsas
