// Bindings of the pairwise kernels (retrieval ranks, MMD): NumPy buffers to strided views,
// dtype and shape checks, the GIL released around the heavy work. BadRowsError is translated
// by the translator registered in module.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "calls.hpp"
#include "fastsas/pairwise.hpp"
#include "views.hpp"

namespace py = pybind11;
using fastsas::Index;
using fastsas::bindings::dispatch_float;
using fastsas::bindings::kPrecisions;
using fastsas::bindings::precision_of;

namespace {

using Codes = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;

void put_screen(py::dict& out, std::int64_t rechecked, std::int64_t screened, fastsas::ScreenPrecision precision) {
  out["rechecked"] = rechecked;
  out["screened"] = screened;
  out["precision"] = std::string(fastsas::screen_precision_name(precision));
}

template <class V>
py::array_t<V> to_numpy(std::vector<V>&& v, Index rows, Index cols) {
  auto* heap = new std::vector<V>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<V>*>(p); });
  if (cols < 0) return py::array_t<V>({static_cast<py::ssize_t>(rows)}, heap->data(), owner);
  return py::array_t<V>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)}, heap->data(), owner);
}

template <class T>
py::dict retrieval_typed(const py::array& x, const py::array& y, const py::object& image_codes,
                         const py::object& text_codes, const fastsas::RetrievalOptions& opt) {
  const auto xv = fastsas::bindings::view_of<T>(x, "images");
  const auto yv = fastsas::bindings::view_of<T>(y, "texts");
  if (image_codes.is_none() != text_codes.is_none())
    throw py::value_error("give image_codes and text_codes, or neither");
  Codes ic, tc;
  const std::int32_t *icp = nullptr, *tcp = nullptr;
  if (!image_codes.is_none()) {
    ic = Codes::ensure(image_codes);
    tc = Codes::ensure(text_codes);
    if (!ic || !tc) throw py::type_error("image_codes and text_codes must be integer arrays");
    if (ic.ndim() != 1 || ic.shape(0) != xv.rows)
      throw py::value_error("image_codes must be 1-D with one code per image");
    if (tc.ndim() != 1 || tc.shape(0) != yv.rows)
      throw py::value_error("text_codes must be 1-D with one code per text");
    icp = ic.data();
    tcp = tc.data();
  }
  using fastsas::bindings::shape_of;
  fastsas::RetrievalResult r =
      fastsas::bindings::run_released("retrieval of " + shape_of(xv) + " images and " + shape_of(yv) + " texts",
                                      [&] { return fastsas::retrieval(xv, yv, icp, tcp, opt); });
  py::dict out;
  const Index n = xv.rows, m = yv.rows;
  out["image_ranks"] = to_numpy(std::move(r.image_ranks), n, -1);
  out["text_ranks"] = to_numpy(std::move(r.text_ranks), m, -1);
  put_screen(out, r.rechecked, r.screened, r.precision);
  if (r.topk > 0) {
    out["image_topk"] = to_numpy(std::move(r.image_topk), n, r.topk);
    out["image_topk_sim"] = to_numpy(std::move(r.image_topk_sim), n, r.topk);
    out["text_topk"] = to_numpy(std::move(r.text_topk), m, r.topk);
    out["text_topk_sim"] = to_numpy(std::move(r.text_topk_sim), m, r.topk);
  }
  return out;
}

using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;

// A 1-D int32 code / float64 threshold array with one entry per row of a block.
template <class A>
A one_per_row(const py::object& obj, Index rows, const char* name, const char* kind) {
  A a = A::ensure(obj);
  if (!a) throw py::type_error(std::string(name) + " must be a 1-D " + kind + " array");
  if (a.ndim() != 1 || a.shape(0) != rows)
    throw py::value_error(std::string(name) + " must be 1-D with one entry per row (" + std::to_string(rows) +
                          "), got shape of " + std::to_string(a.ndim() == 1 ? a.shape(0) : -1));
  return a;
}

static_assert(sizeof(fastsas::ExactThreshold) == 2 * sizeof(std::int64_t), "ExactThreshold is two int64");
using Exacts = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

// (rows, 2) int64 array of exact thresholds, or null for None.
const fastsas::ExactThreshold* exact_of(const py::object& obj, Index rows, const char* name, Exacts& keep) {
  if (obj.is_none()) return nullptr;
  keep = Exacts::ensure(obj);
  if (!keep || keep.ndim() != 2 || keep.shape(0) != rows || keep.shape(1) != 2)
    throw py::value_error(std::string(name) + " must be None or an int64 array of shape (" + std::to_string(rows) +
                          ", 2) from retrieval_thresholds(..., exact=True)");
  return reinterpret_cast<const fastsas::ExactThreshold*>(keep.data());
}

