/* The population step's tail, one C loop per member: everything of an SGD step of a 784-hidden-10
 * network after the first layer's matmul and before its weight update (sweep/training/fused.py says why).
 *
 * Layout, as sweep/training/stacks.py keeps it: G groups of m members (member k = g*m + j), batch B,
 * hidden width W, C classes.
 *   nat   (G, B, m, W)  the first layer's matmul output, x @ w1 (w1 stored divided by scale)
 *   gh    (G, B, m, W)  written: the first layer's output gradient, divided by the new scale
 *   w2    (K, C, W), b2 (K, C), b1 (K, W), scale (K): updated in place
 *   shrink_w, shrink_b (K)  1 - lr*lambda (shrink_b is 1 where biases are not decayed)
 *   y     (G, B)        labels (int64)
 *   losses, hits        member k's example b at k*stride + b: cross-entropy (float), argmax == label (byte)
 * The arithmetic is the eager step's, in the same order per element, with sums in float (their order
 * differs from the BLAS calls', so results agree to float rounding, not bit for bit).
 * Returns 0; 1 if its scratch memory could not be allocated; 2 if a label is outside 0..C-1 (checked
 * before anything is written: a label indexes the logits, so a wrong one would read and write past them).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int fused_tail(int64_t G, int64_t B, int64_t m, int64_t W, int64_t C,
               const float *nat, float *gh, float *w2, float *b2, float *b1, float *scale,
               const float *shrink_w, const float *shrink_b, int64_t scaled, const int64_t *y, float rate,
               float *losses, int64_t loss_stride, uint8_t *hits, int64_t hit_stride)
{
    for (int64_t i = 0; i < G * B; i++)
        if (y[i] < 0 || y[i] >= C) return 2;
    float *scratch = malloc(sizeof(float) * (size_t)(B * W + B * C + 2 * W));
    if (!scratch) return 1;
    float *below = scratch;          /* (B, W): the loss gradient at the hidden layer, before its ReLU */
    float *out = scratch + B * W;    /* (B, C): logits, then softmax - onehot */
    float *acc = out + B * C;        /* (W): a sum over the batch */
    float *spare = acc + W;          /* (W): a second sum; an odd batch's spare row of below */
    const int64_t row = m * W;       /* from one example to the next in nat and gh */
    for (int64_t g = 0; g < G; g++) {
        for (int64_t j = 0; j < m; j++) {
            const int64_t k = g * m + j;
            const float s = scale[k], kw = shrink_w[k], kb = shrink_b[k];
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

            /* logits, four examples at a time: four independent sums share each load of a w2 row */
            for (int64_t b0 = 0; b0 < B; b0 += 4) {
                const int64_t n = B - b0 < 4 ? B - b0 : 4;
                const float *h0 = HIDDEN(b0), *h1 = n > 1 ? HIDDEN(b0 + 1) : h0;
                const float *h2 = n > 2 ? HIDDEN(b0 + 2) : h0, *h3 = n > 3 ? HIDDEN(b0 + 3) : h0;
                for (int64_t c = 0; c < C; c++) {
                    const float *wc = w2k + c * W;
                    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
                    for (int64_t w = 0; w < W; w++) {
                        d0 += h0[w] * wc[w];
                        d1 += h1[w] * wc[w];
                        d2 += h2[w] * wc[w];
                        d3 += h3[w] * wc[w];
                    }
                    const float d[4] = {d0, d1, d2, d3};
                    for (int64_t i = 0; i < n; i++) out[(b0 + i) * C + c] = d[i] + b2k[c];
                }
            }
            /* hit; cross-entropy as log-sum-exp minus the label's logit; softmax - onehot */
            for (int64_t b = 0; b < B; b++) {
                float *o = out + b * C;
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

            /* below = grad @ w2, before w2 changes; two examples at a time share each load of a w2 row */
            for (int64_t b0 = 0; b0 < B; b0 += 2) {
                const int pair = b0 + 1 < B;  /* an odd batch's last example: its partner row is a spare */
                float *l0 = below + b0 * W, *l1 = pair ? l0 + W : spare;
                const float *o0 = out + b0 * C, *o1 = pair ? o0 + C : o0;
#pragma omp simd
                for (int64_t w = 0; w < W; w++) { l0[w] = 0.0f; l1[w] = 0.0f; }
                for (int64_t c = 0; c < C; c++) {
                    const float *wc = w2k + c * W;
                    const float g0 = o0[c], g1 = o1[c];
#pragma omp simd
                    for (int64_t w = 0; w < W; w++) { l0[w] += g0 * wc[w]; l1[w] += g1 * wc[w]; }
                }
            }

            /* w2 <- shrink_w * w2 - rate * grad^T h;  b2 <- shrink_b * b2 - rate * (grad summed over the batch);
             * two classes at a time share each load of h */
            for (int64_t c0 = 0; c0 < C; c0 += 2) {
                const int64_t c1 = c0 + 1 < C ? c0 + 1 : c0;
                float *a0 = acc, *a1 = spare;
                float s0 = 0.0f, s1 = 0.0f;
#pragma omp simd
                for (int64_t w = 0; w < W; w++) { a0[w] = 0.0f; a1[w] = 0.0f; }
                for (int64_t b = 0; b < B; b++) {
                    const float *h = HIDDEN(b);
                    const float g0 = out[b * C + c0], g1 = out[b * C + c1];
                    s0 += g0;
                    s1 += g1;
#pragma omp simd
                    for (int64_t w = 0; w < W; w++) { a0[w] += g0 * h[w]; a1[w] += g1 * h[w]; }
                }
                float *w0 = w2k + c0 * W, *w1 = w2k + c1 * W;
                if (c1 != c0) {
#pragma omp simd
                    for (int64_t w = 0; w < W; w++) w1[w] = w1[w] * kw - rate * a1[w];
                    b2k[c1] = b2k[c1] * kb - rate * s1;
                }
#pragma omp simd
                for (int64_t w = 0; w < W; w++) w0[w] = w0[w] * kw - rate * a0[w];
                b2k[c0] = b2k[c0] * kb - rate * s0;
            }

            /* gh = below where h > 0 (the ReLU's backward); b1 <- shrink_b * b1 - rate * (gh summed) */
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

            /* scale <- shrink_w * scale; the first layer's update is then g / scale (see stacks.py) */
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
