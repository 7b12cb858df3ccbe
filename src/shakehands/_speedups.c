/*
 * shakehands._speedups: optional C accelerator for WebSocket masking (RFC 6455, section 5.3),
 * for the receive fast path (whole simple data frames), and for the opening handshake's request
 * head (parse_request_head).
 *
 * The pure-Python fallbacks live in shakehands/protocol/masking.py and in
 * Connection._parse (shakehands/protocol/connection.py), and http11._HeadParser (request heads);
 * both must give identical results for every input.
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

/* ------------------------------------------------------------------------------------------ */
/* The head of an HTTP/1.1 request, in one pass                                               */
/* ------------------------------------------------------------------------------------------ */

/* RFC 9110 section 5.6.2: tchar. */
static const unsigned char shakehands_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

/* Field values (RFC 9110 section 5.5): HTAB, SP, visible ASCII, obs-text. */
static inline int
shakehands_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Visible ASCII (the request target). */
static inline int
shakehands_vchar(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e;
}

/* The error of a malformed head: ValueError(reason, status), mapped by protocol/http11.py onto
 * InvalidRequest (400) or HeadersTooLarge (431). */
static PyObject *
head_error(const char *reason, int status)
{
    PyObject *exc = Py_BuildValue("(si)", reason, status);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_ValueError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static inline int
ascii_ieq(const unsigned char *p, const char *lower, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c += 32;
        }
        if (c != (unsigned char)lower[i]) {
            return 0;
        }
    }
    return 1;
}

/* The request line of http11.RequestParser._parse_request_line: sets *method, *target and
 * *authority (new references; *authority may be Py_None) or returns -1 with an error set. */
static int
parse_request_line(const unsigned char *s, Py_ssize_t n, PyObject **method, PyObject **target,
                   PyObject **authority)
{
    const unsigned char *sp1 = memchr(s, ' ', n), *sp2, *t, *v, *auth = NULL;
    Py_ssize_t tlen, vlen, alen = 0;
    int slash = 0;

    if (sp1 == NULL) {
        head_error("invalid request line", 400);
        return -1;
    }
    sp2 = memchr(sp1 + 1, ' ', n - (sp1 + 1 - s));
    if (sp2 == NULL || memchr(sp2 + 1, ' ', n - (sp2 + 1 - s)) != NULL) {
        head_error("invalid request line", 400);
        return -1;
    }
    if (sp1 == s) {
        head_error("invalid request line", 400);
        return -1;
    }
    for (const unsigned char *p = s; p < sp1; p++) {
        if (!shakehands_tchar[*p]) {
            head_error("invalid request line", 400);
            return -1;
        }
    }
    t = sp1 + 1;
    tlen = sp2 - t;
    v = sp2 + 1;
    vlen = n - (v - s);
    if (!(vlen == 8 && memcmp(v, "HTTP/1.1", 8) == 0)) {
        if (vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' &&
            v[6] == '.' && v[7] >= '0' && v[7] <= '9') {
            char reason[80];
            snprintf(reason, sizeof reason,
                     "unsupported HTTP version %.8s: WebSocket needs HTTP/1.1", (const char *)v);
            head_error(reason, 400);
            return -1;
        }
        head_error("invalid request line", 400);
        return -1;
    }
    /* Absolute-form: (?i:https?|wss?)://authority then the rest, visible ASCII. */
    {
        Py_ssize_t scheme = 0;
        if (tlen >= 7 && ascii_ieq(t, "http://", 7)) {
            scheme = 7;
        }
        else if (tlen >= 8 && ascii_ieq(t, "https://", 8)) {
            scheme = 8;
        }
        else if (tlen >= 5 && ascii_ieq(t, "ws://", 5)) {
            scheme = 5;
        }
        else if (tlen >= 6 && ascii_ieq(t, "wss://", 6)) {
            scheme = 6;
        }
        if (scheme) {
            const unsigned char *a = t + scheme, *end = t + tlen, *p = a;
            while (p < end && *p != '/' && *p != '?' && *p != '#' && *p > 0x20 && *p < 0x7f) {
                p++;
            }
            if (p > a) {
                const unsigned char *q = p;
                while (q < end && shakehands_vchar(*q)) {
                    q++;
                }
                if (q == end) {
                    auth = a;
                    alen = p - a;
                    t = p;
                    tlen = end - p;
                    slash = tlen == 0 || t[0] != '/';
                }
            }
        }
    }
    if (auth == NULL) {
        if (tlen == 0 || t[0] != '/') {
            head_error("invalid request target", 400);
            return -1;
        }
        for (Py_ssize_t i = 1; i < tlen; i++) {
            if (!shakehands_vchar(t[i])) {
                head_error("invalid request target", 400);
                return -1;
            }
        }
    }
    *method = PyUnicode_DecodeASCII((const char *)s, sp1 - s, NULL);
    if (*method == NULL) {
        return -1;
    }
    if (slash) {
        *target = PyUnicode_New(tlen + 1, 127);
        if (*target != NULL) {
            Py_UCS1 *d = PyUnicode_1BYTE_DATA(*target);
            d[0] = '/';
            memcpy(d + 1, t, tlen);
        }
    }
    else {
        *target = PyUnicode_DecodeASCII((const char *)t, tlen, NULL);
    }
    if (*target == NULL) {
        Py_CLEAR(*method);
        return -1;
    }
    if (auth != NULL) {
        *authority = PyUnicode_DecodeASCII((const char *)auth, alen, NULL);
        if (*authority == NULL) {
            Py_CLEAR(*method);
            Py_CLEAR(*target);
            return -1;
        }
    }
    else {
        *authority = Py_NewRef(Py_None);
    }
    return 0;
}

