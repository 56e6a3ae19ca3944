#include "fastsas/spectral.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

constexpr double kRhoEpsilon = 1e-8;    // docs/definitions.md, SAS step 3
constexpr double kZscoreEpsilon = 1e-8;  // docs/definitions.md, SVCCA

// diag(V^T M V) for column-major V (d x d) and M (d x d), through one GEMM.
Eigen::VectorXd quadratic_diagonal(const Eigen::MatrixXd& m, const Eigen::MatrixXd& v) {
  const int d = static_cast<int>(v.rows());
  Eigen::MatrixXd mv(d, v.cols());
  blas::gemm_colmajor(d, static_cast<int>(v.cols()), d, m.data(), v.data(), mv.data());
  return (v.array() * mv.array()).colwise().sum().transpose();
}

// Mean canonical correlation between the top-k principal subspaces of the z-scored
// modalities, exactly, from their correlation matrices and the cross one.
struct TopSubspace {
  Eigen::VectorXd eigenvalues;  // descending
  Eigen::MatrixXd vectors;      // d x k
};

TopSubspace top_subspace(Eigen::MatrixXd corr, Index k) {
  const int d = static_cast<int>(corr.rows());
  Eigen::VectorXd w(d);
  Eigen::MatrixXd z(d, k);
  blas::symmetric_eigen_top(d, static_cast<int>(k), corr.data(), w.data(), z.data());
  TopSubspace out;
  out.eigenvalues = w.head(k).reverse();
  out.vectors = z.rowwise().reverse();
  return out;
}

}  // namespace

