// Detector post-processing for YOLO-style anchor-free heads: raw predictions [B, 4 + C, N]
// (channel-major, as edgekit/models/yolo.py exports them) -> boxes, scores, classes after NMS.
//
// Meaning is defined by edgekit/kernels/reference.py:yolo_decode_nms. Layout of N: the feature maps
// of strides 8, 16, 32 (any list, passed in), each flattened row-major (y * grid_w + x), concatenated
// in stride order; grid size = ceil(input / stride). Channels 0..3 are left/top/right/bottom
// distances in stride units from the cell centre (x + 0.5, y + 0.5); channels 4.. are class logits.
//
// Four launches, no device-wide sort library needed:
//   1. yolo_decode_candidates: one thread per (anchor, image): best class (first arg-max of the
//      logits), score = sigmoid(best logit); kept if score >= conf; appended with an atomic counter.
//   2. yolo_rank_candidates:   each candidate counts the candidates that beat it (higher score, or
//      equal score and lower anchor index) = its rank; the first max_candidates are written in
//      rank order. O(M^2) over the M survivors of the confidence filter, which the filter keeps small.
//   3. yolo_nms_mask:          64 x 64 tiles: bit j of word (i, j / 64) is set when box j (ranked
//      after i) overlaps box i with IoU > threshold (and the same class, unless class-agnostic).
//   4. yolo_nms_select:        one block per image walks the ranked boxes in order, keeping a box
//      unless an earlier kept box suppressed it, OR-ing its mask row into the removed set.

#define NMS_WORD_BITS 64
#define NMS_MAX_WORDS 64  // max_candidates <= 4096

extern "C" __global__ void yolo_decode_candidates(
    const float* __restrict__ preds, int batch, int num_classes, int num_anchors, int in_h, int in_w,
    const int* __restrict__ strides, int num_levels, float conf_threshold,
    int* __restrict__ cand_count, float* __restrict__ cand_box, float* __restrict__ cand_score,
    int* __restrict__ cand_class, int* __restrict__ cand_anchor)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (n >= num_anchors || b >= batch) return;
    const size_t ch = (size_t)num_anchors;
    const float* p = preds + (size_t)b * (size_t)(4 + num_classes) * ch;

    // which level / cell this anchor belongs to
    int offset = 0, stride = 0, gx = 0, gy = 0;
    for (int l = 0; l < num_levels; ++l) {
        const int s = strides[l];
        const int gw = (in_w + s - 1) / s;
        const int gh = (in_h + s - 1) / s;
        if (n < offset + gw * gh) {
            const int local = n - offset;
            stride = s;
            gy = local / gw;
            gx = local - gy * gw;
            break;
        }
        offset += gw * gh;
    }
    if (stride == 0) return;  // anchors beyond the grid: the host checks N, never happens

    int best = 0;
    float best_logit = p[4 * ch + n];
    for (int c = 1; c < num_classes; ++c) {
        const float v = p[(size_t)(4 + c) * ch + n];
        if (v > best_logit) { best_logit = v; best = c; }
    }
    const float score = 1.0f / (1.0f + expf(-best_logit));
    if (!(score >= conf_threshold)) return;

    const float ax = (float)gx + 0.5f;
    const float ay = (float)gy + 0.5f;
    const float s = (float)stride;
    const int slot = atomicAdd(cand_count + b, 1);
    float* box = cand_box + ((size_t)b * ch + slot) * 4;
    box[0] = (ax - p[0 * ch + n]) * s;
    box[1] = (ay - p[1 * ch + n]) * s;
    box[2] = (ax + p[2 * ch + n]) * s;
    box[3] = (ay + p[3 * ch + n]) * s;
    cand_score[(size_t)b * ch + slot] = score;
    cand_class[(size_t)b * ch + slot] = best;
    cand_anchor[(size_t)b * ch + slot] = n;
}

extern "C" __global__ void yolo_rank_candidates(
    const int* __restrict__ cand_count, const float* __restrict__ cand_box, const float* __restrict__ cand_score,
    const int* __restrict__ cand_class, const int* __restrict__ cand_anchor, int num_anchors, int max_candidates,
    float* __restrict__ sorted_box, float* __restrict__ sorted_score, int* __restrict__ sorted_class,
    int* __restrict__ sorted_anchor)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    const int count = cand_count[b];
    if (i >= count) return;
    const size_t base = (size_t)b * (size_t)num_anchors;
    const float si = cand_score[base + i];
    const int ai = cand_anchor[base + i];
    int rank = 0;
    for (int j = 0; j < count; ++j) {
        const float sj = cand_score[base + j];
        rank += (sj > si || (sj == si && cand_anchor[base + j] < ai)) ? 1 : 0;
    }
    if (rank >= max_candidates) return;
    const size_t out = (size_t)b * (size_t)max_candidates + rank;
    for (int q = 0; q < 4; ++q) sorted_box[out * 4 + q] = cand_box[(base + i) * 4 + q];
    sorted_score[out] = si;
    sorted_class[out] = cand_class[base + i];
    sorted_anchor[out] = ai;
}