/* Add (name, value) to the index of lower-cased names (Headers._index). */
static int
index_add(PyObject *index, const unsigned char *name, Py_ssize_t nlen, PyObject *original,
          PyObject *value)
{
    PyObject *lower, *values;
    Py_ssize_t i;
    int rc;

    for (i = 0; i < nlen; i++) {
        if (name[i] >= 'A' && name[i] <= 'Z') {
            break;
        }
    }
    if (i == nlen) {
        lower = Py_NewRef(original);
    }
    else {
        lower = PyUnicode_New(nlen, 127);
        if (lower == NULL) {
            return -1;
        }
        Py_UCS1 *d = PyUnicode_1BYTE_DATA(lower);
        for (i = 0; i < nlen; i++) {
            unsigned char c = name[i];
            d[i] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        }
    }
    values = PyDict_GetItemWithError(index, lower);
    if (values != NULL) {
        rc = PyList_Append(values, value);
    }
    else if (PyErr_Occurred()) {
        rc = -1;
    }
    else {
        values = PyList_New(1);
        if (values == NULL) {
            rc = -1;
        }
        else {
            PyList_SET_ITEM(values, 0, Py_NewRef(value));
            rc = PyDict_SetItem(index, lower, values);
            Py_DECREF(values);
        }
    }
    Py_DECREF(lower);
    return rc;
}

/* The header fields of http11._HeadParser._parse_fields, plus the index of lower-cased
 * names. Returns 0, or -1 with an error set. */
static int
parse_fields(const unsigned char *b, Py_ssize_t n, Py_ssize_t max_headers, PyObject *fields,
             PyObject *index)
{
    const unsigned char *end = b + n, *line = b;
    Py_ssize_t count = 1;

    if (n == 0) {
        return 0;
    }
    for (const unsigned char *p = b; p + 1 < end; ) {
        const unsigned char *cr = memchr(p, '\r', end - 1 - p);
        if (cr == NULL) {
            break;
        }
        if (cr[1] == '\n') {
            count++;
            p = cr + 2;
        }
        else {
            p = cr + 1;
        }
    }
    if (count > max_headers) {
        char reason[80];
        snprintf(reason, sizeof reason, "request too many headers (at most %zd)", max_headers);
        head_error(reason, 431);
        return -1;
    }
    while (line <= end) {
        /* This line ends at the next CRLF, or at the end of the block. */
        const unsigned char *eol = line, *colon, *v, *ve;
        PyObject *name, *value, *pair;
        int rc;

        for (;;) {
            const unsigned char *cr = memchr(eol, '\r', end - eol);
            if (cr == NULL) {
                eol = end;
                break;
            }
            if (cr + 1 < end && cr[1] == '\n') {
                eol = cr;
                break;
            }
            eol = cr + 1;
        }
        colon = memchr(line, ':', eol - line);
        if (colon == NULL || colon == line) {
            head_error("invalid header line", 400);
            return -1;
        }
        if (line[0] == ' ' || line[0] == '\t') {
            head_error("obsolete line folding in headers", 400);
            return -1;
        }
        for (const unsigned char *p = line; p < colon; p++) {
            if (!shakehands_tchar[*p]) {
                head_error("invalid header name", 400);
                return -1;
            }
        }
        v = colon + 1;
        ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
            ve--;
        }
        for (const unsigned char *p = v; p < ve; p++) {
            if (!shakehands_field_char(*p)) {
                head_error("invalid character in header value", 400);
                return -1;
            }
        }
        name = PyUnicode_DecodeLatin1((const char *)line, colon - line, NULL);
        if (name == NULL) {
            return -1;
        }
        value = PyUnicode_DecodeLatin1((const char *)v, ve - v, NULL);
        if (value == NULL) {
            Py_DECREF(name);
            return -1;
        }
        rc = index_add(index, line, colon - line, name, value);
        pair = rc < 0 ? NULL : PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (pair == NULL) {
            return -1;
        }
        rc = PyList_Append(fields, pair);
        Py_DECREF(pair);
        if (rc < 0) {
            return -1;
        }
        line = eol + 2;
    }
    return 0;
}

