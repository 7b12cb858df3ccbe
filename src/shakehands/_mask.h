/*
 * shakehands_mask(): the XOR masking of RFC 6455, section 5.3, shared by the C modules
 * (_speedups.c, _fastpath.c). Included, not linked: each extension is one translation unit.
 */

#ifndef SHAKEHANDS_MASK_H
#define SHAKEHANDS_MASK_H

#include <stdint.h>
#include <string.h>

/*
 * dst[i] = src[i] ^ mask[i % 4] for i in [0, len).
 *
 * Works 8 bytes at a time with a uint64 holding the mask twice. memcpy is used for every load
 * and store so unaligned buffers are fine (compilers turn it into a plain move). The mask word is
 * built from the bytes in memory order, so the result does not depend on endianness.
 */
static inline void
shakehands_mask(const unsigned char *src, unsigned char *dst, Py_ssize_t len,
                const unsigned char mask[4])
{
    Py_ssize_t i = 0;

    if (len >= 8) {
        unsigned char mask8[8];
        uint64_t m;

        memcpy(mask8, mask, 4);
        memcpy(mask8 + 4, mask, 4);
        memcpy(&m, mask8, 8);

        for (; i + 32 <= len; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, src + i, 8);
            memcpy(&b, src + i + 8, 8);
            memcpy(&c, src + i + 16, 8);
            memcpy(&d, src + i + 24, 8);
            a ^= m;
            b ^= m;
            c ^= m;
            d ^= m;
            memcpy(dst + i, &a, 8);
            memcpy(dst + i + 8, &b, 8);
            memcpy(dst + i + 16, &c, 8);
            memcpy(dst + i + 24, &d, 8);
        }
        for (; i + 8 <= len; i += 8) {
            uint64_t a;
            memcpy(&a, src + i, 8);
            a ^= m;
            memcpy(dst + i, &a, 8);
        }
    }
    /* i is a multiple of 8 here, so the mask phase is still i % 4. */
    for (; i < len; i++) {
        dst[i] = src[i] ^ mask[i & 3];
    }
}

#endif /* SHAKEHANDS_MASK_H */
