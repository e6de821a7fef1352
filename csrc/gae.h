// Generalised advantage estimation over [T, N] batches (Schulman et al. 2016).
//
//   delta_t = r_t + gamma * V_next(t) - V_t
//   A_t     = delta_t + gamma * lambda * A_{t+1}   (A_{t+1} = 0 where the episode ends at t)
//   R_t     = A_t + V_t                            (the value target)
// where V_next(t) is 0 if the episode terminated at t (a true end: no future), the value of
// the episode's final observation if it was truncated at t (time limit: the future exists,
// we just did not see it), last_values at t = T - 1 (the batch ends mid-episode), and
// V_{t+1} otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bmaml {

// rewards, values [T, N]; terminated, truncated [T, N]; final_values [T, N] (read only where
// truncated, nullable: then truncated steps may only occur at t = T - 1 and bootstrap from
// last_values); last_values [N]. Writes advantages and returns [T, N]. Sizes and indices are
// 64-bit: N or T * N may exceed 2**31 (an int would wrap, and the loops would silently not run).
template <typename Real>
void gae(std::ptrdiff_t T, std::ptrdiff_t N, const Real* rewards, const Real* values,
         const uint8_t* terminated, const uint8_t* truncated, const Real* final_values,
         const Real* last_values, Real gamma, Real lam, Real* advantages, Real* returns);

}  // namespace bmaml
