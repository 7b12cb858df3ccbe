/*
 * shakehands._speedups: optional C accelerator for WebSocket masking (RFC 6455, section 5.3).
 *
 * The pure-Python fallback lives in shakehands/protocol/masking.py; both must give identical
 * results for every input.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Inputs larger than this are masked with the GIL released. */
#define SHAKEHANDS_GIL_RELEASE_THRESHOLD (64 * 1024)

/*
 * dst[i] = src[i] ^ mask[i % 4] for i in [0, len).
 *
 * Works 8 bytes at a time with a uint64 holding the mask twice. memcpy is used for every load
 * and store so unaligned buffers are fine (compilers turn it into a plain move). The mask word is
 * built from the bytes in memory order, so the result does not depend on endianness.
 */
static void
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

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /)\n"
"--\n"
"\n"
"Return ``data`` XOR-masked with the 4-byte ``mask`` (RFC 6455, section 5.3), as bytes.\n"
"\n"
"``data`` and ``mask`` may be any C-contiguous bytes-like object (bytes, bytearray,\n"
"memoryview, ...). Byte ``i`` of the result is ``data[i] ^ mask[i % 4]``. Masking is its\n"
"own inverse, so the same call unmasks. Raises ValueError if ``mask`` is not 4 bytes long.\n"
"The GIL is released while masking large inputs.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;
    unsigned char key[4];

    (void)module;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "apply_mask() takes exactly 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must be 4 bytes long, got %zd", mask.len);
        goto done;
    }
    memcpy(key, mask.buf, 4);

    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto done;
    }
    if (data.len > SHAKEHANDS_GIL_RELEASE_THRESHOLD) {
        /* data stays exported (a bytearray cannot be resized) and result is not shared yet. */
        const unsigned char *src = (const unsigned char *)data.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_ssize_t len = data.len;
        Py_BEGIN_ALLOW_THREADS
        shakehands_mask(src, dst, len, key);
        Py_END_ALLOW_THREADS
    }
    else {
        shakehands_mask((const unsigned char *)data.buf,
                        (unsigned char *)PyBytes_AS_STRING(result), data.len, key);
    }

done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(speedups_doc,
"Optional C accelerator for shakehands.\n"
"\n"
"Provides apply_mask(), the XOR masking of WebSocket payloads (RFC 6455, section 5.3).\n"
"Import shakehands.protocol.masking instead of this module: it picks this implementation\n"
"when it is available and falls back to pure Python otherwise.");

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shakehands._speedups",
    .m_doc = speedups_doc,
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