PyDoc_STRVAR(parse_request_head_doc,
"parse_request_head(buffer, end, max_line, max_headers, max_header_bytes, /)\n"
"--\n"
"\n"
"Parse the head of an HTTP/1.1 request, ``buffer[:end]`` (without its final CRLFCRLF), in\n"
"one pass: the request line and the header fields, under the same limits and with the same\n"
"checks, in the same order, as shakehands.protocol.http11's pure-Python parser.\n"
"Returns ``(method, target, authority, fields, index)``: ``authority`` is that of an\n"
"absolute-form target (else None, and ``target`` is always in origin-form), ``fields`` the\n"
"list of ``(name, value)`` pairs and ``index`` a dict of lower-cased names to their values.\n"
"Raises ValueError(reason, status) for a malformed head: status 400, or 431 for a head over\n"
"``max_headers`` / ``max_header_bytes``.");

static PyObject *
parse_request_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    Py_ssize_t end, max_line, max_headers, max_header_bytes, slen;
    const unsigned char *s, *crlf;
    PyObject *method = NULL, *target = NULL, *authority = NULL, *fields = NULL, *index = NULL;
    PyObject *result = NULL;

    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "parse_request_head() takes exactly 5 arguments");
        return NULL;
    }
    end = PyLong_AsSsize_t(args[1]);
    max_line = PyLong_AsSsize_t(args[2]);
    max_headers = PyLong_AsSsize_t(args[3]);
    max_header_bytes = PyLong_AsSsize_t(args[4]);
    if ((end == -1 || max_line == -1 || max_headers == -1 || max_header_bytes == -1) &&
        PyErr_Occurred()) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (end < 0 || end > buf.len) {
        PyErr_SetString(PyExc_ValueError, "end out of range");
        goto done;
    }
    s = buf.buf;
    /* The start line ends at the first CRLF (the whole head if there is none). */
    crlf = s;
    slen = end;
    for (;;) {
        const unsigned char *cr = memchr(crlf, '\r', end - (crlf - s));
        if (cr == NULL) {
            break;
        }
        if (cr + 1 < s + end && cr[1] == '\n') {
            slen = cr - s;
            break;
        }
        crlf = cr + 1;
    }
    if (slen > max_line) {
        head_error("request line too long", 400);
        goto done;
    }
    if (parse_request_line(s, slen, &method, &target, &authority) < 0) {
        goto done;
    }
    {
        const unsigned char *block = slen < end ? s + slen + 2 : s + end;
        Py_ssize_t blen = s + end - block;
        if (blen > max_header_bytes) {
            head_error("request headers too large", 431);
            goto done;
        }
        fields = PyList_New(0);
        index = PyDict_New();
        if (fields == NULL || index == NULL) {
            goto done;
        }
        if (parse_fields(block, blen, max_headers, fields, index) < 0) {
            goto done;
        }
    }
    result = PyTuple_Pack(5, method, target, authority, fields, index);
done:
    Py_XDECREF(method);
    Py_XDECREF(target);
    Py_XDECREF(authority);
    Py_XDECREF(fields);
    Py_XDECREF(index);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"parse_request_head", (PyCFunction)(void (*)(void))parse_request_head, METH_FASTCALL,
     parse_request_head_doc},
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
"reassembled from masked parts in one pass, and parse_request_head(), the head of an\n"
"HTTP/1.1 request (the opening handshake) in one pass.\n"
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
