// Helpers shared by the emulated kernel tests.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

inline unsigned long long rng_next() {
    static unsigned long long s = 0x9E3779B97F4A7C15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

inline std::vector<unsigned long long> random_values(size_t n) {
    static const unsigned long long extremes[] = {0, 1, ~0ull, 1ull << 63, 0x7f7f7f7f7f7f7f80ull,
                                        0x8080808080808080ull, 0xffffull};
    std::vector<unsigned long long> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = rng_next() % 4 == 0 ? extremes[i % 7] : rng_next();
    return v;
}

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__);                   \
            std::fprintf(stderr, __VA_ARGS__);                                            \
            std::fprintf(stderr, "\n");                                                   \
            std::exit(1);                                                                 \
        }                                                                                 \
    } while (0)

inline unsigned blocks_for(unsigned long long n, unsigned cap = 3) {
    unsigned long long b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}
