/* INT8 direct sparse convolution for weights in 1x4 blocks along input channels, with exact int32
 * accumulation (AVX512-VNNI vpdpbusd where the compiler targets it, a scalar int32 loop otherwise).
 *
 * Layout: the uint8 input is padded and split into stride phases as in sparse.c, with 4 input channels
 * interleaved per position: byte 4 * (((c4 * sh + ph) * sw + pw) * Hq * Wq + i * Wq + k) + (c % 4) holds
 * src[c, ph + sh * i - pt, pw + sw * k - pl]. Cells outside the source (padding) and the lanes of missing
 * channels (C not a multiple of 4) hold the input zero point. A block is 4 int8 weights of one output
 * channel at one (kernel row, kernel column) and 4 consecutive input channels, packed in one int32 (lane
 * c % 4 in byte c % 4), with the offset off (in positions) of its 4-channel group, phase and tap. Output
 * position j = oh * Wq + ow accumulates dot4(x[off + j], w): vpdpbusd takes 16 positions' 4-channel groups
 * (64 bytes, unsigned) against the broadcast block (signed) into 16 int32 lanes. vpdpbusd (not vpdpbusds)
 * does not saturate: each u8 * s8 product is exact in 16 bits, the four are summed into the int32 lane
 * with wraparound, and |sum| <= 255 * 128 * taps stays far below 2**31 for any conv of the registry.
 * The finishing pass subtracts zp_x * (sum of the channel's weights), which cancels the zero point of
 * every tap, padding included, and requantizes with sv_finish_u8's float formula (bit-exact with fbgemm).
 * Stride-1 convs whose phase rows would carry >= 10% junk columns use the column-shifted layout instead
 * (sv_shift_u8x4: one copy per kernel column, rows OW wide); a fused residual add runs after the
 * requantization (qadd.c).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "qadd.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SV_VNNI 1
#else
#define SV_VNNI 0
#endif

int sv_vnni_available(void) { return SV_VNNI; }

#if SV_VNNI
/* 16 columns of 4 channels (one row each) interleaved into 64 bytes: column k's 4 channels side by side. */
static inline void sv_interleave4(__m128i r0, __m128i r1, __m128i r2, __m128i r3, uint8_t *dst) {
    __m128i lo01 = _mm_unpacklo_epi8(r0, r1), hi01 = _mm_unpackhi_epi8(r0, r1);
    __m128i lo23 = _mm_unpacklo_epi8(r2, r3), hi23 = _mm_unpackhi_epi8(r2, r3);
    __m128i *q = (__m128i *)dst;
    _mm_storeu_si128(q, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128(q + 1, _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128(q + 2, _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128(q + 3, _mm_unpackhi_epi16(hi01, hi23));
}
#endif

/* Fill dst (total bytes) with zp, then write the interleaved phase images of src (C x H x W bytes); only the
 * phases (ph, pw) whose bit ph * sw + pw is set in mask are written (a 1x1 stride-2 conv reads one of four). */
void sv_phase_u8x4(const uint8_t *restrict src, int zp, int C, int H, int W, int pt, int pl, int sh, int sw,
                   int Hq, int Wq, long total, int fill, int mask, uint8_t *restrict dst) {
    if (fill) memset(dst, zp, (size_t)total);
    const long plane = (long)Hq * Wq;
    for (int c = 0; c < C; c += (SV_VNNI && sw <= 2 && c % 4 == 0 && c + 3 < C) ? 4 : 1)
        for (int ph = 0; ph < sh; ++ph)
            for (int pw = 0; pw < sw; ++pw) {
                if (!((mask >> (ph * sw + pw)) & 1)) continue;
                uint8_t *d = dst + 4 * (((long)(c / 4) * sh + ph) * sw + pw) * plane + c % 4;
                const uint8_t *s = src + (long)c * H * W;
                int lo = pl - pw, hi = W - 1 + pl - pw; /* columns k with sw * k in [lo, hi] */
                int k0 = lo <= 0 ? 0 : (lo + sw - 1) / sw, k1 = (hi < 0 ? -1 : hi / sw) + 1;
                if (k1 > Wq) k1 = Wq;
                for (int i = 0; i < Hq; ++i) {
                    int y = ph + sh * i - pt;
                    if (y < 0 || y >= H || k0 >= k1) continue;
                    uint8_t *drow = d + 4L * i * Wq;
                    const uint8_t *srow = s + (long)y * W + pw - pl;
                    int k = k0;
#if SV_VNNI /* four channels at once: interleave 16 columns of each into 64 bytes */
                    if (sw <= 2 && c % 4 == 0 && c + 3 < C) {
                        const long cs = (long)H * W;
                        __m128i r0, r1, r2, r3;
                        const __m128i even = _mm_set1_epi16(0x00FF);
                        /* stride 2: columns 2k .. 2k + 30 of 32 bytes read, the last read byte inside the row */
                        for (; k + 16 <= k1 && (sw == 1 || 2 * k + 31 <= hi); k += 16) {
                            if (sw == 1) {
                                r0 = _mm_loadu_si128((const __m128i *)(srow + k));
                                r1 = _mm_loadu_si128((const __m128i *)(srow + cs + k));
                                r2 = _mm_loadu_si128((const __m128i *)(srow + 2 * cs + k));
                                r3 = _mm_loadu_si128((const __m128i *)(srow + 3 * cs + k));
                            } else {
#define SV_EVEN(P)                                                                                            \
    _mm_packus_epi16(_mm_and_si128(_mm_loadu_si128((const __m128i *)(P)), even),                             \
                     _mm_and_si128(_mm_loadu_si128((const __m128i *)((P) + 16)), even))
                                r0 = SV_EVEN(srow + 2 * k);
                                r1 = SV_EVEN(srow + cs + 2 * k);
                                r2 = SV_EVEN(srow + 2 * cs + 2 * k);
                                r3 = SV_EVEN(srow + 3 * cs + 2 * k);
#undef SV_EVEN
                            }
                            sv_interleave4(r0, r1, r2, r3, drow + 4 * k);
                        }
                        for (; k < k1; ++k)
                            for (int l = 0; l < 4; ++l) drow[4 * k + l] = srow[l * cs + sw * k];
                        continue;
                    }
#endif
                    for (; k < k1; ++k) drow[4 * k] = srow[sw * k];
                }
            }
}

/* The column-shifted layout of stride-1 convs (as sv_shift_f32 in sparse.c), 4 channels interleaved: byte
 * 4 * (((c4 * KW + s) * Hp + i) * OW + k) + c % 4 holds src[c, i - pt, k + s * dw - pl], the zero point
 * outside the source; output position j = oh * OW + ow reads position off + j with no junk columns. */
void sv_shift_u8x4(const uint8_t *restrict src, int zp, int C, int H, int W, int pt, int pl, int KW, int dw,
                   int Hp, int OW, long total, int fill, uint8_t *restrict dst) {
    if (fill) memset(dst, zp, (size_t)total);
    for (int c = 0; c < C; c += (SV_VNNI && c % 4 == 0 && c + 3 < C) ? 4 : 1)
        for (int s = 0; s < KW; ++s) {
            const int shift = s * dw - pl, k0 = shift < 0 ? -shift : 0, k1 = W - shift < OW ? W - shift : OW;
            for (int y = 0; y < H; ++y) {
                uint8_t *drow = dst + 4 * ((((long)(c / 4) * KW + s) * Hp + y + pt) * OW) + c % 4;
                const uint8_t *srow = src + ((long)c * H + y) * W + shift;
                int k = k0;
#if SV_VNNI
                if (c % 4 == 0 && c + 3 < C) {
                    const long cs = (long)H * W;
                    for (; k + 16 <= k1; k += 16) {
                        __m128i r0 = _mm_loadu_si128((const __m128i *)(srow + k));
                        __m128i r1 = _mm_loadu_si128((const __m128i *)(srow + cs + k));
                        __m128i r2 = _mm_loadu_si128((const __m128i *)(srow + 2 * cs + k));
                        __m128i r3 = _mm_loadu_si128((const __m128i *)(srow + 3 * cs + k));
                        sv_interleave4(r0, r1, r2, r3, drow + 4 * k);
                    }
                    for (; k < k1; ++k)
                        for (int l = 0; l < 4; ++l) drow[4 * k + l] = srow[l * cs + k];
                    continue;
                }
#endif
                for (; k < k1; ++k) drow[4 * k] = srow[k];
            }
        }
}

#if SV_VNNI
#define SV_MAXVB 16 /* 16 accumulators of 16 positions, of 32 vector registers */
static inline __attribute__((always_inline)) void tile_b(const uint8_t *xb, int OC, int nblk,
                                                         const int32_t *rowptr, const int32_t *off,
                                                         const int32_t *wv, int32_t *acc, long Lr, int nv) {
    for (int blk = 0; blk < nblk; ++blk) {
        const int32_t *rp = rowptr + (long)blk * OC;
        for (int oc = 0; oc < OC; ++oc) {
            int k = rp[oc], e = rp[oc + 1];
            int32_t *o = acc + oc * Lr;
            if (k == e && blk > 0) continue;
            __m512i a[SV_MAXVB];
            for (int n = 0; n < nv; ++n)
                a[n] = blk == 0 ? _mm512_setzero_si512() : _mm512_loadu_si512((const void *)(o + 16 * n));
            if (nv <= 4) { /* short tiles: a second accumulator set hides the vpdpbusd latency */
                __m512i b[4];
                for (int n = 0; n < nv; ++n) b[n] = _mm512_setzero_si512();
                for (; k + 1 < e; k += 2) {
                    const uint8_t *p = xb + 4L * off[k], *q = xb + 4L * off[k + 1];
                    const __m512i v = _mm512_set1_epi32(wv[k]), w = _mm512_set1_epi32(wv[k + 1]);
                    for (int n = 0; n < nv; ++n) {
                        a[n] = _mm512_dpbusd_epi32(a[n], _mm512_loadu_si512((const void *)(p + 64 * n)), v);
                        b[n] = _mm512_dpbusd_epi32(b[n], _mm512_loadu_si512((const void *)(q + 64 * n)), w);
                    }
                }
                for (int n = 0; n < nv; ++n) a[n] = _mm512_add_epi32(a[n], b[n]);
            }
            for (; k < e; ++k) {
                const uint8_t *p = xb + 4L * off[k];
                const __m512i v = _mm512_set1_epi32(wv[k]);
                for (int n = 0; n < nv; ++n)
                    a[n] = _mm512_dpbusd_epi32(a[n], _mm512_loadu_si512((const void *)(p + 64 * n)), v);
            }
            for (int n = 0; n < nv; ++n) _mm512_storeu_si512((void *)(o + 16 * n), a[n]);
        }
    }
}
#endif

/* acc[oc * Lr + j] = sum_k dot4(x[off[k] + j], wv[k]) for j < L rounded up to 16 (Lr >= that); rowptr runs
 * over (input-channel block, output channel), block-major, as in sv_spconv. x must be readable up to
 * position max(off) + Lr. */
void sv_spconv_b4i8(const uint8_t *x, int OC, int nblk, const int32_t *rowptr, const int32_t *off,
                    const int32_t *wv, int L, int32_t *acc, int Lr) {
#if SV_VNNI
    for (int j0 = 0; j0 < L; j0 += SV_MAXVB * 16) {
        int rem = L - j0, nv = (rem + 15) / 16;
        if (nv > SV_MAXVB) nv = SV_MAXVB;
        const uint8_t *xb = x + 4L * j0;
        int32_t *ab = acc + j0;
        switch (nv) {
#define CASE(N) case N: tile_b(xb, OC, nblk, rowptr, off, wv, ab, Lr, N); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
        CASE(9) CASE(10) CASE(11) CASE(12) CASE(13) CASE(14) CASE(15) CASE(16)
#undef CASE
        default: break;
        }
    }
#else
    const int Lv = (L + 15) / 16 * 16;
    for (int blk = 0; blk < nblk; ++blk)
        for (int oc = 0; oc < OC; ++oc) {
            int32_t *o = acc + (long)oc * Lr;
            if (blk == 0) memset(o, 0, sizeof(int32_t) * (size_t)Lv);
            for (int k = rowptr[(long)blk * OC + oc]; k < rowptr[(long)blk * OC + oc + 1]; ++k) {
                const uint8_t *p = x + 4L * off[k];
                const uint32_t w = (uint32_t)wv[k];
                const int w0 = (int8_t)(w & 255), w1 = (int8_t)((w >> 8) & 255);
                const int w2 = (int8_t)((w >> 16) & 255), w3 = (int8_t)(w >> 24);
                for (int j = 0; j < Lv; ++j)
                    o[j] += p[4 * j] * w0 + p[4 * j + 1] * w1 + p[4 * j + 2] * w2 + p[4 * j + 3] * w3;
            }
        }
#endif
}

/* out[oc, oh, ow] = requantized acc[oc * Lr + oh * Wq + ow] - zp_x * wsum[oc], as sv_finish_u8:
 * q = zp + round_half_even((a + bias_q[oc]) * mult[oc]) saturated to [lo, 255]. */
void sv_finish_i32(const int32_t *acc, int OC, int Lr, int OH, int OW, int Wq, const int32_t *wsum, int zp_x,
                   const float *mult, const float *bias_q, int zp, int lo, uint8_t *out) {
    for (int oc = 0; oc < OC; ++oc) {
        const float m = mult[oc], b = bias_q[oc];
        const int32_t corr = zp_x * wsum[oc];
        for (int oh = 0; oh < OH; ++oh) {
            const int32_t *a = acc + (long)oc * Lr + (long)oh * Wq;
            uint8_t *o = out + ((long)oc * OH + oh) * OW;
            int ow = 0;
#if SV_VNNI /* the same float operations, 16 lanes at a time (roundscale 0: round half to even) */
            const __m512i vc = _mm512_set1_epi32(corr);
            const __m512 vb = _mm512_set1_ps(b), vm = _mm512_set1_ps(m), vz = _mm512_set1_ps((float)zp);
            const __m512 vlo = _mm512_set1_ps((float)lo), vhi = _mm512_set1_ps(255.0f);
            for (; ow < OW; ow += 16) {
                const __mmask16 k = OW - ow >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (OW - ow)) - 1);
                __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, a + ow), vc));
                v = _mm512_add_ps(_mm512_roundscale_ps(_mm512_mul_ps(_mm512_add_ps(v, vb), vm), 0), vz);
                v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);
                _mm512_mask_cvtusepi32_storeu_epi8(o + ow, k, _mm512_cvtps_epi32(v));
            }
