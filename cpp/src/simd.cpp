#include "metarec/simd.h"

#include <cstdlib>
#include <stdexcept>

namespace metarec::simd {

const char* level_name(Level level) noexcept {
    switch (level) {
        case Level::avx512: return "avx512";
        case Level::avx2: return "avx2";
        default: return "generic";
    }
}

Level parse_level(const std::string& name) {
    if (name == "generic") return Level::generic;
    if (name == "avx2") return Level::avx2;
    if (name == "avx512") return Level::avx512;
    throw std::invalid_argument("SIMD level must be 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

Level detected_level() noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma")) {
        return Level::avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Level::avx2;
#endif
    return Level::generic;
}

bool supported(Level level) noexcept {
    return static_cast<int>(level) <= static_cast<int>(detected_level());
}

Level checked(Level level) {
    if (!supported(level)) {
        throw std::invalid_argument(std::string("SIMD level '") + level_name(level) +
                                    "' is not supported by this CPU (best: '" +
                                    level_name(detected_level()) + "')");
    }
    return level;
}

namespace {
Level level_from_environment() {
    const char* env = std::getenv("METAREC_SIMD");
    if (env == nullptr || *env == '\0') return detected_level();
    Level want;
    try {
        want = parse_level(env);
    } catch (const std::invalid_argument&) {
        throw std::invalid_argument(std::string("METAREC_SIMD must be 'generic', 'avx2' or 'avx512', got '") +
                                    env + "'");
    }
    if (!supported(want)) {
        throw std::invalid_argument(std::string("METAREC_SIMD=") + env +
                                    " requested, but this CPU supports at most '" +
                                    level_name(detected_level()) + "'");
    }
    return want;
}
}  // namespace

Level active_level() {
    // A throwing initialiser leaves the static uninitialised: the next call retries.
    static const Level level = level_from_environment();
    return level;
}

}  // namespace metarec::simd
