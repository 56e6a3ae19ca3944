// The only translation unit that knows Python: converts NumPy buffers to strided views,
// checks dtypes and shapes, releases the GIL around the heavy work, and turns C++
// exceptions into Python ones.
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "calls.hpp"
#include "fastsas/memory.hpp"
#include "fastsas/moments.hpp"
#include "fastsas/spectral.hpp"
#include "views.hpp"

namespace py = pybind11;
using fastsas::Index;

namespace {


template <class T>
void update_typed(fastsas::Moments& m, const py::array& x, const py::array& y, int threads) {
  const auto xv = fastsas::bindings::view_of<T>(x, "x");
  const auto yv = fastsas::bindings::view_of<T>(y, "y");
  fastsas::bindings::run_released("Moments.update of " + fastsas::bindings::shape_of(xv) + " rows",
                                  [&] { m.update(xv, yv, threads); });
}

template <class T>
void update_rows_typed(fastsas::Moments& m, const py::array& x, const py::array& y,
                       const py::array_t<Index, py::array::c_style | py::array::forcecast>& rows, int threads) {
  const auto xv = fastsas::bindings::view_of<T>(x, "x");
  const auto yv = fastsas::bindings::view_of<T>(y, "y");
  if (rows.ndim() != 1) throw py::value_error("rows must be 1-D");
  fastsas::bindings::run_released("Moments.update of " + std::to_string(rows.shape(0)) + " rows of " +
                                      fastsas::bindings::shape_of(xv),
                                  [&] { m.update_rows(xv, yv, rows.data(), rows.shape(0), threads); });
}

template <class T>
void update_groups_typed(fastsas::MomentsGroups& g, const py::array& x, const py::array& y,
                         const py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>& codes,
                         int threads) {
  const auto xv = fastsas::bindings::view_of<T>(x, "x");
  const auto yv = fastsas::bindings::view_of<T>(y, "y");
  if (codes.ndim() != 1 || codes.shape(0) != xv.rows)
    throw py::value_error("codes must be 1-D with one code per row");
  fastsas::bindings::run_released("MomentsGroups.update of " + fastsas::bindings::shape_of(xv) + " rows",
                                  [&] { g.update(xv, yv, codes.data(), threads); });
}

using fastsas::bindings::dispatch_float;

void update(fastsas::Moments& m, const py::array& x, const py::array& y, int threads) {
  dispatch_float(x, y, "x and y", [&](auto tag) { update_typed<decltype(tag)>(m, x, y, threads); });
}

py::dict profile_dict(const fastsas::SpectralProfile& p) {
  py::dict d;
  d["eigenvalues"] = p.eigenvalues;
  d["a"] = p.cross;
  d["s"] = p.other_variance;
  d["rho"] = p.rho;
  return d;
}

py::dict analysis_dict(const fastsas::AlignmentAnalysis& a) {
  py::dict d;
  d["n"] = a.count;
  d["i2t"] = profile_dict(a.image_to_text);
  d["t2i"] = profile_dict(a.text_to_image);
  d["cka"] = a.cka;
  d["coral"] = a.coral;
  d["svcca"] = a.svcca;
  d["svcca_dim"] = a.svcca_dim;
  d["centroid_euclidean"] = a.centroid_euclidean;
  d["centroid_cosine"] = a.centroid_cosine;
  d["delta_cos"] = a.delta_cos;
  d["rmg"] = a.rmg;
  d["rmg_paper"] = a.rmg_paper;
  d["cone_images"] = a.cone_images;
  d["cone_texts"] = a.cone_texts;
  d["matched_cosine"] = a.matched_cosine;
  d["gap"] = a.gap;
  py::dict undefined;
  for (const auto& [metric, reason] : a.undefined) undefined[py::str(metric)] = reason;
  d["undefined"] = undefined;
  return d;
}

fastsas::SpectralProfile profile_from(const Eigen::VectorXd& eigenvalues, const Eigen::VectorXd& rho) {
  if (eigenvalues.size() != rho.size() || eigenvalues.size() == 0)
    throw py::value_error("eigenvalues and rho must be non-empty and of equal length");
  fastsas::SpectralProfile p;
  p.eigenvalues = eigenvalues;
  p.rho = rho;
  return p;
}

}  // namespace