template <class T>
py::object thresholds_typed(const py::array& q, const py::array& c, const py::object& qcodes,
                            const py::object& ccodes, const std::string& qname, const std::string& cname, int threads,
                            bool want_exact) {
  const auto qv = fastsas::bindings::view_of<T>(q, "queries");
  const auto cv = fastsas::bindings::view_of<T>(c, "candidates");
  const Codes qc = one_per_row<Codes>(qcodes, qv.rows, "query_codes", "integer");
  const Codes cc = one_per_row<Codes>(ccodes, cv.rows, "candidate_codes", "integer");
  using fastsas::bindings::shape_of;
  std::vector<fastsas::ExactThreshold> exact;
  std::vector<double> thr = fastsas::bindings::run_released(
      "retrieval thresholds of " + shape_of(qv) + " queries and " + shape_of(cv) + " candidates", [&] {
    return fastsas::retrieval_thresholds(qv, cv, qc.data(), cc.data(), qname.c_str(), cname.c_str(), threads,
                                         want_exact ? &exact : nullptr);
  });
  py::array_t<double> values = to_numpy(std::move(thr), qv.rows, -1);
  if (!want_exact) return std::move(values);
  std::vector<std::int64_t> flat(2 * exact.size());
  std::memcpy(flat.data(), exact.data(), sizeof(std::int64_t) * flat.size());
  return py::make_tuple(values, to_numpy(std::move(flat), qv.rows, 2));
}

template <class T>
py::dict counts_typed(const py::array& x, const py::array& y, const py::object& image_codes,
                      const py::object& text_codes, const py::object& image_thresholds,
                      const py::object& text_thresholds, const fastsas::RetrievalOptions& opt,
                      const py::object& image_exact, const py::object& text_exact) {
  const auto xv = fastsas::bindings::view_of<T>(x, "images");
  const auto yv = fastsas::bindings::view_of<T>(y, "texts");
  const Codes ic = one_per_row<Codes>(image_codes, xv.rows, "image_codes", "integer");
  const Codes tc = one_per_row<Codes>(text_codes, yv.rows, "text_codes", "integer");
  const Doubles it = one_per_row<Doubles>(image_thresholds, xv.rows, "image_thresholds", "float");
  const Doubles tt = one_per_row<Doubles>(text_thresholds, yv.rows, "text_thresholds", "float");
  Exacts keep_i, keep_t;
  const fastsas::ExactThreshold* ie = exact_of(image_exact, xv.rows, "image_exact", keep_i);
  const fastsas::ExactThreshold* te = exact_of(text_exact, yv.rows, "text_exact", keep_t);
  using fastsas::bindings::shape_of;
  fastsas::RetrievalCounts r = fastsas::bindings::run_released(
      "retrieval counts of " + shape_of(xv) + " images and " + shape_of(yv) + " texts",
      [&] { return fastsas::retrieval_counts(xv, yv, ic.data(), tc.data(), it.data(), tt.data(), opt, ie, te); });
  py::dict out;
  out["image_counts"] = to_numpy(std::move(r.image_counts), xv.rows, -1);
  out["text_counts"] = to_numpy(std::move(r.text_counts), yv.rows, -1);
  put_screen(out, r.rechecked, r.screened, r.precision);
  return out;
}

template <class T>
py::dict mmd_typed(const py::array& x, const py::array& y, double sigma, const fastsas::MmdOptions& opt) {
  const auto xv = fastsas::bindings::view_of<T>(x, "x");
  const auto yv = fastsas::bindings::view_of<T>(y, "y");
  using fastsas::bindings::shape_of;
  const fastsas::MmdResult r = fastsas::bindings::run_released("MMD of " + shape_of(xv) + " and " + shape_of(yv) + " rows",
                                                               [&] { return fastsas::mmd(xv, yv, sigma, opt); });
  py::dict out;
  out["mmd"] = r.mmd;
  out["mean_kxx"] = r.mean_kxx;
  out["mean_kyy"] = r.mean_kyy;
  out["mean_kxy"] = r.mean_kxy;
  return out;
}

}  // namespace

