#include "fastsas/spectral.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/memory.hpp"
#include "fastsas/parallel.hpp"

namespace fastsas {

namespace {

constexpr double kRhoEpsilon = 1e-8;    // docs/definitions.md, SAS step 3
constexpr double kZscoreEpsilon = 1e-8;  // docs/definitions.md, SVCCA
// SVCCA: a principal direction of the z-scored data whose eigenvalue is at most this fraction
// of the largest is null (the data has no variance along it) and is not kept. Float32 moments
// resolve eigenvalues to about 1e-6 of the largest, so anything below is round-off.
constexpr double kSvccaNullFraction = 1e-5;
// A column whose standard deviation is within this many float64 epsilons of its mean's
// magnitude is constant (what is left of it is the rounding of the mean).
constexpr double kConstantColumnRoundoffs = 16.0;
// The modality gap m = mean(1 - cos) at or below which it is rounding only (RMG = 0).
constexpr double kNoGap = 16.0 * std::numeric_limits<double>::epsilon();
// Columns of the profile's product computed at a time (bounds its scratch to d x 256).
constexpr Index kPanelColumns = 256;

const char* const kTooLargeFix =
    "rescale the embeddings (divide them by a power of ten): CORAL and the centroid distance scale with "
    "them, the other metrics do not change at such magnitudes";

// diag(V^T M V) for column-major V (d x k) and M (d x d), a panel of columns of V at a time.
Eigen::VectorXd quadratic_diagonal(const Eigen::MatrixXd& m, const Eigen::MatrixXd& v) {
  const Index d = v.rows(), k = v.cols();
  Eigen::VectorXd out(k);
  Eigen::MatrixXd mv(d, std::min(k, kPanelColumns));
  for (Index c0 = 0; c0 < k; c0 += kPanelColumns) {
    const Index cols = std::min(kPanelColumns, k - c0);
    blas::gemm_colmajor(static_cast<int>(d), static_cast<int>(cols), static_cast<int>(d), m.data(),
                        v.data() + c0 * d, mv.data());
    out.segment(c0, cols) = (v.middleCols(c0, cols).array() * mv.leftCols(cols).array()).colwise().sum().transpose();
  }
  return out;
}

// The top-k eigenpairs of a symmetric matrix, descending.
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

// rho_k = a_k / sqrt(l_k s_k + 1e-8) from a profile computed on covariances scaled by
// 2^-2ha (anchor), 2^-(ha+hb) (cross) and 2^-2hb (other): the same value, without the overflow
// of l_k s_k for large inputs or the underflow of a_k for tiny ones.
double rho_of_scaled(double a, double l, double s, int h) {
  if (h >= 0) return a / std::sqrt(l * s + std::ldexp(kRhoEpsilon, -2 * h));
  return std::ldexp(a, h) / std::sqrt(std::ldexp(l * s, 2 * h) + kRhoEpsilon);
}

SpectralProfile profile_of_scaled(const Eigen::MatrixXd& cov_anchor, const Eigen::MatrixXd& cov_cross,
                                  const Eigen::MatrixXd& cov_other, int ha, int hb) {
  SpectralProfile p = spectral_profile(cov_anchor, cov_cross, cov_other);
  const int h = ha + hb;
  for (Index k = 0; k < p.rho.size(); ++k) {
    p.rho[k] = rho_of_scaled(p.cross[k], p.eigenvalues[k], p.other_variance[k], h);
    p.eigenvalues[k] = std::ldexp(p.eigenvalues[k], 2 * ha);
    p.cross[k] = std::ldexp(p.cross[k], h);
    p.other_variance[k] = std::ldexp(p.other_variance[k], 2 * hb);
  }
  return p;
}

// The biased covariance blocks of the moments, straight from the state (no full 2d x 2d copy):
// rows and columns [r0, r0 + d) x [c0, c0 + d) of (S - s s^T / n) / n, S upper-triangular.
Eigen::MatrixXd covariance_block(const Moments& moments, Index r0, Index c0) {
  const Index d = moments.dim();
  const double n = static_cast<double>(moments.count());
  const Eigen::MatrixXd& upper = moments.shifted_scatter();
  const Eigen::VectorXd& s = moments.shifted_sum();
  Eigen::MatrixXd out(d, d);
  for (Index j = 0; j < d; ++j)
    for (Index i = 0; i < d; ++i) {
      const Index r = r0 + i, c = c0 + j;
      const double scatter = r <= c ? upper(r, c) : upper(c, r);
      out(i, j) = (scatter - s[r] * s[c] / n) / n;
    }
  return out;
}

bool all_finite(const Eigen::MatrixXd& m) { return m.allFinite(); }

// Half the binary exponent of the largest variance: the covariance times 4^-h has its largest
// diagonal entry in [1, 16). 0 for a zero covariance.
int half_exponent(const Eigen::MatrixXd& cov) {
  const double top = cov.diagonal().maxCoeff();
  return top > 0.0 ? std::ilogb(top) / 2 : 0;
}

// Per column, the z-scoring weight of SVCCA in the scaled units of `cov` (which is the
// covariance times 4^-h): 1 / (unbiased std + 1e-8), 0 for a constant column, all times a common
// factor that puts the largest z-scored variance at 1 (canonical correlations do not depend on
// it). Empty when every column is constant.
Eigen::VectorXd zscore_weights(const Eigen::MatrixXd& cov, const Eigen::VectorXd& mean, int h, double n) {
  const Index d = cov.rows();
  const double unbias = n / (n - 1.0);
  const double eps = std::ldexp(kZscoreEpsilon, -h);
  Eigen::VectorXd w = Eigen::VectorXd::Zero(d);
  double top = 0.0;  // the largest z-scored standard deviation
  for (Index j = 0; j < d; ++j) {
    const double sd = std::sqrt(std::max(0.0, cov(j, j)) * unbias);
    const double roundoff = kConstantColumnRoundoffs * std::numeric_limits<double>::epsilon() * std::abs(mean[j]);
    if (!(std::ldexp(sd, h) > roundoff)) continue;  // constant column: contributes nothing
    const double scale = sd + eps;
    w[j] = scale;
    top = std::max(top, sd / scale);
  }
  if (top == 0.0) return Eigen::VectorXd();
  for (Index j = 0; j < d; ++j)
    if (w[j] > 0.0) w[j] = 1.0 / (w[j] * top);
  return w;
}

// The leading directions of a z-scored covariance that are not null.
Index kept_directions(const Eigen::VectorXd& eigenvalues) {
  if (eigenvalues.size() == 0 || !(eigenvalues[0] > 0.0)) return 0;
  Index k = 0;
  while (k < eigenvalues.size() && eigenvalues[k] > kSvccaNullFraction * eigenvalues[0]) ++k;
  return k;
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
  // The weights l_k / sum l_k are taken relative to the largest kept eigenvalue, so that the
  // sums neither overflow nor underflow whatever the scale of the data.
  double top = 0.0;
  for (Index k = 0; k < l.size(); ++k)
    if (l[k] >= threshold) top = std::max(top, l[k]);
  if (!(top > 0.0) || !std::isfinite(top))
    throw std::invalid_argument("the anchor modality has zero variance: SAS is undefined");
  const int e = std::ilogb(top);
  double weighted = 0.0, total = 0.0;
  for (Index k = 0; k < l.size(); ++k) {
    if (l[k] >= threshold) {
      const double lk = std::ldexp(l[k], -e);
      weighted += lk * std::abs(profile.rho[k]);
      total += lk;
    }
  }
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
  // v^T C v is the same for C and its transpose: the cross covariance serves both directions.
  p.cross = quadratic_diagonal(cov_cross, vectors);
  p.other_variance = quadratic_diagonal(cov_other, vectors);
  p.rho = p.cross.array() / (p.eigenvalues.array() * p.other_variance.array() + kRhoEpsilon).sqrt();
  return p;
}

double analysis_bytes(Index dim, int threads, bool spectral_only) {
  const double d2 = 8.0 * static_cast<double>(dim) * static_cast<double>(dim);
  // Three covariance blocks; per eigenproblem of a profile its vectors and dsyevd's workspace
  // (2 d^2 + 6 d doubles); per SVCCA subspace a z-scored copy (dsyevr's workspace is O(d)).
  const double base = 3.0 * d2, profile = 3.0 * d2, subspace = d2;
  if (threads <= 1) return base + profile;
  return base + 2.0 * (spectral_only ? profile : std::max(profile, subspace));
}

ScaledCovariances scaled_covariances(const Moments& moments, const std::string& computation, double bytes) {
  const Index n = moments.count();
  if (n < 2) throw std::invalid_argument("alignment needs at least 2 rows, got " + std::to_string(n));
  // One BLAS thread, so the eigenvectors do not depend on the thread count.
  blas::use_calling_thread_only();
  const Index d = moments.dim();
  require_memory(computation + " at dim " + std::to_string(d) + " (covariances and eigendecompositions)", bytes,
                 "use a smaller dim (e.g. project the embeddings with PCA) or a machine with more memory");

  ScaledCovariances c;
  allocating("the covariances of " + computation, 3.0 * 8.0 * static_cast<double>(d) * static_cast<double>(d), [&] {
    c.x = covariance_block(moments, 0, 0);
    c.y = covariance_block(moments, d, d);
    c.xy = covariance_block(moments, 0, d);
  });
  c.mean = moments.mean();
  if (!all_finite(c.x) || !all_finite(c.y) || !all_finite(c.xy) || !c.mean.allFinite())
    throw std::invalid_argument(
        "the second moments overflowed float64 (the embeddings are too large for them, or "
        "there are too many rows of that size); " + std::string(kTooLargeFix));

  // Work on X 2^-hx and Y 2^-hy (exact: powers of two), whose largest variances are near 1:
  // then no product that follows overflows or underflows whatever the scale of the data.
  c.hx = half_exponent(c.x);
  c.hy = half_exponent(c.y);
  c.x = c.x.unaryExpr([&](double v) { return std::ldexp(v, -2 * c.hx); });
  c.y = c.y.unaryExpr([&](double v) { return std::ldexp(v, -2 * c.hy); });
  c.xy = c.xy.unaryExpr([&](double v) { return std::ldexp(v, -(c.hx + c.hy)); });
  return c;
}

SpectralProfile scaled_profile(const ScaledCovariances& c, bool image_anchor) {
  // v^T C v is the same for C and its transpose: the cross covariance serves both directions.
  if (image_anchor) return profile_of_scaled(c.x, c.xy, c.y, c.hx, c.hy);
  return profile_of_scaled(c.y, c.xy, c.x, c.hy, c.hx);
}

AlignmentAnalysis analyze(const Moments& moments, int threads, Index cca_dim, bool spectral_only) {
  const Index n = moments.count(), d = moments.dim();
  const double nd = static_cast<double>(n);
  // Two eigenproblems side by side only when they fit (the result does not depend on it).
  threads = std::max(1, threads);
  if (threads > 1 && !memory_fits(analysis_bytes(d, threads, spectral_only))) threads = 1;
  const ScaledCovariances c =
      scaled_covariances(moments, "the alignment analysis", analysis_bytes(d, threads, spectral_only));
  const Eigen::MatrixXd &cx = c.x, &cy = c.y, &cxy = c.xy;
  const Eigen::VectorXd& mean = c.mean;
  const int hx = c.hx, hy = c.hy;

  AlignmentAnalysis out;
  out.count = n;
  const Index k = std::min({cca_dim, d, n - 1});

  // SVCCA's z-scoring weights (unbiased std + epsilon, constant columns 0: docs/definitions.md).
  Eigen::VectorXd wx, wy;
  if (!spectral_only) {
    wx = zscore_weights(cx, mean.head(d), hx, nd);
    wy = zscore_weights(cy, mean.tail(d), hy, nd);
  }
  TopSubspace sub_x, sub_y;
  auto subspace = [&](const Eigen::MatrixXd& cov, const Eigen::VectorXd& w) {
    return top_subspace(w.asDiagonal() * cov * w.asDiagonal(), k);
  };

  // Four independent eigenproblems, run side by side with one BLAS thread each.
  parallel_for(threads, spectral_only ? 2 : 4, [&](long task, int) {
    switch (task) {
      case 0: out.image_to_text = scaled_profile(c, true); break;
      case 1: out.text_to_image = scaled_profile(c, false); break;
      case 2: if (wx.size()) sub_x = subspace(cx, wx); break;
      case 3: if (wy.size()) sub_y = subspace(cy, wy); break;
    }
  });

  // CKA = ||Cxy||^2 / (||Cx|| ||Cy||) lies in [0, 1] (Cauchy-Schwarz on the Gram matrices);
  // it is clamped there against rounding.
  const double cka_den = cx.norm() * cy.norm();
  if (cka_den > 0.0) {
    out.cka = std::clamp(cxy.squaredNorm() / cka_den, 0.0, 1.0);
  } else {
    out.cka = std::numeric_limits<double>::quiet_NaN();
    out.undefined["cka"] = "a modality has zero variance";
  }
  if (spectral_only) return out;

  const Eigen::VectorXd mx = mean.head(d), my = mean.tail(d);

  // CORAL = ||Sx - Sy||_F with unbiased covariances, at the larger of the two scales.
  {
    const int h = std::max(hx, hy);
    const double fx = std::ldexp(1.0, 2 * (hx - h)), fy = std::ldexp(1.0, 2 * (hy - h));
    double squares = 0.0;
    for (Index j = 0; j < d; ++j)
      for (Index i = 0; i < d; ++i) {
        const double diff = cx(i, j) * fx - cy(i, j) * fy;
        squares += diff * diff;
      }
    out.coral = std::ldexp(std::sqrt(squares) * (nd / (nd - 1.0)), 2 * h);
    if (!std::isfinite(out.coral)) out.undefined["coral"] = "CORAL exceeds the float64 range at this scale";
  }
  out.centroid_euclidean = (mx - my).stableNorm();
  {
    const double nx = mx.stableNorm(), ny = my.stableNorm();
    if (nx > 0.0 && ny > 0.0) {
      out.centroid_cosine = std::clamp(1.0 - (mx / nx).dot(my / ny), 0.0, 2.0);
    } else {
      out.centroid_cosine = std::numeric_limits<double>::quiet_NaN();
      out.undefined["centroid_cosine"] = std::string("the mean of ") + (nx > 0.0 ? "texts" : "images") +
                                         " is the zero vector (a cosine needs a direction)";
    }
  }

  // SVCCA: canonical correlations of the two projections onto the kept principal directions
  // (each whitened by its eigenvalues), min(kx, ky) of them, each in [0, 1] (clamped against
  // rounding); their mean.
  const Index kx = kept_directions(sub_x.eigenvalues), ky = kept_directions(sub_y.eigenvalues);
  out.svcca_dim = std::min(kx, ky);
  if (out.svcca_dim > 0) {
    // between = Lx^-1/2 Vx^T Wx Cxy Wy Vy Ly^-1/2, through d x ky products only.
    const Eigen::MatrixXd right = wy.asDiagonal() * sub_y.vectors.leftCols(ky);
    Eigen::MatrixXd cross_right(d, ky);
    blas::gemm_colmajor(static_cast<int>(d), static_cast<int>(ky), static_cast<int>(d), cxy.data(), right.data(),
                        cross_right.data());
    Eigen::MatrixXd between = sub_x.vectors.leftCols(kx).transpose() * (wx.asDiagonal() * cross_right);
    between = sub_x.eigenvalues.head(kx).cwiseSqrt().cwiseInverse().asDiagonal() * between *
              sub_y.eigenvalues.head(ky).cwiseSqrt().cwiseInverse().asDiagonal();
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(between);
    const Eigen::VectorXd& correlations = svd.singularValues();
    double total = 0.0;
    for (Index i = 0; i < correlations.size(); ++i) total += std::clamp(correlations[i], 0.0, 1.0);
    out.svcca = total / static_cast<double>(correlations.size());
  } else {
    out.svcca = std::numeric_limits<double>::quiet_NaN();
    out.undefined["svcca"] = std::string(kx == 0 ? "images" : "texts") + " have zero variance in every column";
  }

  if (moments.tracks_unit_rows()) {
    const Eigen::VectorXd& unit = moments.unit_sum();
    const Eigen::VectorXd ux = unit.head(d), uy = unit.tail(d);
    const double matched = moments.matched_cosine_sum();
    const double pairs = nd * (nd - 1.0);
    // Cosines lie in [-1, 1]: the matched mean, each cone and Delta-cos (in [-2, 2]) are
    // clamped to their ranges against rounding.
    out.matched_cosine = std::clamp(matched / nd, -1.0, 1.0);
    out.delta_cos = std::clamp(matched / nd - (ux.dot(uy) - matched) / pairs, -2.0, 2.0);
    // sum_{i<j} x^_i . x^_j = (||sum x^||^2 - n) / 2 for unit rows.
    const double sim_x = (ux.squaredNorm() - nd) / 2.0, sim_y = (uy.squaredNorm() - nd) / 2.0;
    const double half_pairs = pairs / 2.0;
    const double dist_x = std::max(0.0, half_pairs - sim_x), dist_y = std::max(0.0, half_pairs - sim_y);
    // A gap within the rounding of unit-row cosines is no gap: RMG is then 0, also when the
    // modalities have no spread either (0 / 0).
    double m = std::clamp(1.0 - matched / nd, 0.0, 2.0);
    if (m <= kNoGap) m = 0.0;
    out.rmg = m > 0.0 ? std::clamp(m / ((dist_x + dist_y) / (2.0 * pairs) + m), 0.0, 1.0) : 0.0;
    const double paper_den = (sim_x + dist_y) / (2.0 * pairs) + m;
    if (m == 0.0) {
      out.rmg_paper = 0.0;
    } else if (paper_den > 0.0) {
      out.rmg_paper = m / paper_den;
    } else {
      out.rmg_paper = std::numeric_limits<double>::quiet_NaN();
      out.undefined["rmg_paper"] = "its denominator (image similarity + text distance + gap) is not positive";
    }
    out.cone_images = std::clamp(sim_x / half_pairs, -1.0, 1.0);
    out.cone_texts = std::clamp(sim_y / half_pairs, -1.0, 1.0);
    out.gap = (ux - uy) / nd;
  } else {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    out.delta_cos = out.rmg = out.rmg_paper = out.cone_images = out.cone_texts = out.matched_cosine = nan;
  }
  return out;
}

}  // namespace fastsas
