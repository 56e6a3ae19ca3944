#include "fastsas/blas.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <mutex>

#include "fastsas/memory.hpp"
#include <stdexcept>
#include <string>
#include <vector>

namespace fastsas::blas {

void use_calling_thread_only() {
  static std::once_flag once;
  std::call_once(once, [] { scipy_openblas_set_num_threads(1); });
}

// A row-major k x n block is the column-major n x k matrix A, and sum_r r r^T = A A^T.
void syrk_rows_upper(int n, int k, const float* rows, int lda, float* c, int ldc) {
  scipy_cblas_ssyrk(CblasColMajor, CblasUpper, CblasNoTrans, n, k, 1.0f, rows, lda, 0.0f, c, ldc);
}

void syrk_rows_upper(int n, int k, const double* rows, int lda, double* c, int ldc) {
  scipy_cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, n, k, 1.0, rows, lda, 0.0, c, ldc);
}

void gemm_colmajor(int m, int n, int k, const double* a, const double* b, double* c) {
  scipy_cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, a, m, b, k, 0.0, c, m);
}

namespace {

// LAPACKE allocates the solvers' workspace itself and says so when it cannot.
void check_workspace(lapack_int info, const char* solver, int n, double doubles) {
  if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
    throw OutOfMemory(std::string("fastsas: the system refused ") + format_bytes(8.0 * doubles) + " for " + solver +
                      "'s workspace (a " + std::to_string(n) + " x " + std::to_string(n) +
                      " eigendecomposition): out of memory");
}

}  // namespace

void symmetric_eigen(int n, double* a, double* w) {
  const lapack_int info = scipy_LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', n, a, n, w);
  const double dn = static_cast<double>(n);
  check_workspace(info, "LAPACK dsyevd", n, 1.0 + 6.0 * dn + 2.0 * dn * dn);
  if (info != 0)
    throw std::runtime_error("LAPACK dsyevd failed (info = " + std::to_string(info) + ")");
}

void symmetric_eigen_top(int n, int count, double* a, double* w, double* z) {
  lapack_int found = 0;
  std::vector<lapack_int> support(2 * static_cast<size_t>(count));
  const lapack_int info = scipy_LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', n, a, n, 0.0, 0.0,
                                               n - count + 1, n, 0.0, &found, w, z, n,
                                               support.data());
  check_workspace(info, "LAPACK dsyevr", n, 26.0 * static_cast<double>(n));
  if (info != 0 || found != count)
    throw std::runtime_error("LAPACK dsyevr failed (info = " + std::to_string(info) + ")");
}

void singular_values(int m, int n, double* a, double* s) {
  const lapack_int info = scipy_LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', m, n, a, m, s, nullptr, 1, nullptr, 1);
  if (info != 0)
    throw std::runtime_error("LAPACK dgesdd failed (info = " + std::to_string(info) + ")");
}

}  // namespace fastsas::blas
