// Runs CUDA C kernels on the CPU, for checking their indexing where no GPU is at hand:
// every block of a launch runs in turn, its threads as std::threads, __syncthreads as a
// barrier over the block, __ballot_sync as an exchange and barrier over the warp, and
// __shared__ as static storage (blocks never overlap, so one copy serves each block).
#pragma once
#include <barrier>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct BlockSync {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<unsigned> votes;
};
inline BlockSync* g_sync = nullptr;

inline unsigned linear_thread() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline void __syncthreads() { g_sync->block->arrive_and_wait(); }

inline unsigned __ballot_sync(unsigned, bool pred) {
    unsigned t = linear_thread(), warp = t / 32;
    g_sync->votes[t] = pred ? 1u : 0u;
    g_sync->warps[warp]->arrive_and_wait();
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l) bits |= g_sync->votes[warp * 32 + l] << l;
    g_sync->warps[warp]->arrive_and_wait();
    return bits;
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

// Launches kernel(args...) on a grid of blocks, one block at a time.
template <typename... Params, typename... Args>
void launch(dim3 grid, dim3 block, void (*kernel)(Params...), Args... args) {
    gridDim = grid;
    blockDim = block;
    unsigned threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                BlockSync sync;
                sync.block = std::make_unique<std::barrier<>>(threads);
                for (unsigned w = 0; w < (threads + 31) / 32; ++w)
                    sync.warps.push_back(std::make_unique<std::barrier<>>(
                        std::min(32u, threads - 32 * w)));
                sync.votes.assign(threads, 0);
                g_sync = &sync;
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t)
                    pool.emplace_back([=] {
                        threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        blockIdx = {bx, by, bz};
                        kernel(args...);
                    });
                for (auto& th : pool) th.join();
                g_sync = nullptr;
            }
}
