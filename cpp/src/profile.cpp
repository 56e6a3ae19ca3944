// One direction's spectral profile, for fs.sas: the anchor's eigenproblem only, instead of
// analyze()'s four (both directions and SVCCA's two subspaces), from the same scaled
// covariances, so that SAS at any magnitude is the one fs.alignment gives.
#include "fastsas/spectral.hpp"

namespace fastsas {

SpectralProfile anchor_profile(const Moments& moments, bool image_anchor) {
  // One profile's memory: analyze()'s with one eigenproblem at a time and no SVCCA.
  const double bytes = analysis_bytes(moments.dim(), 1, true);
  return scaled_profile(scaled_covariances(moments, "the spectral profile", bytes), image_anchor);
}

}  // namespace fastsas