double quantile_linear(const Eigen::VectorXd& values, double p) {
  if (values.size() == 0) throw std::invalid_argument("quantile of no values");
  std::vector<double> v(values.data(), values.data() + values.size());
  std::sort(v.begin(), v.end());
  const double h = static_cast<double>(v.size() - 1) * p;
  const double lower = std::floor(h);
  const size_t i = static_cast<size_t>(lower);
  if (i + 1 >= v.size()) return v.back();
  const double t = h - lower;
  const double a = v[i], b = v[i + 1];
  // NumPy's _lerp: a + (b - a) t, evaluated from the nearer end for t >= 0.5.
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

double sas_from_profile(const SpectralProfile& profile, double q) {
  if (!(q > 0.0 && q <= 1.0)) throw std::invalid_argument("topq must be in (0, 1]");
  const Eigen::VectorXd& l = profile.eigenvalues;
  const double threshold = quantile_linear(l, 1.0 - q);
  double weighted = 0.0, total = 0.0;
  for (Index k = 0; k < l.size(); ++k) {
    if (l[k] >= threshold) {
      weighted += l[k] * std::abs(profile.rho[k]);
      total += l[k];
    }
  }
  if (!(total > 0.0))
    throw std::invalid_argument("the anchor modality has zero variance: SAS is undefined");
  return std::clamp(weighted / total, 0.0, 1.0);
}

SpectralProfile spectral_profile(const Eigen::MatrixXd& cov_anchor, const Eigen::MatrixXd& cov_cross,
                                 const Eigen::MatrixXd& cov_other) {
  const int d = static_cast<int>(cov_anchor.rows());
  Eigen::MatrixXd vectors = cov_anchor;
  Eigen::VectorXd w(d);
  blas::symmetric_eigen(d, vectors.data(), w.data());
  // LAPACK returns ascending order; the profile is by descending eigenvalue.
  vectors = vectors.rowwise().reverse().eval();
  SpectralProfile p;
  p.eigenvalues = w.reverse().cwiseMax(0.0);
  p.cross = quadratic_diagonal(cov_cross, vectors);
  p.other_variance = quadratic_diagonal(cov_other, vectors);
  p.rho = p.cross.array() / (p.eigenvalues.array() * p.other_variance.array() + kRhoEpsilon).sqrt();
  return p;
}

AlignmentAnalysis analyze(const Moments& moments, int threads, Index cca_dim, bool spectral_only) {
  const Index n = moments.count();
  if (n < 2) throw std::invalid_argument("alignment needs at least 2 rows, got " + std::to_string(n));
  blas::use_calling_thread_only();
  const Index d = moments.dim();
  const double nd = static_cast<double>(n);
  const Eigen::MatrixXd scatter = moments.centered_scatter();
  const Eigen::MatrixXd cx = scatter.topLeftCorner(d, d) / nd;
  const Eigen::MatrixXd cy = scatter.bottomRightCorner(d, d) / nd;
  const Eigen::MatrixXd cxy = scatter.topRightCorner(d, d) / nd;
  const Eigen::MatrixXd cyx = cxy.transpose();

  AlignmentAnalysis out;
  out.count = n;
  const Index k = std::min({cca_dim, d, n - 1});
  out.svcca_dim = spectral_only ? 0 : k;

  // Z-scored correlation structure for SVCCA: unbiased std + epsilon, as docs/definitions.md says.
  Eigen::VectorXd inv_scale_x, inv_scale_y;
  if (!spectral_only) {
    const double unbias = nd / (nd - 1.0);
    inv_scale_x = ((cx.diagonal() * unbias).cwiseMax(0.0).cwiseSqrt().array() + kZscoreEpsilon).inverse();
    inv_scale_y = ((cy.diagonal() * unbias).cwiseMax(0.0).cwiseSqrt().array() + kZscoreEpsilon).inverse();
  }
  TopSubspace sub_x, sub_y;

  // Four independent eigenproblems, run side by side with one BLAS thread each.
  parallel_for(threads, spectral_only ? 2 : 4, [&](long task, int) {
    switch (task) {
      case 0: out.image_to_text = spectral_profile(cx, cxy, cy); break;
      case 1: out.text_to_image = spectral_profile(cy, cyx, cx); break;
      case 2: sub_x = top_subspace(inv_scale_x.asDiagonal() * cx * inv_scale_x.asDiagonal(), k); break;
      case 3: sub_y = top_subspace(inv_scale_y.asDiagonal() * cy * inv_scale_y.asDiagonal(), k); break;
    }
  });
  out.cka = cxy.squaredNorm() / (cx.norm() * cy.norm());
  if (spectral_only) return out;

  const Eigen::VectorXd mean = moments.mean();
  const Eigen::VectorXd mx = mean.head(d), my = mean.tail(d);

  out.coral = (scatter.topLeftCorner(d, d) - scatter.bottomRightCorner(d, d)).norm() / (nd - 1.0);
  out.centroid_euclidean = (mx - my).norm();
  out.centroid_cosine = 1.0 - mx.dot(my) / (mx.norm() * my.norm());

  // Canonical correlations of the two k-dim projections: whiten each by its eigenvalues.
  const Eigen::MatrixXd cross_z = inv_scale_x.asDiagonal() * cxy * inv_scale_y.asDiagonal();
  Eigen::MatrixXd between = sub_x.vectors.transpose() * cross_z * sub_y.vectors;
  between = sub_x.eigenvalues.cwiseMax(0.0).cwiseSqrt().cwiseInverse().asDiagonal() * between *
            sub_y.eigenvalues.cwiseMax(0.0).cwiseSqrt().cwiseInverse().asDiagonal();
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(between);
  out.svcca = svd.singularValues().mean();

  if (moments.tracks_unit_rows()) {
    const Eigen::VectorXd& unit = moments.unit_sum();
    const Eigen::VectorXd ux = unit.head(d), uy = unit.tail(d);
    const double matched = moments.matched_cosine_sum();
    const double pairs = nd * (nd - 1.0);
    out.matched_cosine = matched / nd;
    out.delta_cos = matched / nd - (ux.dot(uy) - matched) / pairs;
    // sum_{i<j} x^_i . x^_j = (||sum x^||^2 - n) / 2 for unit rows.
    const double sim_x = (ux.squaredNorm() - nd) / 2.0, sim_y = (uy.squaredNorm() - nd) / 2.0;
    const double half_pairs = pairs / 2.0;
    const double dist_x = half_pairs - sim_x, dist_y = half_pairs - sim_y;
    const double m = 1.0 - matched / nd;
    out.rmg = m / ((dist_x + dist_y) / (2.0 * pairs) + m);
    out.rmg_paper = m / ((sim_x + dist_y) / (2.0 * pairs) + m);
    out.cone_images = sim_x / half_pairs;
    out.cone_texts = sim_y / half_pairs;
    out.gap = (ux - uy) / nd;
  } else {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    out.delta_cos = out.rmg = out.rmg_paper = out.cone_images = out.cone_texts = out.matched_cosine = nan;
  }
  return out;
}

}  // namespace fastsas
