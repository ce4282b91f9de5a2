/* hwnas int8 kernels (see hwnas_kernels.h). Written for clarity and exactness, not speed:
 * direct loops, no im2col scratch, so the arena holds activations only. */
#include "hwnas_kernels.h"

#include <math.h>
#include <string.h>

static int32_t clamp32(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

int32_t hw_requantize(int32_t value, int32_t mult, int32_t shift) {
    /* value * mult * 2^(shift - 31), rounded half up, saturated to int32 */
    int64_t r = ((int64_t)value * mult) >> (30 - shift);
    r = (r + 1) >> 1;
    if (r > INT32_MAX) return INT32_MAX;
    if (r < INT32_MIN) return INT32_MIN;
    return (int32_t)r;
}

int32_t hw_requantize_float(int32_t acc, float scale, int32_t zero_point) {
    /* onnxruntime's requantization (MLAS's MlasRequantizeOutput and ConvSym kernels): the
       accumulator times the scale in float32, clamped to the 8-bit range, rounded half to
       even, plus the (int8 storage) zero point */
    const float lo = (float)(-128 - zero_point), hi = (float)(127 - zero_point);
    float f = (float)acc * scale;
    f = f < lo ? lo : (f > hi ? hi : f);
    return (int32_t)lrintf(f) + zero_point;
}

static int32_t weight_at(const int8_t *w, int32_t i, int32_t packed) {
    if (!packed) return w[i];
    {
        int32_t b = (uint8_t)w[i >> 1];
        int32_t nib = (i & 1) ? (b >> 4) : (b & 15);
        return nib >= 8 ? nib - 16 : nib;
    }
}

/* taps k in [lo, hi) of a kernel of size n, stride `dil`, whose first tap is at `start`,
   that fall inside [0, size) */
static void tap_range(int32_t start, int32_t n, int32_t dil, int32_t size, int32_t *lo, int32_t *hi) {
    int32_t a = 0, b = n;
    while (a < n && start + a * dil < 0) a++;
    while (b > a && start + (b - 1) * dil >= size) b--;
    *lo = a;
    *hi = b;
}

void hw_conv(const hw_conv_params *p, const int8_t *x, int8_t *y) {
    /* the parameters in locals: stores through y (int8_t) may alias *p, which would make the
       compiler reload every field after each output */
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, kh = p->kh, kw = p->kw;
    const int32_t taps = kh * kw, h = p->h, w = p->w, oh = p->oh, ow = p->ow, sh = p->sh, sw = p->sw;
    const int32_t ph = p->ph, pw = p->pw, dh = p->dh, dw = p->dw, in_zp = p->in_zp, out_zp = p->out_zp;
    const int32_t act_min = p->act_min, act_max = p->act_max, packed = p->packed, cout = p->cout;
    const int8_t *weight = p->weight;
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift;
    const float *scale = p->scale;
    int32_t co, oy, ox, ci, ky, kx;
    if (taps == 1 && ph == 0 && pw == 0 && !packed) { /* pointwise: one tap per input channel */
        for (co = 0; co < cout; co++) {
            const int8_t *wp = weight + co * cin_g, *base = x + (co / cout_g) * cin_g * h * w;
            const int32_t b = bias ? bias[co] : 0, m = scale ? 0 : mult[co], s = scale ? 0 : shift[co];
            const float f = scale ? scale[co] : 0.0f;
            int8_t *out = y + co * oh * ow;
            for (oy = 0; oy < oh; oy++) {
                for (ox = 0; ox < ow; ox++) {
                    const int8_t *px = base + oy * sh * w + ox * sw;
                    int32_t acc = b;
                    for (ci = 0; ci < cin_g; ci++, px += h * w) acc += (*px - in_zp) * wp[ci];
                    acc = scale ? hw_requantize_float(acc, f, out_zp) : hw_requantize(acc, m, s) + out_zp;
                    out[oy * ow + ox] = (int8_t)clamp32(acc, act_min, act_max);
                }
            }
        }
        return;
    }
    for (co = 0; co < cout; co++) {
        const int32_t g = co / cout_g, wbase = co * cin_g * taps, m = scale ? 0 : mult[co], s = scale ? 0 : shift[co];
        const float f = scale ? scale[co] : 0.0f;
        const int32_t b = bias ? bias[co] : 0;
        int8_t *out = y + co * oh * ow;
        for (oy = 0; oy < oh; oy++) {
            const int32_t iy0 = oy * sh - ph;
            int32_t ky_lo, ky_hi;
            tap_range(iy0, kh, dh, h, &ky_lo, &ky_hi);
            for (ox = 0; ox < ow; ox++) {
                const int32_t ix0 = ox * sw - pw;
                int32_t kx_lo, kx_hi, acc = b;
                tap_range(ix0, kw, dw, w, &kx_lo, &kx_hi);
                for (ci = 0; ci < cin_g; ci++) {
                    const int8_t *plane = x + (g * cin_g + ci) * h * w;
                    const int32_t wc = wbase + ci * taps;
                    for (ky = ky_lo; ky < ky_hi; ky++) {
                        const int8_t *row = plane + (iy0 + ky * dh) * w + ix0;
                        const int32_t wr = wc + ky * kw;
                        if (packed) {
                            for (kx = kx_lo; kx < kx_hi; kx++)
                                acc += (row[kx * dw] - in_zp) * weight_at(weight, wr + kx, 1);
                        } else {
                            const int8_t *wp = weight + wr;
                            for (kx = kx_lo; kx < kx_hi; kx++) acc += (row[kx * dw] - in_zp) * wp[kx];
                        }
                    }
                }
                acc = scale ? hw_requantize_float(acc, f, out_zp) : hw_requantize(acc, m, s) + out_zp;
                out[oy * ow + ox] = (int8_t)clamp32(acc, act_min, act_max);
            }
        }
    }
}

void hw_dense(const hw_dense_params *p, const int8_t *x, int8_t *y) {
    const int32_t rows = p->rows, k_len = p->k, n_len = p->n, in_zp = p->in_zp, out_zp = p->out_zp;
    const int32_t act_min = p->act_min, act_max = p->act_max, packed = p->packed;
    const int8_t *weight = p->weight;
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift;
    const float *scale = p->scale, divide = p->divide;
    int32_t r, n, k;
    for (r = 0; r < rows; r++) {
        const int8_t *row = x + r * k_len;
        for (n = 0; n < n_len; n++) {
            int32_t acc = bias ? bias[n] : 0;
            const int32_t base = n * k_len;
            if (packed) {
                for (k = 0; k < k_len; k++) acc += (row[k] - in_zp) * weight_at(weight, base + k, 1);
            } else {
                const int8_t *wp = weight + base;
                for (k = 0; k < k_len; k++) acc += (row[k] - in_zp) * wp[k];
            }
            if (!scale) {
                acc = hw_requantize(acc, mult[n], shift[n]) + out_zp;
            } else if (divide != 0.0f) { /* a float output (QGemm's) quantized as QuantizeLinear does */
                float f = (float)acc * scale[n] / divide;
                f = f < (float)(-128 - out_zp) ? (float)(-128 - out_zp) : f;
                f = f > (float)(127 - out_zp) ? (float)(127 - out_zp) : f;
                acc = (int32_t)lrintf(f) + out_zp;
            } else {
                acc = hw_requantize_float(acc, scale[n], out_zp);
            }
            y[r * n_len + n] = (int8_t)clamp32(acc, act_min, act_max);
        }
    }
}

void hw_maxpool(const hw_pool_params *p, const int8_t *x, int8_t *y) {
    int32_t c, oy, ox, ky, kx;
    for (c = 0; c < p->c; c++) {
        const int8_t *plane = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; oy++) {
            for (ox = 0; ox < p->ow; ox++) {
                int32_t best = -128;
                for (ky = 0; ky < p->kh; ky++) {
                    const int32_t iy = oy * p->sh - p->ph + ky;
                    if (iy < 0 || iy >= p->h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        const int32_t ix = ox * p->sw - p->pw + kx;
                        if (ix >= 0 && ix < p->w && plane[iy * p->w + ix] > best) best = plane[iy * p->w + ix];
                    }
                }
                y[(c * p->oh + oy) * p->ow + ox] = (int8_t)best;
            }
        }
    }
}