void register_pairwise(py::module_& m) {
  m.attr("RETRIEVAL_TILE_ROWS") = fastsas::kRetrievalTileRows;
  m.attr("RETRIEVAL_TILE_COLS") = fastsas::kRetrievalTileCols;
  m.attr("MMD_TILE") = fastsas::kMmdTile;
  py::list precisions;
  for (fastsas::ScreenPrecision p : kPrecisions) precisions.append(fastsas::screen_precision_name(p));
  m.attr("RETRIEVAL_PRECISIONS") = py::tuple(precisions);
  m.attr("RETRIEVAL_INTEGER_NORM2_MAX") = fastsas::kIntegerRowNorm2Max;

  m.def(
      "retrieval",
      [](const py::array& x, const py::array& y, const py::object& image_codes, const py::object& text_codes,
         Index tile_rows, Index tile_cols, int threads, Index topk, const std::string& precision) {
        fastsas::RetrievalOptions opt;
        opt.tile_rows = tile_rows;
        opt.tile_cols = tile_cols;
        opt.threads = threads;
        opt.topk = topk;
        opt.precision = precision_of(precision);
        return dispatch_float(x, y, "images and texts", [&](auto tag) {
          return retrieval_typed<decltype(tag)>(x, y, image_codes, text_codes, opt);
        });
      },
      py::arg("x"), py::arg("y"), py::arg("image_codes") = py::none(), py::arg("text_codes") = py::none(),
      py::arg("tile_rows") = 0, py::arg("tile_cols") = 0, py::arg("threads") = 1, py::arg("topk") = 0,
      py::arg("precision") = "auto",
      "Exact bidirectional retrieval ranks (0 for a query without a match) and optional top-k; "
      "'rechecked' of 'screened' tile entries were re-decided exactly; 'precision' is the tile precision used.");

  m.def(
      "retrieval_thresholds",
      [](const py::array& queries, const py::array& candidates, const py::object& query_codes,
         const py::object& candidate_codes, const std::string& query_input, const std::string& candidate_input,
         int threads, bool exact) {
        return dispatch_float(queries, candidates, "queries and candidates", [&](auto tag) {
          return thresholds_typed<decltype(tag)>(queries, candidates, query_codes, candidate_codes, query_input,
                                                 candidate_input, threads, exact);
        });
      },
      py::arg("queries"), py::arg("candidates"), py::arg("query_codes"), py::arg("candidate_codes"),
      py::arg("query_input") = "x", py::arg("candidate_input") = "y", py::arg("threads") = 1,
      py::arg("exact") = false,
      "Per query, the canonical similarity of its best match among the candidates (+inf: none); with exact=True "
      "also the (n, 2) int64 exact thresholds (query . match, |match|^2; 0, 0 unless both are integer rows).");

  m.def(
      "retrieval_counts",
      [](const py::array& x, const py::array& y, const py::object& image_codes, const py::object& text_codes,
         const py::object& image_thresholds, const py::object& text_thresholds, Index tile_rows, Index tile_cols,
         int threads, const std::string& precision, const py::object& image_exact, const py::object& text_exact) {
        fastsas::RetrievalOptions opt;
        opt.tile_rows = tile_rows;
        opt.tile_cols = tile_cols;
        opt.threads = threads;
        opt.precision = precision_of(precision);
        return dispatch_float(x, y, "images and texts", [&](auto tag) {
          return counts_typed<decltype(tag)>(x, y, image_codes, text_codes, image_thresholds, text_thresholds, opt,
                                             image_exact, text_exact);
        });
      },
      py::arg("x"), py::arg("y"), py::arg("image_codes"), py::arg("text_codes"), py::arg("image_thresholds"),
      py::arg("text_thresholds"), py::arg("tile_rows") = 0, py::arg("tile_cols") = 0, py::arg("threads") = 1,
      py::arg("precision") = "auto", py::arg("image_exact") = py::none(), py::arg("text_exact") = py::none(),
      "Counts of non-matching candidates above each query's threshold for one (image, text) block pair.");

  m.def(
      "retrieval_screen_check",
      [](const py::array& x, const py::array& y, const std::string& precision) {
        return dispatch_float(x, y, "x and y", [&](auto tag) {
          using T = decltype(tag);
          const auto xv = fastsas::bindings::view_of<T>(x, "x");
          const auto yv = fastsas::bindings::view_of<T>(y, "y");
          const fastsas::ScreenPrecision p = precision_of(precision);
          using fastsas::bindings::shape_of;
          fastsas::ScreenCheck c = fastsas::bindings::run_released(
              "retrieval screen check of " + shape_of(xv) + " and " + shape_of(yv) + " rows",
              [&] { return fastsas::retrieval_screen_check(xv, yv, p); });
          py::dict out;
          out["screened"] = to_numpy(std::move(c.screened), xv.rows, yv.rows);
          out["bound"] = to_numpy(std::move(c.bound), xv.rows, yv.rows);
          out["canonical"] = to_numpy(std::move(c.canonical), xv.rows, yv.rows);
          return out;
        });
      },
      py::arg("x"), py::arg("y"), py::arg("precision"),
      "Every screened similarity of x's rows against y's, its proven error bound and the canonical value "
      "(n x m each; tests and diagnostics).");

  m.def(
      "screen_supported",
      [](const std::string& precision) {
        const fastsas::ScreenPrecision p = precision_of(precision);
        return fastsas::bindings::run_released("retrieval screen support check",
                                                [&] { return fastsas::screen_supported(p); });
      },
      py::arg("precision"), "Whether this CPU can run the retrieval tiles in `precision` (checked with cpuid).");

  m.def(
      "retrieval_tie_band",
      [](Index dim, bool float64) {
        return fastsas::bindings::run_released("retrieval tie band",
                                                [&] { return fastsas::retrieval_tie_band(dim, float64); });
      },
      py::arg("dim"), py::arg("float64"),
      "The tie band of the exact-tie rule for rows of dimension `dim` stored in float64 (else float32).");

  m.def(
      "mmd",
      [](const py::array& x, const py::array& y, double sigma, Index tile, int threads) {
        fastsas::MmdOptions opt;
        opt.tile = tile;
        opt.threads = threads;
        return dispatch_float(x, y, "x and y", [&](auto tag) { return mmd_typed<decltype(tag)>(x, y, sigma, opt); });
      },
      py::arg("x"), py::arg("y"), py::arg("sigma"), py::arg("tile") = 0, py::arg("threads") = 1,
      "Exact biased RBF MMD (x100) with the kernel means.");
}
