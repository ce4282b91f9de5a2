/* hwnas int8 kernels: portable C99, NCHW layout, batch 1.
 *
 * Activations are int8 on asymmetric per-tensor grids (scale, zero point); weights are
 * int8 on symmetric per-output-channel grids, or two 4-bit weights per byte (low nibble
 * first) when `packed` is set; biases are int32 on the grid input scale x weight scale.
 * Layers requantize with a Q31 multiplier and a shift per channel, as CMSIS-NN and TFLite
 * Micro define them (real multiplier = mult * 2^(shift - 31)), rounded once, half up
 * (CMSIS-NN's single-rounding arm_nn_requantize); or, given `scale` instead, as
 * onnxruntime's CPU kernels (MLAS) do: the int32 accumulator times a float32 scale per
 * channel, rounded half to even, with Add, average pools and grid changes in the *_float
 * kernels computed as its QLinearAdd, QLinearAveragePool, QLinearGlobalAveragePool and
 * QuantizeLinear do, so outputs are bit-equal to its run of the QDQ model.
 */
#ifndef HWNAS_KERNELS_H
#define HWNAS_KERNELS_H

#include <stdint.h>

typedef struct {
    int32_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int32_t in_zp, out_zp, act_min, act_max, packed;
    const int8_t *weight;
    const int32_t *bias, *mult, *shift;
    const float *scale; /* instead of mult and shift: per channel in_scale * w_scale / out_scale */
} hw_conv_params;

typedef struct {
    int32_t rows, k, n, in_zp, out_zp, act_min, act_max, packed;
    const int8_t *weight; /* [n][k] */
    const int32_t *bias, *mult, *shift;
    const float *scale; /* instead of mult and shift: in_scale * w_scale / out_scale, or in_scale * w_scale with divide */
    float divide; /* 0, or out_scale: onnxruntime's QGemm writes float, then quantizes (a graph output) */
} hw_dense_params;

typedef struct {
    int32_t c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, count_pad;
    int32_t in_zp, out_zp, mult, shift;
    int32_t global; /* hw_avgpool_float: a GlobalAveragePool (an integer sum, one float scale) */
    float in_scale, out_scale, global_scale;
} hw_pool_params;

typedef struct {
    int32_t dims[4], stride_a[4], stride_b[4];
    int32_t a_zp, b_zp, out_zp, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift, act_min, act_max;
    /* hw_add_float: scale_a / scale_out, scale_b / scale_out, the zero points' part, and
       scalar 1 (2) when a (b) is one value along the last axis */
    float ratio_a, ratio_b, fixed;
    int32_t scalar;
} hw_add_params;

typedef struct {
    int32_t n, in_zp, out_zp, mult, shift, same_grid, act_min, act_max;
    float in_scale, out_scale; /* hw_unary_float */
} hw_unary_params;

typedef struct {
    int32_t rows, cols;
    float in_scale, out_scale;
    int32_t in_zp, out_zp;
} hw_softmax_params;

int32_t hw_requantize(int32_t value, int32_t mult, int32_t shift);
int32_t hw_requantize_float(int32_t acc, float scale, int32_t zero_point);
void hw_conv(const hw_conv_params *p, const int8_t *x, int8_t *y);
void hw_dense(const hw_dense_params *p, const int8_t *x, int8_t *y);
void hw_maxpool(const hw_pool_params *p, const int8_t *x, int8_t *y);
void hw_avgpool(const hw_pool_params *p, const int8_t *x, int8_t *y);
void hw_avgpool_float(const hw_pool_params *p, const int8_t *x, int8_t *y);
void hw_add(const hw_add_params *p, const int8_t *a, const int8_t *b, int8_t *y);
void hw_add_float(const hw_add_params *p, const int8_t *a, const int8_t *b, int8_t *y);
void hw_unary(const hw_unary_params *p, const int8_t *x, int8_t *y);
void hw_unary_float(const hw_unary_params *p, const int8_t *x, int8_t *y);
void hw_softmax(const hw_softmax_params *p, const int8_t *x, int8_t *y);
void hw_lut(const int8_t table[256], const int8_t *x, int8_t *y, int32_t n);
void hw_copy(int8_t *dst, const int8_t *src, int32_t n);

#endif
