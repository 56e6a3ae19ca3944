// One direction's spectral profile, for fs.sas: the anchor's eigenproblem only, instead of
// analyze()'s four (both directions and SVCCA's two subspaces).
#include <stdexcept>
#include <string>

#include "fastsas/blas.hpp"
#include "fastsas/spectral.hpp"

namespace fastsas {

SpectralProfile anchor_profile(const Moments& moments, bool image_anchor) {
  const Index n = moments.count();
  if (n < 2) throw std::invalid_argument("alignment needs at least 2 rows, got " + std::to_string(n));
  // As analyze(): one BLAS thread, so the eigenvectors do not depend on the thread count.
  blas::use_calling_thread_only();
  const Index d = moments.dim();
  const double nd = static_cast<double>(n);
  const Eigen::MatrixXd scatter = moments.centered_scatter();
  const Eigen::MatrixXd cx = scatter.topLeftCorner(d, d) / nd;
  const Eigen::MatrixXd cy = scatter.bottomRightCorner(d, d) / nd;
  const Eigen::MatrixXd cxy = scatter.topRightCorner(d, d) / nd;
  if (image_anchor) return spectral_profile(cx, cxy, cy);
  return spectral_profile(cy, cxy.transpose(), cx);
}

}  // namespace fastsas
