/*
 * shakehands_frame_header(): the header of an unmasked frame (RFC 6455, section 5.2), shared by
 * the C modules (_speedups.c, _fastpath.c). Included, not linked: each extension is one
 * translation unit.
 */

#ifndef SHAKEHANDS_FRAME_H
#define SHAKEHANDS_FRAME_H

#include <stdint.h>

/* The longest header of an unmasked frame: 2 bytes, then a 64-bit length. */
#define SHAKEHANDS_MAX_HEADER 10

/*
 * Write into header the first byte (FIN, RSV and opcode bits), then the payload length `len`
 * in its shortest encoding (7 bits, 16 bits after 126, or 64 bits after 127, network order),
 * without a mask. Returns the header's length: 2, 4 or 10.
 */
static inline Py_ssize_t
shakehands_frame_header(unsigned char first, uint64_t len,
                        unsigned char header[SHAKEHANDS_MAX_HEADER])
{
    header[0] = first;
    if (len < 126) {
        header[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        header[1] = 126;
        header[2] = (unsigned char)(len >> 8);
        header[3] = (unsigned char)len;
        return 4;
    }
    header[1] = 127;
    for (int i = 0; i < 8; i++) {
        header[2 + i] = (unsigned char)(len >> (8 * (7 - i)));
    }
    return 10;
}

#endif /* SHAKEHANDS_FRAME_H */