/* One pooling window at (oy, ox): the sum of its values less the input zero point, how many
   values count (padding too where count_pad), and, when total is not NULL, the dequantized
   values summed in float in the same order (rows, then columns), as onnxruntime sums them. */
static void pool_window(const hw_pool_params *p, const int8_t *plane, int32_t oy, int32_t ox,
                        int32_t *sum, int32_t *count, float *total) {
    int32_t ky, kx;
    *sum = 0;
    *count = 0;
    if (total != NULL) {
        *total = 0.0f;
    }
    for (ky = 0; ky < p->kh; ky++) {
        const int32_t iy = oy * p->sh - p->ph + ky;
        for (kx = 0; kx < p->kw; kx++) {
            const int32_t ix = ox * p->sw - p->pw + kx;
            if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) {
                *count += p->count_pad;
                continue;
            }
            *sum += plane[iy * p->w + ix] - p->in_zp;
            if (total != NULL) {
                *total += p->in_scale * (float)(plane[iy * p->w + ix] - p->in_zp);
            }
            (*count)++;
        }
    }
}

void hw_avgpool(const hw_pool_params *p, const int8_t *x, int8_t *y) {
    /* sum * multiplier / count, rounded once (half up): exact for any window count */
    int32_t c, oy, ox;
    const int64_t unit = (int64_t)1 << (31 - p->shift);
    for (c = 0; c < p->c; c++) {
        const int8_t *plane = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; oy++) {
            for (ox = 0; ox < p->ow; ox++) {
                int32_t sum, count;
                int64_t num, den, q;
                pool_window(p, plane, oy, ox, &sum, &count, NULL);
                num = (int64_t)sum * p->mult;
                den = unit * (count > 0 ? count : 1);
                q = num >= 0 ? (2 * num + den) / (2 * den) : -((-2 * num + den) / (2 * den));
                y[(c * p->oh + oy) * p->ow + ox] = (int8_t)clamp32((int32_t)q + p->out_zp, -128, 127);
            }
        }
    }
}

