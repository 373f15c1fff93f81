/* Direct sparse convolution / linear kernels for one CPU thread (FP32 arithmetic; INT8 via exact
 * integer-valued floats).
 *
 * Layout: the input image is padded and split into stride phases ("phase images") so that every
 * convolution becomes stride 1 on a flat buffer: output position j = oh * Wq + ow reads the phase
 * buffer at off + j, where off encodes (input channel, phase, kernel row, kernel column). A weight row
 * (one output channel) is a list of (off, value) pairs. Columns ow >= OW of the flat output are junk and
 * are dropped by the finishing pass. The kernel keeps a tile of the flat output of one output channel in
 * registers and streams that channel's nonzeros over it; tiles are the outer loop so the slice of the
 * input a tile reads stays in cache while every output channel passes over it.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float vf __attribute__((vector_size(32), aligned(4)));
#define VL 8
#ifndef SV_MAXV
#ifdef __AVX512F__
#define SV_MAXV 16 /* vectors of output per tile: 32 vector registers */
#else
#define SV_MAXV 12 /* 16 vector registers: 12 accumulators and the operands */
#endif
#endif

int sv_abi_version(void) { return 6; }
int sv_tile_floats(void) { return SV_MAXV * VL; }

/* Columns k of a phase row that map inside the source row: k in [*k0, *k1). */
static void inside(int pw, int sw, int pl, int W, int Wq, int *k0, int *k1) {
    int lo = pl - pw, hi = W - 1 + pl - pw; /* sw * k must lie in [lo, hi] */
    int a = lo <= 0 ? 0 : (lo + sw - 1) / sw, b = hi < 0 ? -1 : hi / sw;
    if (b > Wq - 1) b = Wq - 1;
    *k0 = a;
    *k1 = b + 1 > a ? b + 1 : a;
}

/* dst[((c*sh+ph)*sw+pw)*Hq*Wq + i*Wq + k] = src[c, ph + sh*i - pt, pw + sw*k - pl] where that is inside the
 * source; the cells outside (the zero padding) are never written, so dst must start zeroed. */
void sv_phase_f32(const float *restrict src, int C, int H, int W, int pt, int pl, int sh, int sw, int Hq, int Wq,
                  float *restrict dst) {
    for (int c = 0; c < C; ++c)
        for (int ph = 0; ph < sh; ++ph)
            for (int pw = 0; pw < sw; ++pw) {
                float *d = dst + ((long)(c * sh + ph) * sw + pw) * Hq * Wq;
                const float *s = src + (long)c * H * W;
                int k0, k1;
                inside(pw, sw, pl, W, Wq, &k0, &k1);
                for (int i = 0; i < Hq; ++i) {
                    int y = ph + sh * i - pt;
                    float *drow = d + (long)i * Wq;
                    if (y < 0 || y >= H || k0 >= k1) continue;
                    const float *srow = s + (long)y * W + pw - pl;
                    if (sw == 1)
                        for (int k = k0; k < k1; ++k) drow[k] = srow[k];
                    else
                        for (int k = k0; k < k1; ++k) drow[k] = srow[sw * k];
                }
            }
}

/* The same for uint8 activations: the value stored is q - zp (exact in float; padding stays 0). */
void sv_phase_u8(const uint8_t *restrict src, int zp, int C, int H, int W, int pt, int pl, int sh, int sw, int Hq,
                 int Wq, float *restrict dst) {
    const float fz = (float)zp;
    for (int c = 0; c < C; ++c)
        for (int ph = 0; ph < sh; ++ph)
            for (int pw = 0; pw < sw; ++pw) {
                float *d = dst + ((long)(c * sh + ph) * sw + pw) * Hq * Wq;
                const uint8_t *s = src + (long)c * H * W;
                int k0, k1;
                inside(pw, sw, pl, W, Wq, &k0, &k1);
                for (int i = 0; i < Hq; ++i) {
                    int y = ph + sh * i - pt;
                    float *drow = d + (long)i * Wq;
                    if (y < 0 || y >= H || k0 >= k1) continue;
                    const uint8_t *srow = s + (long)y * W + pw - pl;
                    if (sw == 1)
                        for (int k = k0; k < k1; ++k) drow[k] = (float)srow[k] - fz;
                    else
                        for (int k = k0; k < k1; ++k) drow[k] = (float)srow[sw * k] - fz;
                }
            }
}

