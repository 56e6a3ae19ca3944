// The canonical similarity, reduced-precision packs of rows with their exact error norms,
// CPU feature checks and the per-pair error bound of the screen (see screen.hpp).
#include "fastsas/screen.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "fastsas/parallel.hpp"

namespace fastsas {

template <class T>
[[gnu::noinline]] double canonical_dot(const T* a, const T* b, Index d) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  Index k = 0;
  for (; k + 4 <= d; k += 4) {
    s0 = std::fma(static_cast<double>(a[k]), static_cast<double>(b[k]), s0);
    s1 = std::fma(static_cast<double>(a[k + 1]), static_cast<double>(b[k + 1]), s1);
    s2 = std::fma(static_cast<double>(a[k + 2]), static_cast<double>(b[k + 2]), s2);
    s3 = std::fma(static_cast<double>(a[k + 3]), static_cast<double>(b[k + 3]), s3);
  }
  for (; k < d; ++k) s0 = std::fma(static_cast<double>(a[k]), static_cast<double>(b[k]), s0);
  return (s0 + s1) + (s2 + s3);
}

template double canonical_dot(const float*, const float*, Index);
template double canonical_dot(const double*, const double*, Index);

namespace {

// Four lanes of one pair are the four lanes of one 256-bit register: _mm256_fmadd_pd does
// s_l = fma(a[k + l], b[k + l], s_l) for l = 0..3, exactly canonical_dot's main loop; four
// pairs side by side hide the fma latency.
__attribute__((target("avx2,fma"))) inline __m256d load4(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
__attribute__((target("avx2,fma"))) inline __m256d load4(const double* p) { return _mm256_loadu_pd(p); }

template <class T>
__attribute__((target("avx2,fma"))) void canonical_dot4_avx2(const T* const a[4], const T* const b[4], Index d,
                                                           double out[4]) {
  __m256d s[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
  Index k = 0;
  for (; k + 4 <= d; k += 4)
    for (int p = 0; p < 4; ++p) s[p] = _mm256_fmadd_pd(load4(a[p] + k), load4(b[p] + k), s[p]);
  for (int p = 0; p < 4; ++p) {
    alignas(32) double lane[4];
    _mm256_store_pd(lane, s[p]);
    for (Index t = k; t < d; ++t)
      lane[0] = std::fma(static_cast<double>(a[p][t]), static_cast<double>(b[p][t]), lane[0]);
    out[p] = (lane[0] + lane[1]) + (lane[2] + lane[3]);
  }
}

bool has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

}  // namespace

template <class T>
void canonical_dot4(const T* const a[4], const T* const b[4], Index d, double out[4]) {
  if (has_avx2_fma()) {
    canonical_dot4_avx2(a, b, d, out);
    return;
  }
  for (int p = 0; p < 4; ++p) out[p] = canonical_dot(a[p], b[p], d);
}

template void canonical_dot4(const float* const[4], const float* const[4], Index, double[4]);
template void canonical_dot4(const double* const[4], const double* const[4], Index, double[4]);

const char* screen_precision_name(ScreenPrecision p) {
  switch (p) {
    case ScreenPrecision::kAuto: return "auto";
    case ScreenPrecision::kNone: return "float32";
    case ScreenPrecision::kBFloat16: return "bfloat16";
    case ScreenPrecision::kInt8: return "int8";
  }
  return "unknown";
}

bool screen_supported(ScreenPrecision p) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  static const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  static const bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  switch (p) {
    case ScreenPrecision::kNone: return true;
    case ScreenPrecision::kBFloat16: return bf16;
    case ScreenPrecision::kInt8: return vnni;
    case ScreenPrecision::kAuto: return true;
  }
  return false;
}

namespace {

// Upper bounds of sqrt(sum of squares) computed in float64: d < 2^26 terms of relative
// rounding error 2^-53 each, a square root, a float64 subtraction per term (err): all
// covered by a relative widening of 2^-24.
constexpr double kNormSlack = 1.0 + 0x1p-24;

std::uint16_t bf16_bits(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (finite inputs of magnitude <= 2)
  std::uint16_t h = static_cast<std::uint16_t>(u >> 16);
  // The kernel treats bfloat16 subnormals as zero (DAZ): store them as zero, so the error
  // norm below is that of the value the kernel really uses.
  if ((h & 0x7f80u) == 0) h = static_cast<std::uint16_t>(h & 0x8000u);
  return h;
}

float bf16_value(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// Smallest float32 >= v (v > 0).
float f32_up(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

}  // namespace

template <class T>
ScreenPack pack_screen_rows(const T* rows, Index n, Index d, ScreenPrecision precision, ScreenSide side,
                            int threads) {
  if (precision != ScreenPrecision::kBFloat16 && precision != ScreenPrecision::kInt8)
    throw std::invalid_argument("pack_screen_rows: precision must be bfloat16 or int8");
  if (precision == ScreenPrecision::kInt8 && d > kScreenInt8MaxDim)
    throw std::invalid_argument("the int8 screen needs d <= " + std::to_string(kScreenInt8MaxDim));
  const bool int8 = precision == ScreenPrecision::kInt8;
  const Index per_word = int8 ? 4 : 2;
  ScreenPack pk;
  pk.precision = precision;
  pk.side = side;
  pk.rows = n;
  pk.d = d;
  pk.groups = (d + per_word - 1) / per_word;
  pk.panel_rows = side == ScreenSide::kA ? kScreenRows : kScreenCols;
  pk.panels = (n + pk.panel_rows - 1) / pk.panel_rows;
  const Index padded = pk.panels * pk.panel_rows;
  pk.words.assign(static_cast<size_t>(pk.panels * pk.groups * pk.panel_rows + 16), 0u);
  pk.offset = static_cast<Index>((64 - reinterpret_cast<std::uintptr_t>(pk.words.data()) % 64) % 64 / 4);
  pk.norm.assign(static_cast<size_t>(n), 0.0);
  pk.qnorm.assign(static_cast<size_t>(n), 0.0);
  pk.err.assign(static_cast<size_t>(n), 0.0);
  if (int8) {
    pk.scale.assign(static_cast<size_t>(padded), 0.0f);
    if (side == ScreenSide::kB) pk.qsum.assign(static_cast<size_t>(padded), 0);
  }
  std::uint32_t* const base = pk.words.data() + pk.offset;
  const Index pr = pk.panel_rows, g = pk.groups;

  parallel_for(threads, static_cast<long>(pk.panels), [&](long p, int) {
    std::vector<std::uint8_t> bytes(static_cast<size_t>(g * 4));
    for (Index r = p * pr; r < std::min(n, (p + 1) * pr); ++r) {
      const T* a = rows + r * d;
      double norm2 = 0.0, qnorm2 = 0.0, err2 = 0.0;
      std::uint32_t* out = base + p * g * pr + (r - p * pr);  // word k of this row: out[k * pr]
      if (int8) {
        double top = 0.0;
        for (Index k = 0; k < d; ++k) top = std::max(top, std::fabs(static_cast<double>(a[k])));
        // scale >= max|a_k| / 127, so every q_k = round(a_k / scale) lies in [-127, 127].
        const float scale = f32_up(top / 127.0);
        const double s = static_cast<double>(scale);
        std::int64_t qsum = 0, qq = 0;
        std::fill(bytes.begin(), bytes.end(), static_cast<std::uint8_t>(side == ScreenSide::kA ? 128 : 0));
        for (Index k = 0; k < d; ++k) {
          const double v = static_cast<double>(a[k]);
          const double q = s > 0 ? std::nearbyint(v / s) : 0.0;
          const int qi = static_cast<int>(std::max(-127.0, std::min(127.0, q)));
          qsum += qi;
          qq += static_cast<std::int64_t>(qi) * qi;
          const double e = s * qi - v;  // s * qi is exact (24 + 8 bits)
          norm2 += v * v;
          err2 += e * e;
          bytes[static_cast<size_t>(k)] = side == ScreenSide::kA ? static_cast<std::uint8_t>(qi + 128)
                                                                 : static_cast<std::uint8_t>(static_cast<std::int8_t>(qi));
        }
        qnorm2 = s * s * static_cast<double>(qq);
        pk.scale[static_cast<size_t>(r)] = scale;
        if (side == ScreenSide::kB) pk.qsum[static_cast<size_t>(r)] = static_cast<std::int32_t>(128 * qsum);
        for (Index k = 0; k < g; ++k) {
          std::uint32_t w;
          std::memcpy(&w, bytes.data() + 4 * k, 4);
          out[k * pr] = w;
        }
      } else {
        for (Index k = 0; k < g; ++k) {
          std::uint32_t w = 0;
          for (Index h = 0; h < 2; ++h) {
            const Index c = 2 * k + h;
            if (c >= d) break;
            const double v = static_cast<double>(a[c]);
            const std::uint16_t bits = bf16_bits(static_cast<float>(a[c]));
            const double q = static_cast<double>(bf16_value(bits));
            const double e = q - v;  // exact: q and v are within a factor 2 of each other, or q = 0
            norm2 += v * v;
            qnorm2 += q * q;
            err2 += e * e;
            w |= static_cast<std::uint32_t>(bits) << (16 * h);
          }
          out[k * pr] = w;
        }
      }
      pk.norm[static_cast<size_t>(r)] = std::sqrt(norm2) * kNormSlack;
      pk.qnorm[static_cast<size_t>(r)] = std::sqrt(qnorm2) * kNormSlack;
      pk.err[static_cast<size_t>(r)] = std::sqrt(err2) * kNormSlack;
    }
  });
  for (Index r = 0; r < n; ++r) {
    pk.max_norm = std::max(pk.max_norm, pk.norm[static_cast<size_t>(r)]);
    pk.max_qnorm = std::max(pk.max_qnorm, pk.qnorm[static_cast<size_t>(r)]);
    pk.max_err = std::max(pk.max_err, pk.err[static_cast<size_t>(r)]);
  }
  return pk;
}

template ScreenPack pack_screen_rows(const float*, Index, Index, ScreenPrecision, ScreenSide, int);
template ScreenPack pack_screen_rows(const double*, Index, Index, ScreenPrecision, ScreenSide, int);

// The bound, term by term (a, b: the stored rows; a^, b^: their converted copies; s: the
// canonical value; v: the screened value; u = 2^-24):
//   |v - s| <= |v - a^.b^| + |a^.b^ - a.b| + |a.b - s|.
// (1) Conversion: a^.b^ - a.b = (a^ - a).b^ + a.(b^ - b), so by Cauchy-Schwarz
//     |a^.b^ - a.b| <= ||a^ - a|| ||b^|| + ||a|| ||b^ - b||   (ea qb + na eb).
// (2) The canonical value: four float64 fma chains of at most d / 4 + 1 steps and two
//     additions; each step's relative error is at most 2^-53, so |a.b - s| <= gamma_{d+3}
//     sum |a_k b_k| <= gamma_{d+3} na nb with gamma_n = n 2^-53 / (1 - n 2^-53) (Higham).
// (3) The kernel. bfloat16: every product of two bfloat16 values is exact in float32 (8 + 8
//     significant bits); each output lane adds the 2 ceil(d / 2) products one after another
//     into a float32 accumulator. Allowing each addition a relative error of 2u (twice round
//     to nearest, for hardware that rounds the pair sum of _mm512_dpbf16_ps differently),
//     |v - a^.b^| <= gamma'_{dp} sum |a^_k b^_k| <= gamma'_{dp} qa qb, gamma'_n = 2nu / (1 - 2nu);
//     flushing subnormal products and sums to zero (the instruction's FTZ) costs at most
//     2^-126 per product and per addition: 2 dp 2^-126 more.
//     int8: a^ = scale_a q_a exactly, q_a . q_b is exact in int32 (|sum| < 2^31 for d <= 65536),
//     and v = fl(fl(fl(q_a . q_b) scale_b) scale_a): three roundings, |v - a^.b^| <=
//     ((1 + u)^3 - 1) |a^.b^| <= 3.01 u qa qb (the scales are >= 2^-40 for rows of norm ~1, far
//     from float32 underflow).
// The sum is widened by 2^-20 relative and 2^-60 absolute for the float64 evaluation of
// this formula. Callers add the rounding of their thresholds to float32 themselves.
void require_screen(ScreenPrecision p, Index d) {
  if (p == ScreenPrecision::kAuto || p == ScreenPrecision::kNone) return;
  if (!screen_supported(p))
    throw std::invalid_argument(std::string("precision '") + screen_precision_name(p) + "' needs a CPU with " +
                                (p == ScreenPrecision::kInt8 ? "AVX512_VNNI" : "AVX512_BF16") +
                                ", which this one lacks; use precision 'auto' or 'float32'");
  if (p == ScreenPrecision::kInt8 && d > kScreenInt8MaxDim)
    throw std::invalid_argument("precision 'int8' needs d <= " + std::to_string(kScreenInt8MaxDim) + ", got " +
                                std::to_string(d));
}

double pair_error_bound(ScreenPrecision precision, Index d, double na, double qa, double ea, double nb, double qb,
                        double eb) {
  const double u = 0x1p-24;
  const double conversion = ea * qb + na * eb;
  const double n53 = static_cast<double>(d + 3) * 0x1p-53;
  const double canonical = n53 / (1.0 - n53) * na * nb;
  double kernel = 0.0;
  if (precision == ScreenPrecision::kBFloat16) {
    const double dp = static_cast<double>(2 * ((d + 1) / 2));
    const double e = 2.0 * dp * u;
    if (e >= 0.5) throw std::invalid_argument("dimension too large for the bfloat16 screen");
    kernel = e / (1.0 - e) * qa * qb + 2.0 * dp * 0x1p-126;
  } else if (precision == ScreenPrecision::kInt8) {
    kernel = 3.01 * u * qa * qb;
  } else {
    throw std::invalid_argument("pair_error_bound: precision must be bfloat16 or int8");
  }
  return (conversion + canonical + kernel) * (1.0 + 0x1p-20) + 0x1p-60;
}

}  // namespace fastsas
