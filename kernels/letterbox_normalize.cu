// Fused pre-processing for image models: letterbox (or plain) bilinear resize of a uint8 HWC image,
// pad, scale to [0, 1], subtract mean / divide by std, HWC -> CHW, cast to FP32 or FP16.
//
// Meaning is defined by edgekit/kernels/reference.py:letterbox_normalize (NumPy); this file must
// agree with it. One thread per output pixel (x, y) of image blockIdx.z; it writes all channels.
// Doing the whole chain in one pass reads the camera frame once and writes the network input once,
// which on a Jetson (CPU and GPU share one DRAM) is most of the cost of pre-processing.
//
// Sampling: half-pixel centres (like OpenCV INTER_LINEAR / align_corners=False), source
// coordinates clamped to the image, so edges replicate instead of blending with the pad value.

#include <cuda_fp16.h>

__device__ __forceinline__ void store_value(float* dst, size_t i, float v) { dst[i] = v; }
__device__ __forceinline__ void store_value(__half* dst, size_t i, float v) { dst[i] = __float2half_rn(v); }

template <typename T>
__device__ void letterbox_normalize_impl(
    const unsigned char* __restrict__ src, int in_h, int in_w, int in_c, int src_row_pitch, long long src_image_stride,
    T* __restrict__ dst, int out_h, int out_w, int out_c,
    int new_h, int new_w, int pad_top, int pad_left, float scale_y, float scale_x,
    const float* __restrict__ mean, const float* __restrict__ std_, float pixel_scale, float pad_value, int swap_rb)
{
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    if (x >= out_w || y >= out_h) return;

    const unsigned char* img = src + (long long)b * src_image_stride;
    const size_t plane = (size_t)out_h * (size_t)out_w;
    T* out = dst + (size_t)b * plane * (size_t)out_c;
    const size_t o = (size_t)y * (size_t)out_w + (size_t)x;

    const int ry = y - pad_top;
    const int rx = x - pad_left;
    if (ry < 0 || ry >= new_h || rx < 0 || rx >= new_w) {
        for (int c = 0; c < out_c; ++c) {
            const float v = (pad_value * pixel_scale - mean[c]) / std_[c];
            store_value(out, (size_t)c * plane + o, v);
        }
        return;
    }

    float sy = ((float)ry + 0.5f) * scale_y - 0.5f;
    float sx = ((float)rx + 0.5f) * scale_x - 0.5f;
    sy = fminf(fmaxf(sy, 0.0f), (float)(in_h - 1));
    sx = fminf(fmaxf(sx, 0.0f), (float)(in_w - 1));
    const int y0 = (int)floorf(sy);
    const int x0 = (int)floorf(sx);
    const int y1 = min(y0 + 1, in_h - 1);
    const int x1 = min(x0 + 1, in_w - 1);
    const float wy = sy - (float)y0;
    const float wx = sx - (float)x0;

    const unsigned char* r0 = img + (long long)y0 * src_row_pitch;
    const unsigned char* r1 = img + (long long)y1 * src_row_pitch;
    for (int c = 0; c < out_c; ++c) {
        const int sc = (swap_rb && c < 3) ? (2 - c) : c;
        const float v00 = (float)r0[x0 * in_c + sc];
        const float v01 = (float)r0[x1 * in_c + sc];
        const float v10 = (float)r1[x0 * in_c + sc];
        const float v11 = (float)r1[x1 * in_c + sc];
        const float top = v00 * (1.0f - wx) + v01 * wx;
        const float bot = v10 * (1.0f - wx) + v11 * wx;
        const float v = top * (1.0f - wy) + bot * wy;
        store_value(out, (size_t)c * plane + o, (v * pixel_scale - mean[c]) / std_[c]);
    }
}

#define LETTERBOX_ARGS \
    const unsigned char* src, int in_h, int in_w, int in_c, int src_row_pitch, long long src_image_stride, \
    OUT_T* dst, int out_h, int out_w, int out_c, int new_h, int new_w, int pad_top, int pad_left, \
    float scale_y, float scale_x, const float* mean, const float* std_, float pixel_scale, float pad_value, int swap_rb
#define LETTERBOX_CALL src, in_h, in_w, in_c, src_row_pitch, src_image_stride, dst, out_h, out_w, out_c, new_h, new_w, \
    pad_top, pad_left, scale_y, scale_x, mean, std_, pixel_scale, pad_value, swap_rb

#define OUT_T float
extern "C" __global__ void letterbox_normalize_f32(LETTERBOX_ARGS) { letterbox_normalize_impl<float>(LETTERBOX_CALL); }
#undef OUT_T
#define OUT_T __half
extern "C" __global__ void letterbox_normalize_f16(LETTERBOX_ARGS) { letterbox_normalize_impl<__half>(LETTERBOX_CALL); }
#undef OUT_T