/* The column-shifted layout, for convolutions with an output width OW that is a multiple of 8: one copy of the
 * zero-padded input per row phase ph (< sh) and kernel column s, rows OW wide,
 *     dst[((c * sh + ph) * KW + s) * Hq * OW + i * OW + k] = src[c, ph + sh * i - pt, sw * k + s * dw - pl]
 * (0 outside the source), so output position j = oh * OW + ow reads dst at the offset of (c, (r * dh) % sh, s)
 * plus ((r * dh) / sh) * OW, plus j: every offset is a multiple of OW and every vector load of the kernels is
 * aligned (in the phase layout rows are Wq = (W + 2 * pl) / sw wide and most loads straddle two cache lines),
 * and no junk columns are computed. As sv_phase_f32, only cells inside the source are written: dst must start
 * zeroed. The uint8 variant subtracts zp. */
#define SHIFT_BODY(T, CONVERT)                                                                              \
    for (int c = 0; c < C; ++c)                                                                             \
        for (int ph = 0; ph < sh; ++ph)                                                                     \
            for (int s = 0; s < KW; ++s) {                                                                  \
                float *d = dst + ((long)(c * sh + ph) * KW + s) * Hq * OW;                                  \
                const T *src_c = src + (long)c * H * W;                                                     \
                const int shift = s * dw - pl; /* column sw * k + shift of the source */                    \
                int k0 = shift < 0 ? (-shift + sw - 1) / sw : 0, k1 = (W - 1 - shift) / sw + 1;             \
                if (W - 1 - shift < 0) k1 = 0;                                                              \
                if (k1 > OW) k1 = OW;                                                                       \
                for (int i = 0; i < Hq; ++i) {                                                              \
                    const int y = ph + sh * i - pt;                                                         \
                    if (y < 0 || y >= H) continue;                                                          \
                    float *drow = d + (long)i * OW;                                                         \
                    const T *srow = src_c + (long)y * W + shift;                                            \
                    if (sw == 1)                                                                            \
                        for (int k = k0; k < k1; ++k) drow[k] = CONVERT(srow[k]);                          \
                    else                                                                                    \
                        for (int k = k0; k < k1; ++k) drow[k] = CONVERT(srow[sw * k]);                     \
                }                                                                                           \
            }

#define SV_AS_FLOAT(v) (v)
#define SV_MINUS_ZP(v) ((float)(v) - fz)
void sv_shift_f32(const float *restrict src, int C, int H, int W, int pt, int pl, int sh, int sw, int KW, int dw,
                  int Hq, int OW, float *restrict dst) {
    SHIFT_BODY(float, SV_AS_FLOAT)
}

void sv_shift_u8(const uint8_t *restrict src, int zp, int C, int H, int W, int pt, int pl, int sh, int sw, int KW,
                 int dw, int Hq, int OW, float *restrict dst) {
    const float fz = (float)zp;
    SHIFT_BODY(uint8_t, SV_MINUS_ZP)
}
#undef SHIFT_BODY

