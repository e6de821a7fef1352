#include "gae.h"

#include <cstddef>

namespace bmaml {

template <typename Real>
void gae(std::ptrdiff_t T, std::ptrdiff_t N, const Real* rewards, const Real* values,
         const uint8_t* terminated, const uint8_t* truncated, const Real* final_values,
         const Real* last_values, Real gamma, Real lam, Real* advantages, Real* returns) {
  // Backwards in time; the inner loop runs over contiguous envs so it vectorises.
  for (std::ptrdiff_t t = T - 1; t >= 0; --t) {
    const std::ptrdiff_t row = t * N;
    const Real* next_values = t == T - 1 ? last_values : values + row + N;
    const Real* next_adv = t == T - 1 ? nullptr : advantages + row + N;
    for (std::ptrdiff_t n = 0; n < N; ++n) {
      const std::ptrdiff_t k = row + n;
      Real next_value = next_values[n];
      Real carry = next_adv ? next_adv[n] : Real(0);
      if (terminated[k]) {
        next_value = Real(0);
        carry = Real(0);
      } else if (truncated[k]) {
        if (final_values) next_value = final_values[k];
        carry = Real(0);
      }
      const Real delta = rewards[k] + gamma * next_value - values[k];
      advantages[k] = delta + gamma * lam * carry;
      returns[k] = advantages[k] + values[k];
    }
  }
}

template void gae<float>(std::ptrdiff_t, std::ptrdiff_t, const float*, const float*,
                         const uint8_t*, const uint8_t*, const float*, const float*, float, float,
                         float*, float*);
template void gae<double>(std::ptrdiff_t, std::ptrdiff_t, const double*, const double*,
                          const uint8_t*, const uint8_t*, const double*, const double*, double,
                          double, double*, double*);

}  // namespace bmaml