__device__ __forceinline__ float box_iou(const float* a, const float* b)
{
    const float iw = fmaxf(0.0f, fminf(a[2], b[2]) - fmaxf(a[0], b[0]));
    const float ih = fmaxf(0.0f, fminf(a[3], b[3]) - fmaxf(a[1], b[1]));
    const float inter = iw * ih;
    const float area_a = fmaxf(0.0f, a[2] - a[0]) * fmaxf(0.0f, a[3] - a[1]);
    const float area_b = fmaxf(0.0f, b[2] - b[0]) * fmaxf(0.0f, b[3] - b[1]);
    const float uni = area_a + area_b - inter;
    return uni > 0.0f ? inter / uni : 0.0f;
}

// grid: (col blocks, row blocks, batch); block: 64 threads (one row each)
extern "C" __global__ void yolo_nms_mask(
    const int* __restrict__ cand_count, int max_candidates, const float* __restrict__ sorted_box,
    const int* __restrict__ sorted_class, float iou_threshold, int class_agnostic,
    unsigned long long* __restrict__ mask)
{
    __shared__ float s_box[NMS_WORD_BITS * 4];
    __shared__ int s_cls[NMS_WORD_BITS];
    const int b = blockIdx.z;
    const int m = min(cand_count[b], max_candidates);
    const int col0 = blockIdx.x * NMS_WORD_BITS;
    const int row = blockIdx.y * NMS_WORD_BITS + threadIdx.x;
    const int words = (max_candidates + NMS_WORD_BITS - 1) / NMS_WORD_BITS;
    const size_t base = (size_t)b * (size_t)max_candidates;

    const int col = col0 + threadIdx.x;
    if (col < m) {
        for (int q = 0; q < 4; ++q) s_box[threadIdx.x * 4 + q] = sorted_box[(base + col) * 4 + q];
        s_cls[threadIdx.x] = sorted_class[base + col];
    }
    __syncthreads();
    if (row >= m) return;
    const float* rb = sorted_box + (base + row) * 4;
    const int rc = sorted_class[base + row];
    unsigned long long bits = 0ULL;
    const int cols = min(NMS_WORD_BITS, m - col0);
    for (int j = 0; j < cols; ++j) {
        const int cj = col0 + j;
        if (cj <= row) continue;
        if (!class_agnostic && s_cls[j] != rc) continue;
        if (box_iou(rb, s_box + j * 4) > iou_threshold) bits |= 1ULL << j;
    }
    mask[((size_t)b * max_candidates + row) * words + blockIdx.x] = bits;
}

// grid: (batch); block: NMS_MAX_WORDS threads
extern "C" __global__ void yolo_nms_select(
    const int* __restrict__ cand_count, int max_candidates, const unsigned long long* __restrict__ mask,
    const float* __restrict__ sorted_box, const float* __restrict__ sorted_score, const int* __restrict__ sorted_class,
    const int* __restrict__ sorted_anchor, int max_detections,
    float* __restrict__ out_box, float* __restrict__ out_score, int* __restrict__ out_class,
    int* __restrict__ out_anchor, int* __restrict__ out_count)
{
    __shared__ unsigned long long removed[NMS_MAX_WORDS];
    const int b = blockIdx.x;
    const int t = threadIdx.x;
    const int m = min(cand_count[b], max_candidates);
    const int words = (max_candidates + NMS_WORD_BITS - 1) / NMS_WORD_BITS;
    if (t < NMS_MAX_WORDS) removed[t] = 0ULL;
    __syncthreads();
    const size_t base = (size_t)b * (size_t)max_candidates;
    int kept = 0;
    for (int i = 0; i < m && kept < max_detections; ++i) {
        const bool gone = (removed[i / NMS_WORD_BITS] >> (i % NMS_WORD_BITS)) & 1ULL;
        __syncthreads();  // every thread has read the bit before anyone updates the set
        if (gone) continue;
        if (t == 0) {
            const size_t o = (size_t)b * max_detections + kept;
            for (int q = 0; q < 4; ++q) out_box[o * 4 + q] = sorted_box[(base + i) * 4 + q];
            out_score[o] = sorted_score[base + i];
            out_class[o] = sorted_class[base + i];
            out_anchor[o] = sorted_anchor[base + i];
        }
        if (t < words) removed[t] |= mask[(base + i) * words + t];
        ++kept;
        __syncthreads();
    }
    if (t == 0) out_count[b] = kept;
}
