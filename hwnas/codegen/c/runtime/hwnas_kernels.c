/* hwnas int8 kernels (see hwnas_kernels.h). Written for clarity and exactness, not speed:
 * direct loops, no im2col scratch, so the arena holds activations only. */
#include "hwnas_kernels.h"

#include <math.h>

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
    const int32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, taps = p->kh * p->kw;
    int32_t co, oy, ox, ci, ky, kx;
    for (co = 0; co < p->cout; co++) {
        const int32_t g = co / cout_g;
        const int32_t wbase = co * cin_g * taps;
        for (oy = 0; oy < p->oh; oy++) {
            const int32_t iy0 = oy * p->sh - p->ph;
            int32_t ky_lo, ky_hi;
            tap_range(iy0, p->kh, p->dh, p->h, &ky_lo, &ky_hi);
            for (ox = 0; ox < p->ow; ox++) {
                const int32_t ix0 = ox * p->sw - p->pw;
                int32_t kx_lo, kx_hi;
                int32_t acc = p->bias ? p->bias[co] : 0;
                tap_range(ix0, p->kw, p->dw, p->w, &kx_lo, &kx_hi);
                for (ci = 0; ci < cin_g; ci++) {
                    const int8_t *plane = x + (g * cin_g + ci) * p->h * p->w;
                    const int32_t wc = wbase + ci * taps;
                    for (ky = ky_lo; ky < ky_hi; ky++) {
                        const int8_t *row = plane + (iy0 + ky * p->dh) * p->w + ix0;
                        const int32_t wr = wc + ky * p->kw;
                        if (p->packed) {
                            for (kx = kx_lo; kx < kx_hi; kx++)
                                acc += (row[kx * p->dw] - p->in_zp) * weight_at(p->weight, wr + kx, 1);
                        } else {
                            const int8_t *wp = p->weight + wr;
                            for (kx = kx_lo; kx < kx_hi; kx++) acc += (row[kx * p->dw] - p->in_zp) * wp[kx];
                        }
                    }
                }
                acc = hw_requantize(acc, p->mult[co], p->shift[co]) + p->out_zp;
                y[(co * p->oh + oy) * p->ow + ox] = (int8_t)clamp32(acc, p->act_min, p->act_max);
            }
        }
    }
}

void hw_dense(const hw_dense_params *p, const int8_t *x, int8_t *y) {
    int32_t r, n, k;
    for (r = 0; r < p->rows; r++) {
        const int8_t *row = x + r * p->k;
        for (n = 0; n < p->n; n++) {
            int32_t acc = p->bias ? p->bias[n] : 0;
            const int32_t base = n * p->k;
            if (p->packed) {
                for (k = 0; k < p->k; k++) acc += (row[k] - p->in_zp) * weight_at(p->weight, base + k, 1);
            } else {
                const int8_t *wp = p->weight + base;
                for (k = 0; k < p->k; k++) acc += (row[k] - p->in_zp) * wp[k];
            }
            acc = hw_requantize(acc, p->mult[n], p->shift[n]) + p->out_zp;
            y[r * p->n + n] = (int8_t)clamp32(acc, p->act_min, p->act_max);
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

void hw_avgpool(const hw_pool_params *p, const int8_t *x, int8_t *y) {
    /* sum * multiplier / count, rounded once (half up): exact for any window count */
    int32_t c, oy, ox, ky, kx;
    const int64_t unit = (int64_t)1 << (31 - p->shift);
    for (c = 0; c < p->c; c++) {
        const int8_t *plane = x + c * p->h * p->w;
        for (oy = 0; oy < p->oh; oy++) {
            for (ox = 0; ox < p->ow; ox++) {
                int32_t sum = 0, count = 0;
                int64_t num, den, q;
                for (ky = 0; ky < p->kh; ky++) {
                    const int32_t iy = oy * p->sh - p->ph + ky;
                    for (kx = 0; kx < p->kw; kx++) {
                        const int32_t ix = ox * p->sw - p->pw + kx;
                        if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) {
                            count += p->count_pad;
                            continue;
                        }
                        sum += plane[iy * p->w + ix] - p->in_zp;
                        count++;
                    }
                }
                num = (int64_t)sum * p->mult;
                den = unit * (count > 0 ? count : 1);
                q = num >= 0 ? (2 * num + den) / (2 * den) : -((-2 * num + den) / (2 * den));
                y[(c * p->oh + oy) * p->ow + ox] = (int8_t)clamp32((int32_t)q + p->out_zp, -128, 127);
            }
        }
    }
}

void hw_add(const hw_add_params *p, const int8_t *a, const int8_t *b, int8_t *y) {
    /* TFLite's integer Add: both inputs shifted left 20 bits, rescaled to twice the larger
       input scale, summed, then rescaled to the output grid */
    int32_t i0, i1, i2, i3, o = 0;
    for (i0 = 0; i0 < p->dims[0]; i0++)
        for (i1 = 0; i1 < p->dims[1]; i1++)
            for (i2 = 0; i2 < p->dims[2]; i2++)
                for (i3 = 0; i3 < p->dims[3]; i3++, o++) {
                    const int32_t ia = i0 * p->stride_a[0] + i1 * p->stride_a[1] + i2 * p->stride_a[2] + i3 * p->stride_a[3];
                    const int32_t ib = i0 * p->stride_b[0] + i1 * p->stride_b[1] + i2 * p->stride_b[2] + i3 * p->stride_b[3];
                    const int32_t va = hw_requantize((a[ia] - p->a_zp) * (1 << 20), p->a_mult, p->a_shift);
                    const int32_t vb = hw_requantize((b[ib] - p->b_zp) * (1 << 20), p->b_mult, p->b_shift);
                    const int32_t v = hw_requantize(va + vb, p->out_mult, p->out_shift) + p->out_zp;
                    y[o] = (int8_t)clamp32(v, p->act_min, p->act_max);
                }
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

void hw_copy(int8_t *dst, const int8_t *src, int32_t n) {
    int32_t i;
    if (dst == src) return;
    if (dst < src) {
        for (i = 0; i < n; i++) dst[i] = src[i];
    } else {
        for (i = n - 1; i >= 0; i--) dst[i] = src[i];
    }
}