void hw_avgpool_float(const hw_pool_params *p, const int8_t *x, int8_t *y) {
    /* as onnxruntime computes it: QLinearAveragePool sums the dequantized values in float
       (rows, then columns), divides by the count and quantizes (y / scale + zero point,
       rounded half to even); QLinearGlobalAveragePool (MLAS) sums the integers and scales
       the sum once by in_scale / (out_scale * count) */
    int32_t c, oy, ox;
    const float lo = (float)(-128 - p->out_zp), hi = (float)(127 - p->out_zp);
    for (c = 0; c < p->c; c++) {
        const int8_t *plane = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; oy++) {
            for (ox = 0; ox < p->ow; ox++) {
                int32_t sum, count, v;
                float total;
                pool_window(p, plane, oy, ox, &sum, &count, &total);
                if (p->global) {
                    float f = (float)sum * p->global_scale;
                    f = f < lo ? lo : (f > hi ? hi : f);
                    v = (int32_t)lrintf(f) + p->out_zp;
                } else {
                    /* the uint8 zero point added before rounding, as onnxruntime does */
                    const float f = total / (float)(count > 0 ? count : 1) / p->out_scale + (float)(p->out_zp + 128);
                    v = clamp32((int32_t)lrintf(f), 0, 255) - 128;
                }
                y[(c * p->oh + oy) * p->ow + ox] = (int8_t)clamp32(v, -128, 127);
            }
        }
    }
}

static float fma_float(float x, float y, float z) {
    /* x * y + z rounded once to float, as an FMA instruction does: the product is exact in
       double; the sum, rounded to odd where it is inexact, then rounds to float correctly */
    const double prod = (double)x * (double)y, sum = prod + (double)z;
    const double back = sum - prod, err = (prod - (sum - back)) + ((double)z - back);
    uint64_t bits;
    memcpy(&bits, &sum, sizeof bits);
    if (err != 0.0 && (bits & 1u) == 0) return (float)nextafter(sum, err > 0.0 ? HUGE_VAL : -HUGE_VAL);
    return (float)sum;
}

static int8_t add_fixed(const hw_add_params *p, int8_t a, int8_t b) {
    /* TFLite's integer Add: both inputs shifted left 20 bits, rescaled to twice the larger
       input scale, summed, then rescaled to the output grid */
    const int32_t va = hw_requantize((a - p->a_zp) * (1 << 20), p->a_mult, p->a_shift);
    const int32_t vb = hw_requantize((b - p->b_zp) * (1 << 20), p->b_mult, p->b_shift);
    const int32_t v = hw_requantize(va + vb, p->out_mult, p->out_shift) + p->out_zp;
    return (int8_t)clamp32(v, p->act_min, p->act_max);
}

static int8_t add_onnxruntime(const hw_add_params *p, int8_t a, int8_t b) {
    /* onnxruntime's QLinearAdd as MLAS computes it on x86-64 with AVX2 (qladd_avx2.cpp), in
       float on the uint8 values: fma(a, ratio_a, fma(b, ratio_b, fixed)) rounded half to even
       and saturated; an input that is one value along the last axis (MLAS's scalar case) adds
       its product to `fixed` unfused first. Bit-equal to onnxruntime's outputs. */
    const float va = (float)(a + 128), vb = (float)(b + 128);
    float c;
    int32_t v;
    if (p->scalar == 1) c = fma_float(vb, p->ratio_b, p->fixed + va * p->ratio_a);
    else if (p->scalar == 2) c = fma_float(va, p->ratio_a, p->fixed + vb * p->ratio_b);
    else c = fma_float(va, p->ratio_a, fma_float(vb, p->ratio_b, p->fixed));
    c = c < -1.0f ? -1.0f : (c > 256.0f ? 256.0f : c);
    v = clamp32((int32_t)lrintf(c), 0, 255) - 128;
    return (int8_t)clamp32(v, p->act_min, p->act_max);
}

