// The Spectral Alignment Score and the covariance-family metrics, all from Moments.
// Definitions: docs/definitions.md (versioned as kDefinitionsVersion).
#pragma once

#include <Eigen/Core>

#include "fastsas/moments.hpp"

namespace fastsas {

inline constexpr const char* kDefinitionsVersion = "fastsas-metrics/3";

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
  SpectralProfile image_to_text;  // anchor X
  SpectralProfile text_to_image;  // anchor Y
  double cka = 0, coral = 0, svcca = 0;
  Index svcca_dim = 0;
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

// Full analysis. Requires count() >= 2. `spectral_only`: both profiles and CKA only. `cca_dim` canonical pairs for SVCCA (capped at
// min(dim, count - 1)); `threads` workers run the independent eigenproblems side by side.
AlignmentAnalysis analyze(const Moments& moments, int threads, Index cca_dim = kSvccaDims,
                          bool spectral_only = false);

// The profile of one direction only, anchored on X (`image_anchor`) or on Y: one
// eigendecomposition, what SAS in that direction needs. Bit-identical to the same direction
// of analyze(). Requires count() >= 2.
SpectralProfile anchor_profile(const Moments& moments, bool image_anchor);

}  // namespace fastsas
