// NumPy buffer -> strided core view, shared by every binding file.
#pragma once

#include <pybind11/numpy.h>

#include <string>

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

}  // namespace fastsas::bindings
