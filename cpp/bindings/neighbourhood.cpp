// Bindings of the neighbourhood family: exact within-set neighbours, the neighbourhood
// metrics, RBF CKA, and the moment-based unbiased linear CKA and Procrustes distances.
// NumPy buffers to strided views, dtype and shape checks, the GIL released around the heavy
// work. BadRowsError is translated by the translator registered in module.cpp.
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fastsas/estimators.hpp"
#include "fastsas/kernel_cka.hpp"
#include "fastsas/neighbours.hpp"
#include "calls.hpp"
#include "views.hpp"

namespace py = pybind11;
using fastsas::Index;
using fastsas::bindings::array_from_vector;
using fastsas::bindings::dispatch_float;

namespace {

py::dict hsic_dict(const fastsas::HsicTerms& t) {
  py::dict d;
  d["kl"] = t.kl;
  d["kk"] = t.kk;
  d["ll"] = t.ll;
  d["value"] = t.value;
  return d;
}

py::dict knn_dict(fastsas::KnnResult&& r) {
  py::dict d;
  d["rechecked"] = r.rechecked;
  d["precision"] = std::string(fastsas::screen_precision_name(r.precision));
  d["band"] = r.band;
  if (r.choice.queries > 0) {  // what precision 'auto' measured
    const fastsas::KnnTileChoice& c = r.choice;
    py::dict choice;
    choice["queries"] = c.queries;
    choice["band"] = py::dict(py::arg("int8") = c.band_int8, py::arg("bfloat16") = c.band_bfloat16,
                              py::arg("gemm") = c.band_gemm);
    choice["rechecks"] = py::dict(py::arg("int8") = c.rechecks_int8, py::arg("bfloat16") = c.rechecks_bfloat16,
                                  py::arg("gemm") = c.rechecks_gemm);
    choice["cost"] = py::dict(py::arg("int8") = c.cost_int8, py::arg("bfloat16") = c.cost_bfloat16,
                              py::arg("gemm") = c.cost_gemm);
    d["choice"] = choice;
  }
  d["index"] = array_from_vector(std::move(r.index), r.rows, r.topk);
  d["similarity"] = array_from_vector(std::move(r.similarity), r.rows, r.topk);
  return d;
}

py::dict scores_dict(const fastsas::NeighbourhoodScores& s) {
  py::dict d;
  d["mutual_knn"] = s.mutual_knn;
  d["cycle_knn"] = s.cycle_knn;
  d["lcs_knn"] = s.lcs_knn;
  d["edit_distance_knn"] = s.edit_distance_knn;
  d["cknna"] = hsic_dict(s.cknna);
  d["cknna_biased"] = hsic_dict(s.cknna_biased);
  return d;
}

template <class T>
fastsas::KnnResult knn_typed(const py::array& x, Index topk, const fastsas::KnnOptions& opt, const char* input) {
  const auto xv = fastsas::bindings::view_of<T>(x, input);
  return fastsas::bindings::run_released("knn of " + fastsas::bindings::shape_of(xv) + " rows",
                                          [&] { return fastsas::knn(xv, topk, opt, input); });
}

fastsas::KnnResult knn_any(const py::array& x, Index topk, const fastsas::KnnOptions& opt, const char* input) {
  return dispatch_float(x, x, input, [&](auto tag) { return knn_typed<decltype(tag)>(x, topk, opt, input); });
}

// A KnnResult back from the arrays fs.knn returned (validated: shapes, index range).
fastsas::KnnResult knn_from(const py::object& index, const py::object& similarity, const char* name) {
  using Ints = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
  using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;
  const Ints idx = Ints::ensure(index);
  const Doubles sim = Doubles::ensure(similarity);
  if (!idx || !sim) throw py::type_error(std::string(name) + ": index must be integers and similarity floats");
  if (idx.ndim() != 2 || sim.ndim() != 2 || idx.shape(0) != sim.shape(0) || idx.shape(1) != sim.shape(1))
    throw py::value_error(std::string(name) + ": index and similarity must be 2-D arrays of one shape (n, topk)");
  fastsas::KnnResult r;
  r.rows = idx.shape(0);
  r.topk = idx.shape(1);
  r.index.assign(idx.data(), idx.data() + idx.size());
  r.similarity.assign(sim.data(), sim.data() + sim.size());
  for (Index i = 0; i < r.rows; ++i)
    for (Index p = 0; p < r.topk; ++p) {
      const std::int64_t j = r.index[i * r.topk + p];
      if (j < 0 || j >= r.rows || j == i)
        throw py::value_error(std::string(name) + ": row " + std::to_string(i) + " lists neighbour " +
                              std::to_string(j) + " (must be another row in [0, " + std::to_string(r.rows) + "))");
    }
  return r;
}

template <class T>
fastsas::RbfCkaResult rbf_typed(const py::array& x, const py::array& y, double sx, double sy,
                                const fastsas::RbfCkaOptions& opt) {
  const auto xv = fastsas::bindings::view_of<T>(x, "x");
  const auto yv = fastsas::bindings::view_of<T>(y, "y");
  return fastsas::bindings::run_released("cka_rbf of " + fastsas::bindings::shape_of(xv) + " pairs",
                                          [&] { return fastsas::rbf_cka(xv, yv, sx, sy, opt); });
}

}  // namespace

