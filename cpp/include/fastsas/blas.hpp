// Thin typed wrappers over the OpenBLAS/LAPACK build that NumPy ships (scipy-openblas32,
// every symbol prefixed `scipy_`). The heavy products of fastsas go through these: on the
// development machines OpenBLAS SSYRK runs 2-3x faster than Eigen's own kernels.
#pragma once

#include <cstdint>

namespace fastsas::blas {

// fastsas parallelises over row blocks and tasks itself (fixed reduction order, identical
// bits for any thread count), so its private OpenBLAS runs every call on the calling
// thread. This OpenBLAS build has only a process-wide setting; it is applied once, before
// the first heavy call. (NumPy links its own OpenBLAS copy, which this does not touch.)
void use_calling_thread_only();

// C = sum over the k rows r of `rows` of r r^T: `rows` is row-major k x n (leading dimension
// lda), C is column-major n x n and only its upper triangle is written.
void syrk_rows_upper(int n, int k, const float* rows, int lda, float* c, int ldc);
void syrk_rows_upper(int n, int k, const double* rows, int lda, double* c, int ldc);

// C = A * B for column-major A (m x k), B (k x n), C (m x n).
void gemm_colmajor(int m, int n, int k, const double* a, const double* b, double* c);

// Symmetric eigendecomposition of a column-major n x n matrix (upper triangle read).
// On return `a` holds the eigenvectors as columns, `w` the eigenvalues, both ascending.
// Throws std::runtime_error when LAPACK reports failure.
void symmetric_eigen(int n, double* a, double* w);

// The `count` largest eigenpairs only (LAPACK dsyevr with an index range), ascending.
// `a` is overwritten; `z` receives n x count eigenvectors (column-major).
void symmetric_eigen_top(int n, int count, double* a, double* w, double* z);

// Singular values only (LAPACK dgesdd), descending, of a column-major m x n matrix `a`
// (overwritten); `s` receives min(m, n) values. Throws std::runtime_error on failure.
void singular_values(int m, int n, double* a, double* s);

}  // namespace fastsas::blas