#endif
            for (; ow < OW; ++ow) {
                float v = nearbyintf(((float)(a[ow] - corr) + b) * m) + (float)zp;
                v = v < (float)lo ? (float)lo : (v > 255.0f ? 255.0f : v);
                o[ow] = (uint8_t)v;
            }
        }
    }
}

/* One packed layer for one input shape (built once by shrinkviz.sparse.blocks, passed by pointer), with its
 * requantization (mult, bias_q, zp_out, lo: as sv_finish_i32 takes them; reset by Python when the input
 * scale changes) and, where a residual add is fused, its parameters (add; NULL: none). */
typedef struct {
    int C, H, W, pt, pl, sh, sw, Hq, Wq, OC, nblk, L, Lr, OH, OW, nnz, zp_filled, phases, shift;
    long total;
    const int32_t *rowptr, *off, *wv, *wsum;
    uint8_t *xbuf;
    int32_t *acc;
    const float *mult, *bias_q;
    int zp_out, lo;
    const sv_qaddp *add;
} sv_b4plan;

/* The whole layer on a batch of contiguous images: per image, phase copy (the padding refilled only when zp
 * changes), kernel, requantization and, with p->add and res (the block's shortcut, output-shaped, scale sr,
 * zero point zr), the quantized residual add + ReLU of qadd.c; threads: torch's, for qadd.c's split. */
