// Bindings of the separability kernels: the per-row, per-class Euclidean distance sums.
// NumPy buffers to strided views, shape checks, the GIL released around the heavy work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fastsas/class_distances.hpp"
#include "calls.hpp"
#include "views.hpp"

namespace py = pybind11;
using fastsas::Index;

namespace {

using Codes = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;

template <class T>
std::vector<double> sums_typed(const py::array& x, const Codes& codes, Index n_classes,
                               const fastsas::ClassDistanceOptions& opt) {
  const auto xv = fastsas::bindings::view_of<T>(x, "x");
  return fastsas::bindings::run_released(
      "class distance sums of " + fastsas::bindings::shape_of(xv) + " rows",
      [&] { return fastsas::class_distance_sums(xv, codes.data(), n_classes, opt); });
}

}  // namespace

void register_separability(py::module_& m) {
  m.attr("CLASS_DISTANCE_TILE") = fastsas::kClassDistanceTile;
  m.def(
      "class_distance_sums",
      [](const py::array& x, const py::object& codes_in, Index n_classes, Index tile, int threads) {
        const Codes codes = Codes::ensure(codes_in);
        if (!codes || codes.ndim() != 1) throw py::type_error("codes must be a 1-D array of integer class codes");
        if (x.ndim() != 2 || codes.shape(0) != x.shape(0))
          throw py::value_error("x must be 2-D with one code per row (codes has " + std::to_string(codes.shape(0)) +
                                " entries)");
        if (n_classes < 1) throw py::value_error("n_classes must be at least 1");
        fastsas::ClassDistanceOptions opt;
        opt.tile = tile;
        opt.threads = threads;
        std::vector<double> sums = fastsas::bindings::dispatch_float(x, x, "x", [&](auto tag) {
          return sums_typed<decltype(tag)>(x, codes, n_classes, opt);
        });
        return fastsas::bindings::array_from_vector(std::move(sums), x.shape(0), n_classes);
      },
      py::arg("x"), py::arg("codes"), py::arg("n_classes"), py::arg("tile") = 0, py::arg("threads") = 1,
      "Per row, the sum of Euclidean distances to the rows of every class (the row itself left out).");
}
