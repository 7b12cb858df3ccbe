/*
 * shakehands._speedups: optional C accelerator for WebSocket masking (RFC 6455, section 5.3)
 * and for the receive fast path (whole simple data frames).
 *
 * The pure-Python fallbacks live in shakehands/protocol/masking.py and in
 * Connection._parse (shakehands/protocol/connection.py); both must give identical results for
 * every input.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Inputs larger than this are masked with the GIL released. */
#define SHAKEHANDS_GIL_RELEASE_THRESHOLD (64 * 1024)

#include "_frame.h"
#include "_mask.h"

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

PyDoc_STRVAR(parse_data_frames_doc,
"parse_data_frames(buffer, pos, mask_bit, limit, events, /)\n"
"--\n"
"\n"
"Parse the run of whole, simple data frames at ``buffer[pos:]``; return the new position.\n"
"\n"
"A simple frame has FIN set, no RSV bit, opcode text (1) or binary (2), the mask bit equal\n"
"to ``mask_bit`` (0x80 when the peer must mask) and a payload of at most ``limit`` bytes\n"
"(``limit`` < 0: no limit). Each one's payload, unmasked, is appended to the list ``events``\n"
"as bytes (binary) or str (text). Parsing stops, without error, before the first frame that\n"
"is not simple, not complete in the buffer, or not valid UTF-8: the caller's general parser\n"
"takes over from there (and reports errors). The C version of the fast path in\n"
"shakehands.protocol.connection.Connection._parse.");

static PyObject *
parse_data_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, end;
    long mask_bit;
    long long limit;
    PyObject *events;
    PyObject *result = NULL;

    (void)module;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "parse_data_frames() takes exactly 5 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    mask_bit = PyLong_AsLong(args[2]);
    if (mask_bit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    limit = PyLong_AsLongLong(args[3]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    events = args[4];
    if (!PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    end = view.len;
    if (pos < 0 || pos > end) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        goto done;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    while (end - pos >= 2) {
        unsigned char b0 = buf[pos], b1 = buf[pos + 1];
        if ((b0 != 0x82 && b0 != 0x81) || (long)(b1 & 0x80) != mask_bit) {
            break;
        }
        uint64_t length = b1 & 0x7F;
        Py_ssize_t start = pos + 2;
        if (length == 126) {
            if (end - pos < 4) {
                break;
            }
            length = ((uint64_t)buf[pos + 2] << 8) | buf[pos + 3];
            start = pos + 4;
        }
        else if (length == 127) {
            if (end - pos < 10) {
                break;
            }
            length = 0;
            for (int i = 2; i < 10; i++) {
                length = (length << 8) | buf[pos + i];
            }
            start = pos + 10;
        }
        if (mask_bit) {
            start += 4;
        }
        if (start > end || length > (uint64_t)(end - start)) {
            break; /* not all here yet (or a huge length: the general parser decides) */
        }
        if (limit >= 0 && length > (uint64_t)limit) {
            break;
        }
        Py_ssize_t n = (Py_ssize_t)length;
        PyObject *payload = PyBytes_FromStringAndSize(NULL, n);
        if (payload == NULL) {
            goto done;
        }
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(payload);
        if (mask_bit) {
            shakehands_mask(buf + start, dst, n, buf + start - 4);
        }
        else {
            memcpy(dst, buf + start, n);
        }
        if (b0 == 0x81) {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)dst, n, "strict");
            Py_DECREF(payload);
            if (text == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    goto done;
                }
                PyErr_Clear();
                break; /* the general parser fails the connection with 1007 */
            }
            payload = text;
        }
        int failed = PyList_Append(events, payload);
        Py_DECREF(payload);
        if (failed) {
            goto done;
        }
        pos = start + n;
    }
    result = PyLong_FromSsize_t(pos);

done:
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(join_masked_doc,
"join_masked(parts, /)\n"
"--\n"
"\n"
"Return the concatenation of ``parts``, a list of ``(data, mask)`` pairs, as bytes: each\n"
"``data`` XOR-masked with its 4-byte ``mask``, or copied as is when ``mask`` is None.\n"
"One pass over the payload: the C version of masking.join_masked_python.");