void sv_conv_b4i8(sv_b4plan *p, const uint8_t *src, int zp, uint8_t *out, int batch, const uint8_t *res, float sr,
                  int zr, int threads) {
    const long in_stride = (long)p->C * p->H * p->W, out_stride = (long)p->OC * p->OH * p->OW;
    const int fused = p->add != NULL && res != NULL;
    for (int b = 0; b < batch; ++b) {
        uint8_t *o = out + b * out_stride;
        if (p->nnz > 0) {
            if (p->shift) /* sh, sw, Hq, Wq hold KW, dw, Hp, OW */
                sv_shift_u8x4(src + b * in_stride, zp, p->C, p->H, p->W, p->pt, p->pl, p->sh, p->sw, p->Hq, p->Wq,
                              p->total, p->zp_filled != zp, p->xbuf);
            else
                sv_phase_u8x4(src + b * in_stride, zp, p->C, p->H, p->W, p->pt, p->pl, p->sh, p->sw, p->Hq,
                              p->Wq, p->total, p->zp_filled != zp, p->phases, p->xbuf);
            p->zp_filled = zp;
            sv_spconv_b4i8(p->xbuf, p->OC, p->nblk, p->rowptr, p->off, p->wv, p->L, p->acc, p->Lr);
        }
        sv_finish_i32(p->acc, p->OC, p->Lr, p->OH, p->OW, p->Wq, p->wsum, p->nnz > 0 ? zp : 0, p->mult, p->bias_q,
                      p->zp_out, p->lo, o);
        if (fused)
            sv_qadd_u8(p->add, o, res + b * out_stride, sr, zr, o, out_stride, b * out_stride, batch * out_stride,
                       threads);
    }
}
