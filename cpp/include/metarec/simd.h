// Runtime SIMD dispatch: the instruction-set level a kernel may use.
//
// Wheels are built for the x86-64 baseline (SSE2). Kernels that need more
// compile extra translation units with per-file flags (-mavx2 -mfma,
// -mavx512f) and pick one at run time through `active_level()`, which is the
// best level this CPU supports, lowered (never raised) by the environment
// variable METAREC_SIMD=generic|avx2|avx512 for testing and benchmarking.
#pragma once

#include <string>

namespace metarec::simd {

enum class Level : int { generic = 0, avx2 = 1, avx512 = 2 };

// "generic", "avx2" or "avx512".
const char* level_name(Level level) noexcept;

// Parses a level name; throws std::invalid_argument naming the bad value.
Level parse_level(const std::string& name);

// Best level this CPU (and OS) supports: avx512 needs AVX-512F, avx2 needs
// AVX2 and FMA (detected with __builtin_cpu_supports on x86; generic
// elsewhere).
Level detected_level() noexcept;

// True when `level` can run here (level <= detected_level()).
bool supported(Level level) noexcept;

// The level kernels use by default: detected_level(), or METAREC_SIMD when
// set. Read once and cached. Throws std::invalid_argument when METAREC_SIMD
// is not a level name or names a level this CPU lacks (retried next call).
Level active_level();

// Validates an explicitly requested level (throws std::invalid_argument if
// the CPU lacks it) and returns it.
Level checked(Level level);

}  // namespace metarec::simd