static PyObject *
join_masked(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *parts, *result = NULL;
    Py_ssize_t count, total = 0, i;
    Py_buffer *views = NULL;

    (void)module;
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "join_masked() takes exactly 1 positional argument (%zd given)", nargs);
        return NULL;
    }
    parts = args[0];
    if (!PyList_Check(parts)) {
        PyErr_SetString(PyExc_TypeError, "parts must be a list");
        return NULL;
    }
    count = PyList_GET_SIZE(parts);
    views = PyMem_Calloc(count ? count : 1, 2 * sizeof(Py_buffer));
    if (views == NULL) {
        return PyErr_NoMemory();
    }
    /* views[2*i]: the data; views[2*i+1]: its mask (buf NULL when the mask is None). */
    for (i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(parts, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "parts must hold (data, mask) pairs");
            goto done;
        }
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(pair, 0), &views[2 * i], PyBUF_SIMPLE) < 0) {
            goto done;
        }
        PyObject *mask = PyTuple_GET_ITEM(pair, 1);
        if (mask != Py_None) {
            if (PyObject_GetBuffer(mask, &views[2 * i + 1], PyBUF_SIMPLE) < 0) {
                goto done;
            }
            if (views[2 * i + 1].len != 4) {
                PyErr_Format(PyExc_ValueError, "mask must be 4 bytes long, got %zd",
                             views[2 * i + 1].len);
                goto done;
            }
        }
        if (views[2 * i].len > PY_SSIZE_T_MAX - total) {
            PyErr_NoMemory();
            goto done;
        }
        total += views[2 * i].len;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) {
        goto done;
    }
    {
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        for (i = 0; i < count; i++) {
            Py_buffer *data = &views[2 * i], *mask = &views[2 * i + 1];
            if (mask->buf != NULL) {
                shakehands_mask((const unsigned char *)data->buf, dst, data->len,
                                (const unsigned char *)mask->buf);
            }
            else {
                memcpy(dst, data->buf, data->len);
            }
            dst += data->len;
        }
    }

done:
    for (i = 0; i < 2 * count; i++) {
        if (views[i].obj != NULL) { /* calloc'ed: NULL unless acquired */
            PyBuffer_Release(&views[i]);
        }
    }
    PyMem_Free(views);
    return result;
}

PyDoc_STRVAR(build_frame_doc,
"build_frame(first_byte, payload, /)\n"
"--\n"
"\n"
"Return an unmasked frame: ``first_byte`` (FIN, RSV and opcode bits), the length in its\n"
"shortest encoding (RFC 6455, section 5.2), then ``payload``, in a single allocation.\n"
"The C version of shakehands.protocol.frames.build_frame_python.");

static PyObject *
build_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer payload;
    long first;
    unsigned char header[SHAKEHANDS_MAX_HEADER];
    Py_ssize_t hlen;
    PyObject *result;

    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "build_frame() takes exactly 2 positional arguments (%zd given)", nargs);
        return NULL;
    }
    first = PyLong_AsLong(args[0]);
    if (first == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (first < 0 || first > 255) {
        PyErr_SetString(PyExc_ValueError, "first_byte must be in range(256)");
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    hlen = shakehands_frame_header((unsigned char)first, (uint64_t)payload.len, header);
    result = PyBytes_FromStringAndSize(NULL, hlen + payload.len);
    if (result != NULL) {
        char *dst = PyBytes_AS_STRING(result);
        memcpy(dst, header, hlen);
        memcpy(dst + hlen, payload.buf, payload.len);
    }
    PyBuffer_Release(&payload);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"build_frame", (PyCFunction)(void (*)(void))build_frame, METH_FASTCALL, build_frame_doc},
    {"join_masked", (PyCFunction)(void (*)(void))join_masked, METH_FASTCALL, join_masked_doc},
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"parse_data_frames", (PyCFunction)(void (*)(void))parse_data_frames, METH_FASTCALL,
     parse_data_frames_doc},
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
"Provides apply_mask(), the XOR masking of WebSocket payloads (RFC 6455, section 5.3),\n"
"parse_data_frames(), the receive fast path for whole simple data frames,\n"
"build_frame(), an unmasked frame in one allocation, and join_masked(), a message\n"
"reassembled from masked parts in one pass.\n"
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