static inline __attribute__((always_inline)) void tile(const float *xb, int OC, int nblk, const int32_t *rowptr,
                                                       const int32_t *off, const float *val, float *acc,
                                                       long Lr, int nv) {
    for (int blk = 0; blk < nblk; ++blk) {
        const int32_t *rp = rowptr + (long)blk * OC;
        for (int oc = 0; oc < OC; ++oc) {
            int k = rp[oc], e = rp[oc + 1];
            float *o = acc + oc * Lr;
            if (k == e && blk > 0) continue;
            vf a[SV_MAXV];
            if (blk == 0)
                for (int n = 0; n < nv; ++n) a[n] = (vf){0};
            else
                for (int n = 0; n < nv; ++n) a[n] = *(vf *)(o + VL * n);
            if (nv <= 4) {
                /* short tiles: two accumulator sets on alternate nonzeros, so the chain of dependent
                 * FMAs per vector is half as long and the FMA latency is hidden */
                vf b[4];
                for (int n = 0; n < nv; ++n) b[n] = (vf){0};
                for (; k + 1 < e; k += 2) {
                    const float *p = xb + off[k], *q = xb + off[k + 1];
                    const float v = val[k], w = val[k + 1];
                    for (int n = 0; n < nv; ++n) {
                        a[n] += v * *(const vf *)(p + VL * n);
                        b[n] += w * *(const vf *)(q + VL * n);
                    }
                }
                for (int n = 0; n < nv; ++n) a[n] += b[n];
            }
            for (; k < e; ++k) {
                const float *p = xb + off[k];
                const float v = val[k];
                for (int n = 0; n < nv; ++n) a[n] += v * *(const vf *)(p + VL * n);
            }
            for (int n = 0; n < nv; ++n) *(vf *)(o + VL * n) = a[n];
        }
    }
}

/* acc[oc * Lr + j] = sum_k val[k] * x[off[k] + j] for j < L (rounded up to 8; Lr >= that). The nonzeros
 * are grouped in nblk input-channel blocks, block-major: block b, channel oc is rowptr[b*OC + oc] ..
 * rowptr[b*OC + oc + 1], so the slice of the input one tile reads per block stays in L1. */
void sv_spconv(const float *x, int OC, int nblk, const int32_t *rowptr, const int32_t *off, const float *val,
               int L, float *acc, int Lr) {
    for (int j0 = 0; j0 < L; j0 += SV_MAXV * VL) {
        int rem = L - j0, nv = (rem + VL - 1) / VL;
        if (nv > SV_MAXV) nv = SV_MAXV;
        const float *xb = x + j0;
        float *ab = acc + j0;
        switch (nv) {
#define CASE(N) case N: tile(xb, OC, nblk, rowptr, off, val, ab, Lr, N); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#if SV_MAXV > 8
        CASE(9) CASE(10) CASE(11) CASE(12)
#endif
#if SV_MAXV > 12
        CASE(13) CASE(14) CASE(15) CASE(16)
#endif
#undef CASE
        default: break;
        }
    }
}

#ifdef __AVX512F__
#define SV_MAXV4 6
#else
#define SV_MAXV4 2
#endif
static inline __attribute__((always_inline)) void tile4(const float *xb, int G, int nblk, const int32_t *rowptr,
                                                        const int32_t *off, const float *val, float *acc,
                                                        long Lr, int nv) {
    for (int blk = 0; blk < nblk; ++blk) {
        const int32_t *rp = rowptr + (long)blk * G;
        for (int g = 0; g < G; ++g) {
            int k = rp[g], e = rp[g + 1];
            float *o = acc + (4L * g) * Lr;
            if (k == e && blk > 0) continue;
            vf a[4][SV_MAXV4];
            for (int r = 0; r < 4; ++r)
                for (int n = 0; n < nv; ++n) a[r][n] = blk == 0 ? (vf){0} : *(vf *)(o + r * Lr + VL * n);
            for (; k < e; ++k) {
                const float *p = xb + off[k];
                const float *v = val + 4L * k;
                for (int n = 0; n < nv; ++n) {
                    vf x = *(const vf *)(p + VL * n);
                    a[0][n] += v[0] * x;
                    a[1][n] += v[1] * x;
                    a[2][n] += v[2] * x;
                    a[3][n] += v[3] * x;
                }
            }
            for (int r = 0; r < 4; ++r)
                for (int n = 0; n < nv; ++n) *(vf *)(o + r * Lr + VL * n) = a[r][n];
        }
    }
}

/* As sv_spconv for weights in 4x1 blocks (4 consecutive output channels with the same nonzero positions):
 * rowptr runs over (block, group of 4 channels), each entry is one input offset with 4 values, so one
 * load of the input feeds 4 FMAs. acc rows are the output channels as before (OC = 4 * G). */