/* y = a + b over the 4-D output, each input read through its broadcast strides */
static void add_broadcast(const hw_add_params *p, const int8_t *a, const int8_t *b, int8_t *y, int onnxruntime) {
    int32_t i0, i1, i2, i3, o = 0;
    for (i0 = 0; i0 < p->dims[0]; i0++)
        for (i1 = 0; i1 < p->dims[1]; i1++)
            for (i2 = 0; i2 < p->dims[2]; i2++)
                for (i3 = 0; i3 < p->dims[3]; i3++, o++) {
                    const int32_t ia = i0 * p->stride_a[0] + i1 * p->stride_a[1] + i2 * p->stride_a[2] + i3 * p->stride_a[3];
                    const int32_t ib = i0 * p->stride_b[0] + i1 * p->stride_b[1] + i2 * p->stride_b[2] + i3 * p->stride_b[3];
                    y[o] = onnxruntime ? add_onnxruntime(p, a[ia], b[ib]) : add_fixed(p, a[ia], b[ib]);
                }
}

void hw_add(const hw_add_params *p, const int8_t *a, const int8_t *b, int8_t *y) {
    add_broadcast(p, a, b, y, 0);
}

void hw_add_float(const hw_add_params *p, const int8_t *a, const int8_t *b, int8_t *y) {
    add_broadcast(p, a, b, y, 1);
}

void hw_unary(const hw_unary_params *p, const int8_t *x, int8_t *y) {
    /* y = clamp(x) on the same grid, or x requantized onto another grid and clamped;
       x and y may be the same buffer */
    int32_t i;
    for (i = 0; i < p->n; i++) {
        int32_t v = x[i];
        if (!p->same_grid) v = hw_requantize(v - p->in_zp, p->mult, p->shift) + p->out_zp;
        y[i] = (int8_t)clamp32(v, p->act_min, p->act_max);
    }
}

void hw_unary_float(const hw_unary_params *p, const int8_t *x, int8_t *y) {
    /* y = clamp(x) on the same grid, or x moved onto another grid and clamped, as
       onnxruntime's DequantizeLinear -> QuantizeLinear computes it in float32:
       (x - in_zp) * in_scale / out_scale, clamped, rounded half to even; x and y may be the
       same buffer */
    const float lo = (float)(-128 - p->out_zp), hi = (float)(127 - p->out_zp);
    int32_t i;
    for (i = 0; i < p->n; i++) {
        int32_t v = x[i];
        if (!p->same_grid) {
            float f = (float)(v - p->in_zp) * p->in_scale / p->out_scale;
            f = f < lo ? lo : (f > hi ? hi : f);
            v = (int32_t)lrintf(f) + p->out_zp;
        }
        y[i] = (int8_t)clamp32(v, p->act_min, p->act_max);
    }
}

void hw_softmax(const hw_softmax_params *p, const int8_t *x, int8_t *y) {
    int32_t r, c;
    for (r = 0; r < p->rows; r++) {
        const int8_t *in = x + r * p->cols;
        int8_t *out = y + r * p->cols;
        int32_t top = in[0];
        float sum = 0.0f;
        for (c = 1; c < p->cols; c++) top = in[c] > top ? in[c] : top;
        for (c = 0; c < p->cols; c++) sum += expf((float)(in[c] - top) * p->in_scale);
        for (c = 0; c < p->cols; c++) {
            const float prob = expf((float)(in[c] - top) * p->in_scale) / sum;
            out[c] = (int8_t)clamp32((int32_t)lrintf(prob / p->out_scale) + p->out_zp, -128, 127);
        }
    }
}

void hw_lut(const int8_t table[256], const int8_t *x, int8_t *y, int32_t n) {
    /* y = table[x]: an element-wise function from the input grid to the output grid, tabulated
       when the code was generated; x and y may be the same buffer */
    int32_t i;
    for (i = 0; i < n; i++) y[i] = table[(int32_t)x[i] + 128];
}

void hw_copy(int8_t *dst, const int8_t *src, int32_t n) {
    int32_t i;
    if (dst == src) return;
    if (dst < src) {
        for (i = 0; i < n; i++) dst[i] = src[i];
    } else {
        for (i = n - 1; i >= 0; i--) dst[i] = src[i];
    }
}
