// NumPy buffer -> strided core view, shared by every binding file.
#pragma once

#include <pybind11/numpy.h>

#include <string>
#include <vector>

#include "fastsas/moments.hpp"

namespace fastsas::bindings {

// A view of any 2-D NumPy array of T (C, Fortran, strided, negative strides): no copy.
template <class T>
MatrixView<T> view_of(const pybind11::array& a, const char* name) {
  if (a.ndim() != 2) throw pybind11::value_error(std::string(name) + " must be 2-D");
  const auto item = static_cast<Index>(sizeof(T));
  if (a.strides(0) % item != 0 || a.strides(1) % item != 0)
    throw pybind11::value_error(std::string(name) + " has strides that are not a multiple of its item size");
  MatrixView<T> v;
  v.data = static_cast<const T*>(a.data());
  v.rows = a.shape(0);
  v.cols = a.shape(1);
  v.row_stride = a.strides(0) / item;
  v.col_stride = a.strides(1) / item;
  return v;
}

// Calls fn(T{}) for the float dtype shared by x and y (float32 or float64). Dtypes are
// compared for equivalence, not identity: an array unpickled in another process (Dask,
// multiprocessing) carries an equal but distinct dtype object.
template <class Fn>
auto dispatch_float(const pybind11::array& x, const pybind11::array& y, const char* names, Fn&& fn)
    -> decltype(fn(float{})) {
  auto& api = pybind11::detail::npy_api::get();
  auto equivalent = [&](const pybind11::dtype& a, const pybind11::dtype& b) {
    return api.PyArray_EquivTypes_(a.ptr(), b.ptr()) != 0;
  };
  if (!equivalent(x.dtype(), y.dtype())) throw pybind11::type_error(std::string(names) + " must have the same dtype");
  if (equivalent(x.dtype(), pybind11::dtype::of<float>())) return fn(float{});
  if (equivalent(x.dtype(), pybind11::dtype::of<double>())) return fn(double{});
  throw pybind11::type_error(std::string(names) + " must be float32 or float64 arrays");
}

// A NumPy array that takes over `v` (no copy): 1-D of `rows` when cols < 0, else rows x cols.
template <class V>
pybind11::array_t<V> array_from_vector(std::vector<V>&& v, Index rows, Index cols = -1) {
  auto* heap = new std::vector<V>(std::move(v));
  pybind11::capsule owner(heap, [](void* p) { delete static_cast<std::vector<V>*>(p); });
  if (cols < 0) return pybind11::array_t<V>({static_cast<pybind11::ssize_t>(rows)}, heap->data(), owner);
  return pybind11::array_t<V>({static_cast<pybind11::ssize_t>(rows), static_cast<pybind11::ssize_t>(cols)},
                              heap->data(), owner);
}

}  // namespace fastsas::bindings