void sv_spconv4(const float *x, int G, int nblk, const int32_t *rowptr, const int32_t *off, const float *val,
                int L, float *acc, int Lr) {
    for (int j0 = 0; j0 < L; j0 += SV_MAXV4 * VL) {
        int rem = L - j0, nv = (rem + VL - 1) / VL;
        if (nv > SV_MAXV4) nv = SV_MAXV4;
        switch (nv) {
        case 1: tile4(x + j0, G, nblk, rowptr, off, val, acc + j0, Lr, 1); break;
#if SV_MAXV4 > 1
        case 2: tile4(x + j0, G, nblk, rowptr, off, val, acc + j0, Lr, 2); break;
#endif
#if SV_MAXV4 > 2
        case 3: tile4(x + j0, G, nblk, rowptr, off, val, acc + j0, Lr, 3); break;
        case 4: tile4(x + j0, G, nblk, rowptr, off, val, acc + j0, Lr, 4); break;
        case 5: tile4(x + j0, G, nblk, rowptr, off, val, acc + j0, Lr, 5); break;
        case 6: tile4(x + j0, G, nblk, rowptr, off, val, acc + j0, Lr, 6); break;
#endif
        default: break;
        }
    }
}

/* y[oc] = sum_k val[k] * x[off[k]]: one input vector (linear layer, batch 1). */
void sv_spmv(const float *x, int OC, const int32_t *rowptr, const int32_t *off, const float *val, float *y) {
    for (int oc = 0; oc < OC; ++oc) {
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        int k = rowptr[oc], e = rowptr[oc + 1];
        for (; k + 3 < e; k += 4) {
            s0 += val[k] * x[off[k]];
            s1 += val[k + 1] * x[off[k + 1]];
            s2 += val[k + 2] * x[off[k + 2]];
            s3 += val[k + 3] * x[off[k + 3]];
        }
        for (; k < e; ++k) s0 += val[k] * x[off[k]];
        y[oc] = (s0 + s1) + (s2 + s3);
    }
}

/* out[oc, oh, ow] = act(acc[oc * Lr + oh * Wq + ow] * scale[oc] + bias[oc] + res[oc, oh, ow]); scale, bias
 * and res (a residual added before the activation) may be NULL. */
void sv_finish_f32(const float *acc, int OC, int Lr, int OH, int OW, int Wq, const float *scale,
                   const float *bias, const float *res, int relu, float *out) {
    for (int oc = 0; oc < OC; ++oc) {
        const float s = scale ? scale[oc] : 1.0f, b = bias ? bias[oc] : 0.0f;
        for (int oh = 0; oh < OH; ++oh) {
            const float *a = acc + (long)oc * Lr + (long)oh * Wq;
            float *o = out + ((long)oc * OH + oh) * OW;
            const float *r = res ? res + ((long)oc * OH + oh) * OW : NULL;
            if (r)
                for (int ow = 0; ow < OW; ++ow) {
                    float v = a[ow] * s + b + r[ow];
                    o[ow] = (relu && v < 0.0f) ? 0.0f : v;
                }
            else
                for (int ow = 0; ow < OW; ++ow) {
                    float v = a[ow] * s + b;
                    o[ow] = (relu && v < 0.0f) ? 0.0f : v;
                }
        }
    }
}

/* Requantize like the x86 (fbgemm) backend: q = zp + round_half_even((acc + bias_q[oc]) * mult[oc]),
 * saturated to [lo, 255] (lo = zp for a fused ReLU, else 0). acc holds exact integer sums. */
void sv_finish_u8(const float *acc, int OC, int Lr, int OH, int OW, int Wq, const float *mult,
                  const float *bias_q, int zp, int lo, uint8_t *out) {
    for (int oc = 0; oc < OC; ++oc) {
        const float m = mult[oc], b = bias_q[oc];
        for (int oh = 0; oh < OH; ++oh) {
            const float *a = acc + (long)oc * Lr + (long)oh * Wq;
            uint8_t *o = out + ((long)oc * OH + oh) * OW;
            for (int ow = 0; ow < OW; ++ow) {
                float v = nearbyintf((a[ow] + b) * m) + (float)zp;
                v = v < (float)lo ? (float)lo : (v > 255.0f ? 255.0f : v);
                o[ow] = (uint8_t)v;
            }
        }
    }
}
