// The Spectral Alignment Score and the covariance-family metrics, all from Moments.
// Definitions: docs/definitions.md (versioned as kDefinitionsVersion).
#pragma once

#include <Eigen/Core>

#include <map>
#include <string>

#include "fastsas/moments.hpp"

namespace fastsas {

inline constexpr const char* kDefinitionsVersion = "fastsas-metrics/9";

// Canonical pairs SVCCA averages (capped at min(dim, count - 1)).
inline constexpr Index kSvccaDims = 10;

// Per-mode profile of one direction, anchor A -> other B, modes by descending eigenvalue.
struct SpectralProfile {
  Eigen::VectorXd eigenvalues;  // l_k of Cov(A), negative round-off clipped to 0
  Eigen::VectorXd cross;        // a_k = v_k^T Cov(A, B) v_k
  Eigen::VectorXd other_variance;  // s_k = v_k^T Cov(B) v_k
  Eigen::VectorXd rho;          // a_k / sqrt(l_k s_k + 1e-8)
};

// Everything about an alignment that does not depend on q, from one eigendecomposition per
// direction: SAS for any q is then a weighted sum over the profile.
struct AlignmentAnalysis {
  Index count = 0;
  // Metrics that these moments leave undefined (set to NaN), with the reason: CKA and SVCCA
  // when a modality has zero variance, the centroid cosine when a mean is the zero vector,
  // CORAL beyond the float64 range, the paper's RMG when its denominator is not positive.
  std::map<std::string, std::string> undefined;
  SpectralProfile image_to_text;  // anchor X
  SpectralProfile text_to_image;  // anchor Y
  double cka = 0, coral = 0, svcca = 0;
  Index svcca_dim = 0;  // canonical pairs averaged: min(kx, ky) kept directions (docs/definitions.md)
  double centroid_euclidean = 0, centroid_cosine = 0;
  // Pairwise family (NaN when the moments do not track unit rows).
  double delta_cos = 0, rmg = 0, rmg_paper = 0, cone_images = 0, cone_texts = 0;
  double matched_cosine = 0;
  Eigen::VectorXd gap;  // mean unit image row minus mean unit text row
};

// NumPy's default ("linear") quantile of the values at probability p in [0, 1].
double quantile_linear(const Eigen::VectorXd& values, double p);

// SAS for a profile at top fraction q in (0, 1].
double sas_from_profile(const SpectralProfile& profile, double q);

// Profile of one direction from covariances (biased): the anchor's, the cross one
// (anchor x other) and the other modality's.
SpectralProfile spectral_profile(const Eigen::MatrixXd& cov_anchor, const Eigen::MatrixXd& cov_cross,
                                 const Eigen::MatrixXd& cov_other);

// The covariances every spectral computation starts from (analyze(), anchor_profile()): the
// biased ones of X 2^-hx and Y 2^-hy, where hx and hy are the powers of two that bring the
// largest variances near 1 (exact), so no magnitude of finite input overflows or underflows
// on the way. `mean` is the unscaled mean of [X Y].
struct ScaledCovariances {
  Eigen::MatrixXd x, y, xy;  // Cov(X) 4^-hx, Cov(Y) 4^-hy, Cov(X, Y) 2^-(hx + hy)
  Eigen::VectorXd mean;
  int hx = 0, hy = 0;
};

// Requires count() >= 2. `computation` names what needs them and `bytes` the memory it needs
// in all, checked first (OutOfMemory); moments that overflowed float64 are refused
// (std::invalid_argument). Sets the BLAS to the calling thread only, so that eigenvectors do
// not depend on the thread count.
ScaledCovariances scaled_covariances(const Moments& moments, const std::string& computation, double bytes);

// The profile of one direction (anchored on X when `image_anchor`, else on Y) from scaled
// covariances, in the data's own units (rho without overflow or underflow at any scale).
SpectralProfile scaled_profile(const ScaledCovariances& covariances, bool image_anchor);

// Bytes the analysis allocates at this dim (threads > 1: two eigenproblems side by side).
double analysis_bytes(Index dim, int threads, bool spectral_only);

// Full analysis. Requires count() >= 2. Every metric is computed on the moments of X 2^-hx
// and Y 2^-hy (powers of two that bring the largest variances near 1) and scaled back where it
// depends on scale, so no magnitude of finite input overflows or underflows on the way; moments
// that overflowed float64 are refused (std::invalid_argument). The memory it needs is checked
// first (OutOfMemory); with little memory the eigenproblems run one at a time. `spectral_only`: both profiles and CKA only. `cca_dim` canonical pairs for SVCCA (capped at
// min(dim, count - 1)); `threads` workers run the independent eigenproblems side by side.
AlignmentAnalysis analyze(const Moments& moments, int threads, Index cca_dim = kSvccaDims,
                          bool spectral_only = false);

// The profile of one direction only, anchored on X (`image_anchor`) or on Y: one
// eigendecomposition, what SAS in that direction needs. Bit-identical to the same direction
// of analyze(). Requires count() >= 2.
SpectralProfile anchor_profile(const Moments& moments, bool image_anchor);

}  // namespace fastsas
