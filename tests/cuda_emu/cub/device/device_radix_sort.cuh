// Host stand-in for cub::DeviceRadixSort::SortPairs (tests/cuda_emu): a
// stable sort of the pairs by the key bits [begin_bit, end_bit), like CUB's
// LSD radix sort. Unsigned integer keys only (all this repository uses).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {

struct DeviceRadixSort {
    template <class K, class V, class N>
    static cudaError_t SortPairs(void* temp, std::size_t& temp_bytes, const K* keys_in, K* keys_out,
                                 const V* values_in, V* values_out, N n, int begin_bit = 0,
                                 int end_bit = static_cast<int>(sizeof(K) * 8), cudaStream_t = nullptr) {
        static_assert(std::is_unsigned<K>::value, "emu: unsigned keys only");
        if (temp == nullptr) {
            temp_bytes = 64;  // asked for, allocated and passed back like real scratch
            return cudaSuccess;
        }
        if (begin_bit < 0 || end_bit > static_cast<int>(sizeof(K) * 8) || begin_bit > end_bit) {
            return 1;
        }
        const int width = end_bit - begin_bit;
        const K mask = width >= static_cast<int>(sizeof(K) * 8) ? ~K(0) : ((K(1) << width) - 1);
        const auto bits = [&](K k) { return (k >> begin_bit) & mask; };
        std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
        std::iota(idx.begin(), idx.end(), std::int64_t(0));
        std::stable_sort(idx.begin(), idx.end(),
                         [&](std::int64_t a, std::int64_t b) { return bits(keys_in[a]) < bits(keys_in[b]); });
        std::vector<K> k(static_cast<std::size_t>(n));
        std::vector<V> v(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < idx.size(); ++i) {
            k[i] = keys_in[idx[i]];
            v[i] = values_in[idx[i]];
        }
        std::copy(k.begin(), k.end(), keys_out);
        std::copy(v.begin(), v.end(), values_out);
        return cudaSuccess;
    }
};

}  // namespace cub
