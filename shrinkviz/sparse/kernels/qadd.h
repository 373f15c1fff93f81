/* The fused quantized residual add of qadd.c, shared with block_int8.c. */
#ifndef SV_QADD_H
#define SV_QADD_H
#include <stdint.h>

/* Fixed per fused layer: the conv's own output qparams (the first operand), the add's output qparams, the
 * lower saturation bound (the add's zero point with a ReLU, else 0) and torch's vector step (qadd.c). */
typedef struct {
    float sa;
    int za;
    float so;
    int zo, lo, vstep;
} sv_qaddp;

void sv_qadd_u8(const sv_qaddp *q, const uint8_t *a, const uint8_t *r, float sr, int zr, uint8_t *out, long n,
                long base, long total, int threads);
#endif
