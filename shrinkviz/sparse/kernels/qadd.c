/* The quantized residual add (+ ReLU) of a ResNet block, done in a sparse INT8 conv's epilogue, bit for bit
 * as torch.ao's quantized add (QFunctional.add -> quantized::add, x86 builds) followed by a quantized ReLU.
 *
 * torch's kernel (qadd_kernel in QuantizedOpKernels.cpp) runs a TensorIterator over the flat tensor. Its
 * vectorized path handles each loop range in steps of 64 elements (measured with torch 2.13's AVX-512 and
 * AVX2 kernels) and dequantizes with a fused multiply-add,
 *     d = fma(scale, q, scale * -zp);
 * then adds in float, multiplies by inv = 1.0f / out_scale, rounds half to even and adds the output zero
 * point. The elements left over at the end of a range (fewer than one step) go through the scalar path,
 *     d = scale * (float)(q - zp), then nearbyint(out_zp + c * inv)
 * (fbgemm::Quantize's legacy form: the zero point added before rounding; measured against torch 2.13, which
 * no other candidate formula matched). Both saturate to [0, 255]; the quantized ReLU that follows is
 * max(q, out_zp), the same as saturating from out_zp. The loop ranges are the whole tensor on one thread
 * (or below at::internal::GRAIN_SIZE = 32768 elements), else at::parallel_for's split into
 * min(threads, ceil(n / 32768)) chunks of ceil(n / chunks).
 * Which elements are "left over" therefore depends on the element count, the thread count and the CPU
 * capability torch dispatches to; sv_qadd_u8 reproduces that split (vstep = the step, 0 = no vectorized path).
 */
#include <math.h>
#include <stdint.h>

#include "qadd.h"

/* torch's kernels compute these sums of products as written; a contraction into fma (gcc's default under
 * -march=native) would round differently. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define SV_QADD_AVX512 1
#else
#define SV_QADD_AVX512 0
#endif

#define SV_GRAIN 32768L

static inline uint8_t q_out(float c, float inv, int zo, int lo) {
    float t = c * inv;
    if (t > 2147483520.0f) t = 2147483520.0f; /* torch clips before the float -> int32 conversion */
    long v = (long)nearbyintf(t) + zo;
    return (uint8_t)(v < lo ? lo : (v > 255 ? 255 : v));
}

/* Elements [i0, i1) of out = a + r, vector-path (fma) dequantization. */
static void add_vec(const sv_qaddp *q, const uint8_t *a, const uint8_t *r, float sr, int zr, uint8_t *out,
                    long i0, long i1) {
    const float pa = q->sa * (float)(-q->za), pr = sr * (float)(-zr), inv = 1.0f / q->so;
    long i = i0;
#if SV_QADD_AVX512
    const __m512 vsa = _mm512_set1_ps(q->sa), vpa = _mm512_set1_ps(pa), vsr = _mm512_set1_ps(sr);
    const __m512 vpr = _mm512_set1_ps(pr), vinv = _mm512_set1_ps(inv), vmax = _mm512_set1_ps(2147483520.0f);
    const __m512i vzo = _mm512_set1_epi32(q->zo), vlo = _mm512_set1_epi32(q->lo), vhi = _mm512_set1_epi32(255);
    for (; i + 16 <= i1; i += 16) {
        __m512 x = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(a + i))));
        __m512 y = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(r + i))));
        __m512 c = _mm512_add_ps(_mm512_fmadd_ps(vsa, x, vpa), _mm512_fmadd_ps(vsr, y, vpr));
        __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(c, vinv), vmax)), vzo);
        v = _mm512_min_epi32(_mm512_max_epi32(v, vlo), vhi);
        _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtepi32_epi8(v));
    }
#endif
    for (; i < i1; ++i) {
        float c = fmaf(q->sa, (float)a[i], pa) + fmaf(sr, (float)r[i], pr);
        out[i] = q_out(c, inv, q->zo, q->lo);
    }
}

/* Elements [i0, i1) the scalar path's way: no fma, and fbgemm::Quantize's legacy rounding, which adds the zero
 * point before rounding. */
static void add_scalar(const sv_qaddp *q, const uint8_t *a, const uint8_t *r, float sr, int zr, uint8_t *out,
                       long i0, long i1) {
    const float inv = 1.0f / q->so;
    for (long i = i0; i < i1; ++i) {
        float c = q->sa * (float)((int)a[i] - q->za) + sr * (float)((int)r[i] - zr);
        float v = nearbyintf((float)q->zo + c * inv);
        out[i] = (uint8_t)(v < (float)q->lo ? q->lo : (v > 255.0f ? 255 : (int)v));
    }
}

/* out[i] = qadd(a[i], r[i]) for i < n, where element i is element base + i of a flat tensor of total elements
 * that torch would process on `threads` threads (out may be a). */
void sv_qadd_u8(const sv_qaddp *q, const uint8_t *a, const uint8_t *r, float sr, int zr, uint8_t *out, long n,
                long base, long total, int threads) {
    long chunk = total;
    if (threads > 1 && total >= SV_GRAIN) {
        long parts = (total + SV_GRAIN - 1) / SV_GRAIN;
        if (parts > threads) parts = threads;
        chunk = (total + parts - 1) / parts;
    }
    long f = base; /* global index of the next element to do */
    while (f < base + n) {
        long start = f / chunk * chunk, len = total - start < chunk ? total - start : chunk;
        long vec_end = start + (q->vstep > 0 ? len / q->vstep * q->vstep : 0), end = start + len;
        long stop = base + n;
        if (f < vec_end) {
            long e = vec_end < stop ? vec_end : stop;
            add_vec(q, a, r, sr, zr, out, f - base, e - base);
            f = e;
        }
        if (f < stop && f < end) {
            long e = end < stop ? end : stop;
            add_scalar(q, a, r, sr, zr, out, f - base, e - base);
            f = e;
        }
    }
}