void register_pairwise(pybind11::module_& m);
void register_neighbourhood(pybind11::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastsas C++ core: streaming moments, spectral alignment and covariance-family metrics";
  m.attr("DEFINITIONS_VERSION") = fastsas::kDefinitionsVersion;
  m.attr("BLOCK_ROWS") = fastsas::Moments::kBlockRows;
  m.attr("SVCCA_DIMS") = fastsas::kSvccaDims;
  m.attr("NON_FINITE_ROWS") = fastsas::kNonFiniteRows;
  m.attr("ZERO_NORM_ROWS") = fastsas::kZeroNormRows;
  m.attr("TOO_LARGE_ROWS") = fastsas::kTooLargeRows;
  m.attr("TOO_SMALL_ROWS") = fastsas::kTooSmallRows;
  m.attr("TOO_LARGE_TO_NORMALISE_ROWS") = fastsas::kTooLargeToNormaliseRows;
  m.attr("BAD_ROWS_SHOWN") = fastsas::kBadRowsShown;

  static py::exception<fastsas::BadRowsError> bad_rows(m, "BadRowsError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastsas::BadRowsError& e) {
      py::object err = py::reinterpret_borrow<py::object>(bad_rows.ptr())(e.what());
      err.attr("input") = e.input();
      err.attr("problem") = e.problem();
      err.attr("rows") = e.rows();
      err.attr("total") = e.total();
      PyErr_SetObject(bad_rows.ptr(), err.ptr());
    }
  });

  py::class_<fastsas::Moments>(m, "Moments")
      .def(py::init<Index, bool>(), py::arg("dim"), py::arg("track_unit_rows") = true)
      .def("update", &update, py::arg("x"), py::arg("y"), py::arg("threads"))
      .def(
          "update_rows",
          [](fastsas::Moments& self, const py::array& x, const py::array& y,
             const py::array_t<Index, py::array::c_style | py::array::forcecast>& rows, int threads) {
            dispatch_float(x, y, "x and y", [&](auto tag) { update_rows_typed<decltype(tag)>(self, x, y, rows, threads); });
          },
          py::arg("x"), py::arg("y"), py::arg("rows"), py::arg("threads"))
      .def(
          "merge",
          [](fastsas::Moments& self, const fastsas::Moments& other) {
            py::gil_scoped_release release;
            self.merge(other);
          },
          py::arg("other"))
      .def("copy", [](const fastsas::Moments& self) { return fastsas::Moments(self); })
      .def_property_readonly("dim", &fastsas::Moments::dim)
      .def_property_readonly("count", &fastsas::Moments::count)
      .def_property_readonly("tracks_unit_rows", &fastsas::Moments::tracks_unit_rows)
      .def("mean", &fastsas::Moments::mean)
      .def("centered_scatter", &fastsas::Moments::centered_scatter)
      .def("unit_sum", [](const fastsas::Moments& s) { return Eigen::VectorXd(s.unit_sum()); })
      .def_property_readonly("matched_cosine_sum", &fastsas::Moments::matched_cosine_sum)
      .def("state", [](const fastsas::Moments& s) {
        py::dict d;
        d["count"] = s.count();
        d["has_pilot"] = s.has_pilot();
        d["pilot"] = Eigen::VectorXd(s.pilot());
        d["shifted_sum"] = Eigen::VectorXd(s.shifted_sum());
        d["shifted_scatter"] = Eigen::MatrixXd(s.shifted_scatter());
        d["unit_sum"] = Eigen::VectorXd(s.unit_sum());
        d["matched_cosine_sum"] = s.matched_cosine_sum();
        return d;
      })
      .def("restore", &fastsas::Moments::restore, py::arg("count"), py::arg("has_pilot"),
           py::arg("pilot"), py::arg("shifted_sum"), py::arg("shifted_scatter"), py::arg("unit_sum"),
           py::arg("matched_cosine_sum"));

  py::class_<fastsas::MomentsGroups>(m, "MomentsGroups")
      .def(py::init<Index, Index, bool>(), py::arg("groups"), py::arg("dim"), py::arg("track_unit_rows") = true)
      .def(
          "update",
          [](fastsas::MomentsGroups& g, const py::array& x, const py::array& y,
             const py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>& codes, int threads) {
            dispatch_float(x, y, "x and y", [&](auto tag) { update_groups_typed<decltype(tag)>(g, x, y, codes, threads); });
          },
          py::arg("x"), py::arg("y"), py::arg("codes"), py::arg("threads"))
      .def_property_readonly("size", &fastsas::MomentsGroups::size)
      .def(
          "group", [](const fastsas::MomentsGroups& g, Index index) { return fastsas::Moments(g.group(index)); },
          py::arg("index"));

  m.def(
      "analyze",
      [](const fastsas::Moments& moments, int threads, Index cca_dim, bool spectral_only) {
        return analysis_dict(fastsas::bindings::run_released(
            "the alignment analysis at dim " + std::to_string(moments.dim()),
            [&] { return fastsas::analyze(moments, threads, cca_dim, spectral_only); }));
      },
      py::arg("moments"), py::arg("threads"), py::arg("cca_dim") = fastsas::kSvccaDims,
      py::arg("spectral_only") = false);

  m.def(
      "spectral_profile",
      [](const fastsas::Moments& moments, const std::string& anchor) {
        if (anchor != "x" && anchor != "y") throw py::value_error("anchor must be \"x\" or \"y\"");
        return profile_dict(fastsas::bindings::run_released(
            "the spectral profile at dim " + std::to_string(moments.dim()),
            [&] { return fastsas::anchor_profile(moments, anchor == "x"); }));
      },
      py::arg("moments"), py::arg("anchor"));

  m.def(
      "sas_from_profile",
      [](const Eigen::VectorXd& eigenvalues, const Eigen::VectorXd& rho, double q) {
        return fastsas::sas_from_profile(profile_from(eigenvalues, rho), q);
      },
      py::arg("eigenvalues"), py::arg("rho"), py::arg("q"));

  m.def("quantile_linear", &fastsas::quantile_linear, py::arg("values"), py::arg("p"));

  m.def("set_memory_limit", &fastsas::set_memory_limit, py::arg("bytes"),
        "Cap, in bytes, on the memory fastsas's core assumes it may allocate (0: none, MemAvailable only).");
  m.def("memory_limit", &fastsas::memory_limit, "The cap set by set_memory_limit (0: none).");
  m.def("available_memory", &fastsas::available_memory,
        "Bytes the core assumes it may allocate now: min(MemAvailable, the cap); negative when unknown.");
  m.def("moments_state_bytes", &fastsas::Moments::state_bytes, py::arg("dim"));
  m.def("analysis_bytes", &fastsas::analysis_bytes, py::arg("dim"), py::arg("threads"), py::arg("spectral_only"));

  register_pairwise(m);
  register_neighbourhood(m);
}
