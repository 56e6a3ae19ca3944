// Per-row, per-class sums of Euclidean distances: the n x C table the Euclidean silhouette
// needs (docs/definitions.md, "Class separability"), computed from tiles of one float64 GEMM
// (|a|^2 + |b|^2 - 2 a.b, clamped at 0, square-rooted), reduced on the fly. Memory is
// O(n C + tile d), never an n x n matrix.
#pragma once

#include <cstdint>
#include <vector>

#include "fastsas/moments.hpp"

namespace fastsas {

inline constexpr Index kClassDistanceTile = 512;

struct ClassDistanceOptions {
  Index tile = 0;  // rows per tile (0: kClassDistanceTile)
  int threads = 1;
};

// sums[i * n_classes + c] = sum over rows j != i with codes[j] == c of ||x_i - x_j|| (row i
// itself is left out of its own class's sum). Rows are converted to float64 tile by tile; the
// sum of every row runs over the column tiles in ascending order, so the result does not
// depend on the thread count. Throws std::invalid_argument when a code is outside
// [0, n_classes) or a value is not finite.
template <class T>
std::vector<double> class_distance_sums(const MatrixView<T>& x, const std::int32_t* codes, Index n_classes,
                                        const ClassDistanceOptions& options);

}  // namespace fastsas
