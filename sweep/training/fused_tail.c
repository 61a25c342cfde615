/* The population step's tail, one C loop per member: everything of an SGD step of a 784-hidden-10
 * network after the first layer's matmul and before its weight update (sweep/training/fused.py says why).
 *
 * Layout, as sweep/training/stacks.py keeps it: G groups of m members (member k = g*m + j), batch B,
 * hidden width W, C classes.
 *   nat   (G, B, m, W)  the first layer's matmul output, x @ w1 (w1 stored divided by scale)
 *   gh    (G, B, m, W)  written: the first layer's output gradient, divided by the new scale
 *   w2    (K, C, W), b2 (K, C), b1 (K, W), scale (K): updated in place
 *   keep_w, keep_b (K)  1 - lr*lambda (keep_b is 1 where biases are not decayed)
 *   y     (G, B)        labels (int64)
 *   losses, hits        member k's example b at k*stride + b: cross-entropy (float), argmax == label (byte)
 * The arithmetic is the eager step's, in the same order per element, with sums in float (their order
 * differs from the BLAS calls', so results agree to float rounding, not bit for bit).
 * Returns 0, or 1 if its scratch memory could not be allocated.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int fused_tail(int64_t G, int64_t B, int64_t m, int64_t W, int64_t C,
               const float *nat, float *gh, float *w2, float *b2, float *b1, float *scale,
               const float *keep_w, const float *keep_b, int64_t scaled, const int64_t *y, float rate,
               float *losses, int64_t loss_stride, uint8_t *hits, int64_t hit_stride)
{
    float *scratch = malloc(sizeof(float) * (size_t)(B * W + B * C + W));
    if (!scratch) return 1;
    float *below = scratch;          /* (B, W): the loss gradient at the hidden layer, before its ReLU */
    float *out = scratch + B * W;    /* (B, C): logits, then softmax - onehot */
    float *acc = out + B * C;        /* (W): one row of a sum over the batch */
    const int64_t row = m * W;       /* from one example to the next in nat and gh */
    for (int64_t g = 0; g < G; g++) {
        for (int64_t j = 0; j < m; j++) {
            const int64_t k = g * m + j;
            const float s = scale[k], kw = keep_w[k], kb = keep_b[k];
            float *w2k = w2 + k * C * W, *b2k = b2 + k * C, *b1k = b1 + k * W;
            const int64_t *yk = y + g * B;
#define HIDDEN(b) (gh + (g * B + (b)) * row + j * W) /* member k's row of example b in gh */

            /* h = relu(b1 + nat * scale), kept in gh until the gradient overwrites it */
            for (int64_t b = 0; b < B; b++) {
                const float *n = nat + (g * B + b) * row + j * W;
                float *h = HIDDEN(b);
#pragma omp simd
                for (int64_t w = 0; w < W; w++) {
                    const float v = b1k[w] + n[w] * s;
                    h[w] = v > 0.0f ? v : 0.0f;
                }
            }

            /* logits; hit; cross-entropy as log-sum-exp minus the label's logit; softmax - onehot */
            for (int64_t b = 0; b < B; b++) {
                const float *h = HIDDEN(b);
                float *o = out + b * C;
                for (int64_t c = 0; c < C; c++) {
                    const float *wc = w2k + c * W;
                    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                    for (int64_t w = 0; w < W; w++) dot += h[w] * wc[w];
                    o[c] = dot + b2k[c];
                }
                int64_t best = 0;
                float top = o[0];
                for (int64_t c = 1; c < C; c++)
                    if (o[c] > top) { top = o[c]; best = c; }
                hits[k * hit_stride + b] = best == yk[b];
                const float label = o[yk[b]] - top;
                float total = 0.0f;
                for (int64_t c = 0; c < C; c++) { o[c] = expf(o[c] - top); total += o[c]; }
                losses[k * loss_stride + b] = logf(total) - label;
                for (int64_t c = 0; c < C; c++) o[c] /= total;
                o[yk[b]] -= 1.0f;
            }

            /* below = grad @ w2, before w2 changes */
            for (int64_t b = 0; b < B; b++) {
                float *bl = below + b * W;
                const float *o = out + b * C;
#pragma omp simd
                for (int64_t w = 0; w < W; w++) bl[w] = 0.0f;
                for (int64_t c = 0; c < C; c++) {
                    const float *wc = w2k + c * W;
                    const float oc = o[c];
#pragma omp simd
                    for (int64_t w = 0; w < W; w++) bl[w] += oc * wc[w];
                }
            }

            /* w2 <- keep_w * w2 - rate * grad^T h;  b2 <- keep_b * b2 - rate * (grad summed over the batch) */
            for (int64_t c = 0; c < C; c++) {
#pragma omp simd
                for (int64_t w = 0; w < W; w++) acc[w] = 0.0f;
                float sum = 0.0f;
                for (int64_t b = 0; b < B; b++) {
                    const float *h = HIDDEN(b);
                    const float oc = out[b * C + c];
                    sum += oc;
#pragma omp simd
                    for (int64_t w = 0; w < W; w++) acc[w] += oc * h[w];
                }
                float *wc = w2k + c * W;
#pragma omp simd
                for (int64_t w = 0; w < W; w++) wc[w] = wc[w] * kw - rate * acc[w];
                b2k[c] = b2k[c] * kb - rate * sum;
            }

            /* gh = below where h > 0 (the ReLU's backward); b1 <- keep_b * b1 - rate * (gh summed) */
#pragma omp simd
            for (int64_t w = 0; w < W; w++) acc[w] = 0.0f;
            for (int64_t b = 0; b < B; b++) {
                float *h = HIDDEN(b);
                const float *bl = below + b * W;
#pragma omp simd
                for (int64_t w = 0; w < W; w++) {
                    const float v = h[w] > 0.0f ? bl[w] : 0.0f;
                    h[w] = v;
                    acc[w] += v;
                }
            }
#pragma omp simd
            for (int64_t w = 0; w < W; w++) b1k[w] = b1k[w] * kb - rate * acc[w];

            /* scale <- keep_w * scale; the first layer's update is then g / scale (see stacks.py) */
            if (scaled) {
                const float next = s * kw;
                scale[k] = next;
                for (int64_t b = 0; b < B; b++) {
                    float *h = HIDDEN(b);
#pragma omp simd
                    for (int64_t w = 0; w < W; w++) h[w] /= next;
                }
            }
#undef HIDDEN
        }
    }
    free(scratch);
    return 0;
}
