#include "fastsas/estimators.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

// About the mean (sum x = sum y = 0) the Song et al. terms of linear kernels are
// tr(K~L~) = |Sxy|_F^2 - sum a b, 1'K~1 = -A, 1'L~1 = -B, 1'K~L~1 = sum a b, with S the
// centred scatters, A = tr Sxx, B = tr Syy: HSIC_u = [|Sxy|^2 + A B / ((n-1)(n-2))
// - n / (n-2) sum a b] / (n (n-3)).
HsicTerms linear_cka_unbiased(const Moments& moments) {
  const Index n = moments.count(), d = moments.dim();
  if (n < 4) throw std::invalid_argument("the unbiased CKA needs at least 4 rows, got " + std::to_string(n));
  const Eigen::MatrixXd scatter = moments.centered_scatter();
  const NormMoments about_mean = moments.norm_moments_about(moments.mean());
  const double nd = static_cast<double>(n);
  const double a = scatter.topLeftCorner(d, d).trace(), b = scatter.bottomRightCorner(d, d).trace();
  const auto hsic = [&](double cross_norm, double trace_product, double norm_product) {
    return (cross_norm + trace_product / ((nd - 1.0) * (nd - 2.0)) - nd / (nd - 2.0) * norm_product) /
           (nd * (nd - 3.0));
  };
  const Eigen::Vector3d& p = about_mean.products;
  return hsic_terms(hsic(scatter.topRightCorner(d, d).squaredNorm(), a * b, p[1]),
                    hsic(scatter.topLeftCorner(d, d).squaredNorm(), a * a, p[0]),
                    hsic(scatter.bottomRightCorner(d, d).squaredNorm(), b * b, p[2]));
}

namespace {

double nuclear_norm(Eigen::MatrixXd m) {
  if (m.size() == 0) return 0.0;
  Eigen::VectorXd s(std::min(m.rows(), m.cols()));
  blas::singular_values(static_cast<int>(m.rows()), static_cast<int>(m.cols()), m.data(), s.data());
  return s.sum();
}

// Cov^{-1/2} restricted to its eigen-directions above rcond times the largest eigenvalue, as
// d x rank columns V_k / sqrt(l_k) (so W' C W = I on them).
Eigen::MatrixXd whitening(const Eigen::MatrixXd& cov, double rcond) {
  const int d = static_cast<int>(cov.rows());
  Eigen::MatrixXd a = cov, v(d, d);
  Eigen::VectorXd w(d);
  blas::symmetric_eigen_top(d, d, a.data(), w.data(), v.data());  // every pair, ascending (dsyevr: faster here)
  const double top = w[d - 1];
  Index kept = 0;
  for (int k = 0; k < d; ++k) kept += (top > 0.0 && w[k] > rcond * top) ? 1 : 0;
  Eigen::MatrixXd out(d, kept);
  for (Index c = 0; c < kept; ++c) {
    const Index k = d - kept + c;
    out.col(c) = v.col(k) / std::sqrt(w[k]);
  }
  return out;
}

}  // namespace

ProcrustesResult procrustes(const Moments& moments, int threads, double rcond) {
  const Index n = moments.count(), d = moments.dim();
  if (n < 2) throw std::invalid_argument("Procrustes distances need at least 2 rows, got " + std::to_string(n));
  if (!(rcond >= 0.0 && rcond < 1.0)) throw std::invalid_argument("rcond must be in [0, 1)");
  blas::use_calling_thread_only();
  const Eigen::MatrixXd scatter = moments.centered_scatter() / static_cast<double>(n);
  const Eigen::MatrixXd cx = scatter.topLeftCorner(d, d), cy = scatter.bottomRightCorner(d, d);
  const Eigen::MatrixXd cxy = scatter.topRightCorner(d, d);
  ProcrustesResult out;
  Eigen::MatrixXd wx, wy;
  // Two rounds of two independent decompositions (one BLAS thread each).
  parallel_for(threads, 2, [&](long task, int) { (task == 0 ? wx : wy) = whitening(task == 0 ? cx : cy, rcond); });
  out.rank_x = wx.cols();
  out.rank_y = wy.cols();
  parallel_for(threads, 2, [&](long task, int) {
    if (task == 0) {
      out.nuclear = nuclear_norm(cxy);
      return;
    }
    const int rx = static_cast<int>(out.rank_x), ry = static_cast<int>(out.rank_y), dd = static_cast<int>(d);
    if (rx == 0 || ry == 0) return;
    Eigen::MatrixXd right(d, ry), whitened(rx, ry);
    const Eigen::MatrixXd left = wx.transpose();
    blas::gemm_colmajor(dd, ry, dd, cxy.data(), wy.data(), right.data());
    blas::gemm_colmajor(rx, ry, dd, left.data(), right.data(), whitened.data());
    out.canonical_sum = nuclear_norm(std::move(whitened));
  });
  const double tx = cx.trace(), ty = cy.trace();
  // The minimum of a sum of squares: rounding must not make it negative.
  out.distance = std::max(0.0, tx + ty - 2.0 * out.nuclear);
  // A modality without variance aligns with nothing: cosine 0, the angle pi / 2.
  const auto angle = [](double cosine) { return std::acos(std::clamp(cosine, 0.0, 1.0)); };
  out.angular = angle(tx > 0.0 && ty > 0.0 ? out.nuclear / std::sqrt(tx * ty) : 0.0);
  out.whitened_angular = angle(out.rank_x > 0 && out.rank_y > 0
                                   ? out.canonical_sum / std::sqrt(static_cast<double>(out.rank_x * out.rank_y))
                                   : 0.0);
  return out;
}

}  // namespace fastsas