void register_neighbourhood(py::module_& m) {
  m.attr("KNN_TILE") = fastsas::kKnnTile;
  m.attr("RBF_CKA_TILE") = fastsas::kRbfCkaTile;
  m.attr("PROCRUSTES_RCOND") = fastsas::kProcrustesRcond;

  m.def(
      "knn",
      [](const py::array& x, Index topk, Index tile, int threads, const std::string& input,
         const std::string& precision) {
        fastsas::KnnOptions opt;
        opt.tile = tile;
        opt.threads = threads;
        opt.precision = fastsas::bindings::precision_of(precision);
        return knn_dict(knn_any(x, topk, opt, input.c_str()));
      },
      py::arg("x"), py::arg("topk"), py::arg("tile") = 0, py::arg("threads") = 1, py::arg("input") = "x",
      py::arg("precision") = "float32",
      "Exact top-k neighbours of every row within x (cosine, self excluded, ties by the smaller index).");

  m.def(
      "neighbourhood",
      [](const py::array& x, const py::array& y, Index topk, Index tile, int threads, const std::string& precision) {
        fastsas::KnnOptions opt;
        opt.tile = tile;
        opt.threads = threads;
        opt.precision = fastsas::bindings::precision_of(precision);
        // One modality at a time: only one packed copy of the rows is alive.
        fastsas::KnnResult a = knn_any(x, topk, opt, "x");
        fastsas::KnnResult b = knn_any(y, topk, opt, "y");
        const fastsas::NeighbourhoodScores s = fastsas::bindings::run_released(
            "neighbourhood scores", [&] { return fastsas::neighbourhood_scores(a, b, threads); });
        py::dict d = scores_dict(s);
        d["images"] = knn_dict(std::move(a));
        d["texts"] = knn_dict(std::move(b));
        return d;
      },
      py::arg("x"), py::arg("y"), py::arg("topk"), py::arg("tile") = 0, py::arg("threads") = 1,
      py::arg("precision") = "float32", "Neighbours of both sets and every neighbourhood metric from them.");

  m.def(
      "neighbourhood_scores",
      [](const py::object& index_a, const py::object& sim_a, const py::object& index_b, const py::object& sim_b,
         int threads) {
        const fastsas::KnnResult a = knn_from(index_a, sim_a, "images");
        const fastsas::KnnResult b = knn_from(index_b, sim_b, "texts");
        if (a.rows != b.rows || a.topk != b.topk)
          throw py::value_error("the images' and the texts' neighbour arrays must have the same shape (n, topk)");
        return scores_dict(fastsas::bindings::run_released(
            "neighbourhood scores", [&] { return fastsas::neighbourhood_scores(a, b, threads); }));
      },
      py::arg("index_a"), py::arg("similarity_a"), py::arg("index_b"), py::arg("similarity_b"),
      py::arg("threads") = 1, "The neighbourhood metrics from two neighbour lists (as knn returns them).");

  m.def(
      "rbf_cka",
      [](const py::array& x, const py::array& y, double sigma_x, double sigma_y, Index tile, int threads) {
        fastsas::RbfCkaOptions opt;
        opt.tile = tile;
        opt.threads = threads;
        const fastsas::RbfCkaResult r = dispatch_float(
            x, y, "x and y", [&](auto tag) { return rbf_typed<decltype(tag)>(x, y, sigma_x, sigma_y, opt); });
        py::dict d;
        d["biased"] = hsic_dict(r.biased);
        d["unbiased"] = hsic_dict(r.unbiased);
        return d;
      },
      py::arg("x"), py::arg("y"), py::arg("sigma_x"), py::arg("sigma_y"), py::arg("tile") = 0,
      py::arg("threads") = 1, "Exact RBF-kernel CKA, biased and unbiased HSIC.");

  m.def(
      "linear_cka_unbiased",
      [](const fastsas::Moments& moments) {
        return hsic_dict(fastsas::bindings::run_released(
            "the unbiased CKA", [&] { return fastsas::linear_cka_unbiased(moments); }));
      },
      py::arg("moments"), "Unbiased HSIC terms of linear kernels and the unbiased CKA, from the moments.");

  m.def(
      "procrustes",
      [](const fastsas::Moments& moments, int threads, double rcond) {
        const fastsas::ProcrustesResult r = fastsas::bindings::run_released(
            "Procrustes distances", [&] { return fastsas::procrustes(moments, threads, rcond); });
        py::dict d;
        d["distance"] = r.distance;
        d["angular"] = r.angular;
        d["whitened_angular"] = r.whitened_angular;
        d["nuclear"] = r.nuclear;
        d["canonical_sum"] = r.canonical_sum;
        d["rank_x"] = r.rank_x;
        d["rank_y"] = r.rank_y;
        return d;
      },
      py::arg("moments"), py::arg("threads") = 1, py::arg("rcond") = fastsas::kProcrustesRcond,
      "Orthogonal Procrustes distance and the angular distances (unwhitened, whitened) from the moments.");

  // The fourth-order sums of a Moments state, for its byte form.
  m.def(
      "moments_norm_state",
      [](const fastsas::Moments& moments) {
        py::dict d;
        d["tracked"] = moments.tracks_norm_moments();
        d["products"] = Eigen::Vector3d(moments.norm_moments().products);
        d["weighted"] = Eigen::MatrixXd(moments.norm_moments().weighted);
        return d;
      },
      py::arg("moments"));
  m.def(
      "moments_restore_norm",
      [](fastsas::Moments& moments, const Eigen::Vector3d& products, const Eigen::MatrixXd& weighted) {
        fastsas::NormMoments s;
        s.products = products;
        s.weighted = weighted;
        moments.restore_norm_moments(std::move(s));
      },
      py::arg("moments"), py::arg("products"), py::arg("weighted"));
}
