// Classifier post-processing: numerically stable softmax over each row of logits [B, C], then the
// k most probable classes of that row, in descending order (ties: the lower class index first).
//
// Meaning is defined by edgekit/kernels/reference.py:softmax_topk. One block per row. The top-k is
// k rounds of a block-wide arg-max over a scratch copy of the probabilities, each round knocking
// out the winner: O(k * C / threads), which for classifier heads (C ~ 1000, k <= 10) is a few
// microseconds and needs no sort.

#include <float.h>

#define SOFTMAX_MAX_THREADS 1024

__device__ __forceinline__ bool better(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

extern "C" __global__ void softmax_topk(const float* __restrict__ logits, int rows, int classes, int k,
                                        float* __restrict__ probs, float* __restrict__ scratch,
                                        int* __restrict__ topk_index, float* __restrict__ topk_value)
{
    __shared__ float s_val[SOFTMAX_MAX_THREADS];
    __shared__ int s_idx[SOFTMAX_MAX_THREADS];
    const int row = blockIdx.x;
    const int tid = threadIdx.x;
    const int nt = blockDim.x;  // a power of two, <= SOFTMAX_MAX_THREADS
    if (row >= rows) return;
    const float* x = logits + (size_t)row * classes;
    float* p = probs + (size_t)row * classes;
    float* s = scratch + (size_t)row * classes;

    // 1. row maximum
    float m = -FLT_MAX;
    for (int c = tid; c < classes; c += nt) m = fmaxf(m, x[c]);
    s_val[tid] = m;
    __syncthreads();
    for (int w = nt / 2; w > 0; w >>= 1) {
        if (tid < w) s_val[tid] = fmaxf(s_val[tid], s_val[tid + w]);
        __syncthreads();
    }
    m = s_val[0];
    __syncthreads();

    // 2. sum of exp(x - max)
    float acc = 0.0f;
    for (int c = tid; c < classes; c += nt) acc += expf(x[c] - m);
    s_val[tid] = acc;
    __syncthreads();
    for (int w = nt / 2; w > 0; w >>= 1) {
        if (tid < w) s_val[tid] += s_val[tid + w];
        __syncthreads();
    }
    const float inv = 1.0f / s_val[0];
    __syncthreads();

    // 3. probabilities (and the scratch copy the top-k consumes)
    for (int c = tid; c < classes; c += nt) {
        const float v = expf(x[c] - m) * inv;
        p[c] = v;
        s[c] = v;
    }
    __syncthreads();

    // 4. k rounds of arg-max
    for (int r = 0; r < k; ++r) {
        float bv = -FLT_MAX;
        int bi = 0x7fffffff;
        for (int c = tid; c < classes; c += nt) {
            const float v = s[c];
            if (better(v, c, bv, bi)) { bv = v; bi = c; }
        }
        s_val[tid] = bv;
        s_idx[tid] = bi;
        __syncthreads();
        for (int w = nt / 2; w > 0; w >>= 1) {
            if (tid < w && better(s_val[tid + w], s_idx[tid + w], s_val[tid], s_idx[tid])) {
                s_val[tid] = s_val[tid + w];
                s_idx[tid] = s_idx[tid + w];
            }
            __syncthreads();
        }
        if (tid == 0) {
            const int win = s_idx[0];
            topk_index[(size_t)row * k + r] = win;
            topk_value[(size_t)row * k + r] = p[win];
            s[win] = -FLT_MAX;  // knocked out; probabilities are >= 0 so it never wins again
        }
        __syncthreads();
    }
}
