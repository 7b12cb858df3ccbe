/*
 * The uvicorn front end on the compiled data path (included by _fastpath.c; see
 * shakehands.asgi.FastUvicornWebSocket for the theory of operation).
 *
 * It reuses FastPath's receiving (whole simple frames parsed where they were read, everything
 * else handed to the core: process()) with the connection itself as the listener (its
 * on_message appends the websocket.receive event), and adds:
 *
 * - AsgiFastPath: a CoroFastPath subtype (its writing state: the loop's call_soon, the write
 *   limit, the scheduled flush, and their functions) that also holds what the ASGI send needs
 *   (the connection's inbox and core) and a large frame being assembled. A frame of more
 *   than ASGI_IN_PLACE bytes cut by a read is not kept in the connection's own buffer: its
 *   message (a bytes object of the payload's size) is made once the header is in, what was
 *   read of it is unmasked into it, and every later piece goes
 *   straight there: asyncio's socket transports read into the message itself (get_buffer
 *   offers exactly the rest of the payload) and it is unmasked in place; uvloop's bytes are
 *   unmasked from where they are. One pass over each byte after the kernel's copy, instead of
 *   a copy into the own buffer and an unmasking copy. If the C path is turned off before the
 *   frame is whole (the application closes, say), the frame so far is rebuilt as it was
 *   received (header, payload masked again) and handed to the core with what follows.
 * - UvicornFastPathMixin: get_buffer, buffer_updated and data_received (FastPath's, plus the
 *   frame in place) and send(message), the ASGI send callable: a `websocket.send` event with
 *   `bytes` (a bytes object) or `text` (a str) becomes a frame built here in one allocation,
 *   when the C path is on (the core open, between messages, nobody closing), the transport is
 *   not closing, writing is not paused and the core has nothing queued and no fragmented
 *   message being sent; it returns an awaitable that has finished. Anything else (other events,
 *   other types, every error) is the Python send's (`ws._send_slow(message)`, a coroutine),
 *   which goes through the core. Frames are written as the Python send writes them: at once
 *   when the application has read every event (it answers the last message), else once per
 *   loop step (call_soon), or at once past the write limit; payloads of ASGI_SEPARATE_PAYLOAD
 *   bytes or more (bytes) leave uncopied, behind their header.
 *
 * Order: frames built here and queued are always older than what the core has queued (a send
 * goes to the core while the core has output), and Python writes what is queued here before
 * anything of the core's (FastUvicornWebSocket._flush, write_queued).
 */

/* Frames larger than this (header included) that a read cuts are assembled in place. */
#define ASGI_IN_PLACE (16 * 1024)
/* Payloads (bytes) at least this large are written apart from their header, uncopied; smaller
 * ones are copied behind it for one write (as the Python path joins up to 256 KiB). */
#define ASGI_SEPARATE_PAYLOAD (256 * 1024)
/* The longest header of a client's frame: 2 bytes, a 64-bit length, the mask key. */
#define ASGI_MAX_HEAD 14

typedef struct {
    union {
        CoroFastPathObject coro; /* call_soon, write_limit, unflushed, flush_scheduled */
        FastPathObject base;     /* coro.base: the FastPath, under its usual name */
    };
    PyObject *inbox;       /* the connection's deque of ASGI events */
    PyObject *protocol;    /* the core: send reads its _out and _send_opcode */
    char reading_partial;  /* the last get_buffer offered the rest of `partial` */
    unsigned char head_len;
    unsigned char head[ASGI_MAX_HEAD]; /* the header of the frame in `partial`, mask key last */
    PyObject *partial;     /* the payload of a large frame, unmasked up to `filled` */
    Py_ssize_t filled;
} AsgiFastPathObject;

static PyTypeObject AsgiFastPath_Type;
static PyObject *asgi_type_key;       /* "type" */
static PyObject *asgi_bytes_key;      /* "bytes" */
static PyObject *asgi_text_key;       /* "text" */
static PyObject *asgi_send_kind;      /* "websocket.send" */
static PyObject *asgi_out_name;       /* "_out" */
static PyObject *asgi_send_opcode_name; /* "_send_opcode" */
static PyObject *asgi_is_closing_name;  /* "is_closing" */

static int
AsgiFastPath_init(AsgiFastPathObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *shared, *call_soon, *inbox, *protocol;
    Py_ssize_t write_limit;
    static char *kwlist[] = {"read_buffer", "write_limit", "call_soon", "inbox", "protocol",
                             NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nOOO:AsgiFastPath", kwlist,
                                     &ReadBuffer_Type, &shared, &write_limit, &call_soon,
                                     &inbox, &protocol)) {
        return -1;
    }
    /* Every message of a read goes to the inbox (ws_max_queue pauses reading). */
    if (coro_init_state(&self->coro, shared, write_limit, call_soon) < 0) {
        return -1;
    }
    Py_INCREF(inbox);
    Py_XSETREF(self->inbox, inbox);
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    return 0;
}

static int
AsgiFastPath_traverse(AsgiFastPathObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->inbox);
    Py_VISIT(self->protocol);
    Py_VISIT(self->partial);
    return CoroFastPath_traverse(&self->coro, visit, arg);
}

static int
AsgiFastPath_clear(AsgiFastPathObject *self)
{
    Py_CLEAR(self->inbox);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->partial);
    return CoroFastPath_clear(&self->coro);
}

/* ------------------------------------------------------------------------------------------ */
/* A large frame assembled in place                                                            */
/* ------------------------------------------------------------------------------------------ */

/* Unmask len bytes from src into dst, which start at offset `phase` of the payload. */
static void
asgi_unmask(const unsigned char *src, unsigned char *dst, Py_ssize_t len,
            const unsigned char key[4], Py_ssize_t phase)
{
    unsigned char rotated[4];
    for (int i = 0; i < 4; i++) {
        rotated[i] = key[(phase + i) & 3];
    }
    shakehands_mask(src, dst, len, rotated);
}

/*
 * If p[0, avail) starts with a frame the C path takes (a whole-message text or binary frame,
 * masked, within the limit), larger than ASGI_IN_PLACE and not all there, with its header all
 * there: start assembling it (its message made, what is here unmasked into it) and return the
 * bytes used (avail). Else 0 (nothing done); -1 with an error set.
 */
static Py_ssize_t
asgi_start_partial(AsgiFastPathObject *self, const unsigned char *p, Py_ssize_t avail)
{
    FastPathObject *base = &self->base;
    if (!base->fast || self->partial != NULL || base->extension != NULL) {
        return 0;
    }
    Py_ssize_t hlen = 0;
    Py_ssize_t n = large_cut_frame(p, avail, base->limit, ASGI_IN_PLACE, &hlen);
    if (n == 0) {
        return 0;
    }
    PyObject *message = PyBytes_FromStringAndSize(NULL, n);
    if (message == NULL) {
        return -1;
    }
    memcpy(self->head, p, hlen);
    self->head_len = (unsigned char)hlen;
    Py_ssize_t here = avail - hlen;
    asgi_unmask(p + hlen, (unsigned char *)PyBytes_AS_STRING(message), here,
                self->head + hlen - 4, 0);
    self->partial = message;
    self->filled = here;
    return avail;
}

/* After process(): a large frame cut by the read, kept in the own buffer, is moved into its
 * message (what was read of it unmasked there) and the own buffer let go. */
static int
asgi_take_cut_frame(AsgiFastPathObject *self)
{
    FastPathObject *base = &self->base;
    if (base->start == base->end || base->need <= ASGI_IN_PLACE) {
        return 0;
    }
    Py_ssize_t used = asgi_start_partial(self, base->buf + base->start, base->end - base->start);
    if (used < 0) {
        return -1;
    }
    if (used > 0) {
        release_own_buffer(base);
    }
    return 0;
}

/*
 * The C path was turned off before the frame in `partial` was whole: hand the core the frame
 * as it was received (its header, the payload so far masked again) followed by the `extra_len`
 * bytes at `extra` (as read, masked), and forget it.
 */
static int
asgi_hand_back(AsgiFastPathObject *self, PyObject *ws, const unsigned char *extra,
               Py_ssize_t extra_len)
{
    return hand_back_cut_frame(ws, self->head, self->head_len, &self->partial, &self->filled,
                               extra, extra_len);
}

/* The frame in `partial` is whole: deliver its message, as run_frames delivers one. */
static int
asgi_finish(AsgiFastPathObject *self, PyObject *ws)
{
    FastPathObject *base = &self->base;
    PyObject *message = self->partial;
    if (message == NULL || self->filled != PyBytes_GET_SIZE(message)) {
        return 0;
    }
    if ((self->head[0] & 0x0F) == 0x01) {
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(message),
                                              PyBytes_GET_SIZE(message), "strict");
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                return -1;
            }
            PyErr_Clear();
            /* Not UTF-8: the core fails the connection (1007), with what follows. */
            base->fast = 0;
            base->send_ok = 0;
            return asgi_hand_back(self, ws, NULL, 0);
        }
        message = text;
    }
    else {
        Py_INCREF(message);
    }
    Py_CLEAR(self->partial);
    self->filled = 0;
    base->last_large = 0;
    PyObject *args[3] = {base->listener, ws, message};
    PyObject *r = base->listener == NULL
                      ? NULL
                      : PyObject_VectorcallMethod(on_message_name, args,
                                                  3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(message);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (base->listener == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no listener");
    }
    /* As process() does for RUN_ERROR: Python decides (log, 1011). */
    PyObject *exc = fetch_exception();
    int failed = call_ws(ws, "_fast_error", exc);
    Py_XDECREF(exc);
    return failed;
}

/* `n` bytes were read into `partial` after `filled` (get_buffer offered its rest). */
static int
asgi_partial_read(AsgiFastPathObject *self, PyObject *ws, Py_ssize_t n)
{
    PyObject *partial = self->partial;
    if (partial == NULL || n < 0 || n > PyBytes_GET_SIZE(partial) - self->filled) {
        PyErr_SetString(PyExc_ValueError, "more bytes than the buffer holds");
        return -1;
    }
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(partial) + self->filled;
    if (!self->base.fast) {
        return asgi_hand_back(self, ws, at, n);
    }
    asgi_unmask(at, at, n, self->head + self->head_len - 4, self->filled);
    self->filled += n;
    return asgi_finish(self, ws);
}

/* ------------------------------------------------------------------------------------------ */
/* The ASGI send (CoroFastPath's writing state, flush and schedule: coro_schedule)             */
/* ------------------------------------------------------------------------------------------ */

static int asgi_send_frame(AsgiFastPathObject *self, PyObject *ws, unsigned char first,
                           PyObject *data, const char *payload, Py_ssize_t len);

/*
 * Send `message` here if it is a websocket.send this path builds: 1 (sent or queued), 0 (the
 * Python send's: nothing done), -1 (an error set).
 */
static int
asgi_try_send(AsgiFastPathObject *self, PyObject *ws, PyObject *message)
{
    FastPathObject *base = &self->base;
    if (!base->send_ok || base->transport == NULL || self->protocol == NULL ||
        !PyDict_CheckExact(message)) {
        return 0;
    }
    PyObject *kind = PyDict_GetItemWithError(message, asgi_type_key);
    if (kind == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    if (kind != asgi_send_kind) {
        if (!PyUnicode_CheckExact(kind)) {
            return 0;
        }
        int same = PyUnicode_Compare(kind, asgi_send_kind);
        if (same == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (same != 0) {
            return 0;
        }
    }
    unsigned char first;
    const char *payload;
    Py_ssize_t len;
    PyObject *data = PyDict_GetItemWithError(message, asgi_bytes_key);
    if (data != NULL && data != Py_None) {
        if (!PyBytes_CheckExact(data)) {
            return 0; /* bytearray, memoryview, a wrong type: the Python send's */
        }
        first = 0x82;
        payload = PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
    }
    else {
        if (data == NULL && PyErr_Occurred()) {
            return -1;
        }
        data = PyDict_GetItemWithError(message, asgi_text_key);
        if (data == NULL || !PyUnicode_CheckExact(data)) {
            return data == NULL && PyErr_Occurred() ? -1 : 0;
        }
        payload = PyUnicode_AsUTF8AndSize(data, &len);
        if (payload == NULL) {
            PyErr_Clear(); /* lone surrogates: the core raises the right error */
            return 0;
        }
        first = 0x81;
    }
    /* Kept alive by us from here on (payload points into it), whatever runs meanwhile. */
    Py_INCREF(data);
    int failed = asgi_send_frame(self, ws, first, data, payload, len);
    Py_DECREF(data);
    return failed < 0 ? -1 : failed;
}

/* asgi_try_send, once the event is a websocket.send with `data` (bytes or str): 1 sent or
 * queued, 0 the Python send's, -1 an error. */
static int
asgi_send_frame(AsgiFastPathObject *self, PyObject *ws, unsigned char first, PyObject *data,
                const char *payload, Py_ssize_t len)
{
    FastPathObject *base = &self->base;
    /* The Python send's too: writing paused (it waits), the transport closing (it raises), the
     * core's output queued or a fragmented message being sent (order). */
    int no = coro_attr_true(ws, writing_paused_name);
    if (no == 0) {
        PyObject *closing = PyObject_CallMethodNoArgs(base->transport, asgi_is_closing_name);
        if (closing == NULL) {
            return -1;
        }
        no = PyObject_IsTrue(closing);
        Py_DECREF(closing);
    }
    if (no == 0) {
        no = coro_attr_true(self->protocol, asgi_out_name);
    }
    if (no == 0) {
        no = coro_attr_true(self->protocol, asgi_send_opcode_name);
    }
    if (no != 0) {
        return no < 0 ? -1 : 0;
    }
    Py_ssize_t waiting = PyObject_Size(self->inbox);
    if (waiting < 0) {
        return -1;
    }
    int failed;
    if (len >= ASGI_SEPARATE_PAYLOAD && PyBytes_CheckExact(data)) {
        /* What is queued, then the header, in one write; then the payload, uncopied. */
        self->coro.unflushed = 0;
        failed = send_frame(base, first, data, payload, len);
    }
    else {
        Py_ssize_t hlen;
        PyObject *frame = build_frame(first, payload, len, &hlen);
        if (frame == NULL) {
            failed = -1;
        }
        else {
            self->coro.unflushed += len;
            if (waiting == 0 || self->coro.unflushed >= self->coro.write_limit) {
                /* The application has read everything (it answers the last message), or
                 * the answers pile up: write now, with what was queued before. */
                self->coro.unflushed = 0;
                if (base->pending == NULL && base->out_len == 0) {
                    failed = write_object(base, frame);
                }
                else {
                    failed = queue_frame(base, frame) < 0 || flush_out(base) < 0;
                }
            }
            else {
                /* More events wait: the answers to a burst leave together, once per step. */
                failed = queue_frame(base, frame) < 0 || coro_schedule(&self->coro) < 0;
            }
            Py_DECREF(frame);
        }
    }
    return failed ? -1 : 1;
}

static AsgiFastPathObject *
asgi_of(PyObject *ws)
{
    PyObject *fast = PyObject_GetAttr(ws, fast_slot_name);
    if (fast == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(fast, &AsgiFastPath_Type)) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_TypeError, "_fast is not an AsgiFastPath");
        return NULL;
    }
    return (AsgiFastPathObject *)fast;
}

PyDoc_STRVAR(asgi_send_doc,
"send(message, /)\n"
"--\n"
"\n"
"The ASGI send callable: returns an awaitable. A websocket.send event with bytes or text is\n"
"framed and written here while the C path is on (see the module); anything else is\n"
"``ws._send_slow(message)``, the Python send.");

static PyObject *
asgi_send(PyObject *ws, PyObject *message)
{
    AsgiFastPathObject *self = asgi_of(ws);
    if (self == NULL) {
        return NULL;
    }
    int handled = asgi_try_send(self, ws, message);
    Py_DECREF(self);
    if (handled < 0) {
        return NULL;
    }
    if (handled) {
        return Py_NewRef(done_singleton);
    }
    PyObject *slow = PyObject_GetAttr(ws, send_slow_name);
    if (slow == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(slow, message);
    Py_DECREF(slow);
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving                                                                                   */
/* ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(asgi_get_buffer_doc,
"get_buffer(sizehint, /)\n"
"--\n"
"\n"
"asyncio.BufferedProtocol: where the next read goes (the rest of a large frame's message, the\n"
"server's shared buffer, or this connection's own after a cut frame).");

static PyObject *
asgi_get_buffer(PyObject *ws, PyObject *sizehint)
{
    AsgiFastPathObject *self = asgi_of(ws);
    if (self == NULL) {
        return NULL;
    }
    PyObject *view;
    if (self->partial != NULL) {
        self->reading_partial = 1;
        self->base.reading_shared = 0;
        view = PyMemoryView_FromMemory(PyBytes_AS_STRING(self->partial) + self->filled,
                                       PyBytes_GET_SIZE(self->partial) - self->filled,
                                       PyBUF_WRITE);
    }
    else {
        self->reading_partial = 0;
        view = mixin_get_buffer(ws, sizehint);
    }
    Py_DECREF(self);
    return view;
}

PyDoc_STRVAR(asgi_buffer_updated_doc,
"buffer_updated(nbytes, /)\n"
"--\n"
"\n"
"asyncio.BufferedProtocol: ``nbytes`` were read; deliver every whole message.");

static PyObject *
asgi_buffer_updated(PyObject *ws, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    AsgiFastPathObject *self = asgi_of(ws);
    if (self == NULL) {
        return NULL;
    }
    int failed;
    if (self->reading_partial) {
        self->reading_partial = 0;
        failed = asgi_partial_read(self, ws, n);
    }
    else {
        PyObject *r = process(&self->base, ws, n, -1, NULL);
        failed = r == NULL;
        Py_XDECREF(r);
        if (!failed) {
            failed = asgi_take_cut_frame(self) < 0;
        }
    }
    Py_DECREF(self);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(asgi_data_received_doc,
"data_received(data, /)\n"
"--\n"
"\n"
"asyncio.Protocol: ``data`` was read (uvloop, TLS); deliver every whole message, parsed or\n"
"unmasked where it is.");

static PyObject *
asgi_data_received(PyObject *ws, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        PyObject *copy = PyBytes_FromObject(data);
        if (copy == NULL) {
            return NULL;
        }
        PyObject *r = asgi_data_received(ws, copy);
        Py_DECREF(copy);
        return r;
    }
    AsgiFastPathObject *self = asgi_of(ws);
    if (self == NULL) {
        return NULL;
    }
    FastPathObject *base = &self->base;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    int failed = 0;
    PyObject *r;
    self->reading_partial = 0;
    base->reading_shared = 0; /* these bytes are not in the shared buffer */
    if (self->partial == NULL) {
        r = mixin_data_received(ws, data);
        failed = r == NULL || asgi_take_cut_frame(self) < 0;
        Py_XDECREF(r);
    }
    else if (!base->fast) {
        failed = asgi_hand_back(self, ws, p, n);
    }
    else {
        /* The next piece of the frame in partial: unmasked from where it is. */
        Py_ssize_t k = PyBytes_GET_SIZE(self->partial) - self->filled;
        if (k > n) {
            k = n;
        }
        asgi_unmask(p, (unsigned char *)PyBytes_AS_STRING(self->partial) + self->filled, k,
                    self->head + self->head_len - 4, self->filled);
        self->filled += k;
        failed = asgi_finish(self, ws) < 0;
        Py_ssize_t rest = n - k;
        if (!failed && rest > 0) {
            /* What follows the frame: the next large frame starts in place at once; anything
             * else is parsed from the own buffer (empty while a frame is in partial). */
            Py_ssize_t used = asgi_start_partial(self, p + k, rest);
            if (used < 0) {
                failed = 1;
            }
            else if (used == 0) {
                if (self->partial != NULL) {
                    /* Not UTF-8 handed back: partial is gone; still here means a bug. */
                    PyErr_SetString(PyExc_RuntimeError, "frame in progress");
                    failed = 1;
                }
                else if (!base->fast) {
                    failed = to_core(ws, p + k, rest) < 0;
                }
                else if (reserve(base, rest) < 0) {
                    failed = 1;
                }
                else {
                    memcpy(base->buf + base->end, p + k, rest);
                    r = process(base, ws, rest, -1, NULL);
                    failed = r == NULL || asgi_take_cut_frame(self) < 0;
                    Py_XDECREF(r);
                }
            }
        }
    }
    Py_DECREF(self);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(AsgiFastPath_attach_doc,
"attach(transport, /)\n"
"--\n"
"\n"
"Write through ``transport.write``; ``None`` drops it (the transport is gone) and any frame\n"
"being assembled.");

static PyObject *
AsgiFastPath_attach(AsgiFastPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "attach() takes exactly one argument");
        return NULL;
    }
    if (args[0] == Py_None) {
        Py_CLEAR(self->partial);
        self->filled = 0;
        self->reading_partial = 0;
    }
    /* No fd: the uvicorn front end writes through transport.write (uvicorn's transports). */
    return FastPath_attach(&self->base, args, 1);
}

static PyObject *
AsgiFastPath_get_assembling(AsgiFastPathObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->partial == NULL ? 0 : PyBytes_GET_SIZE(self->partial));
}

static PyGetSetDef AsgiFastPath_getset[] = {
    {"assembling", (getter)AsgiFastPath_get_assembling, NULL,
     "The payload size of the large frame being assembled in place (0: none).", NULL},
    {NULL},
};

static PyMethodDef AsgiFastPath_methods[] = {
    {"attach", (PyCFunction)(void (*)(void))AsgiFastPath_attach, METH_FASTCALL,
     AsgiFastPath_attach_doc},
    {NULL},
};

PyDoc_STRVAR(AsgiFastPath_doc,
"AsgiFastPath(read_buffer, write_limit, call_soon, inbox, protocol)\n"
"--\n"
"\n"
"The compiled data path of one uvicorn connection (shakehands.asgi.FastUvicornWebSocket): a\n"
"FastPath whose listener is the connection, which also builds the frames of the ASGI send\n"
"(written as CoroFastPath's: at once, or once per loop step) and assembles large frames in\n"
"place.");

static PyTypeObject AsgiFastPath_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.AsgiFastPath",
    .tp_basicsize = sizeof(AsgiFastPathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = AsgiFastPath_doc,
    .tp_traverse = (traverseproc)AsgiFastPath_traverse,
    .tp_clear = (inquiry)AsgiFastPath_clear,
    .tp_methods = AsgiFastPath_methods,
    .tp_getset = AsgiFastPath_getset,
    .tp_base = &CoroFastPath_Type, /* its writing state and flush; dealloc inherited */
    .tp_init = (initproc)AsgiFastPath_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef asgi_mixin_methods[] = {
    {"get_buffer", (PyCFunction)asgi_get_buffer, METH_O, asgi_get_buffer_doc},
    {"buffer_updated", (PyCFunction)asgi_buffer_updated, METH_O, asgi_buffer_updated_doc},
    {"data_received", (PyCFunction)asgi_data_received, METH_O, asgi_data_received_doc},
    {"send", (PyCFunction)asgi_send, METH_O, asgi_send_doc},
    {NULL},
};

PyDoc_STRVAR(asgi_mixin_doc,
"The C methods of a uvicorn connection on the compiled path: get_buffer, buffer_updated,\n"
"data_received and the ASGI send. No instance layout of its own; its state is the AsgiFastPath\n"
"in the ``_fast`` slot of the class it is mixed into, which also defines\n"
"``_slow_received(data)``, ``_fast_error(exc)``, ``on_message(ws, message)`` and\n"
"``_send_slow(message)``.");

static PyTypeObject AsgiMixin_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.UvicornFastPathMixin",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = asgi_mixin_doc,
    .tp_methods = asgi_mixin_methods,
    .tp_new = PyType_GenericNew,
};

/* Called by module_exec (after fastcoro_exec: send returns its Done, and AsgiFastPath
 * derives from its CoroFastPath). */
static int
fastasgi_exec(PyObject *module)
{
    asgi_type_key = PyUnicode_InternFromString("type");
    asgi_bytes_key = PyUnicode_InternFromString("bytes");
    asgi_text_key = PyUnicode_InternFromString("text");
    asgi_send_kind = PyUnicode_InternFromString("websocket.send");
    asgi_out_name = PyUnicode_InternFromString("_out");
    asgi_send_opcode_name = PyUnicode_InternFromString("_send_opcode");
    asgi_is_closing_name = PyUnicode_InternFromString("is_closing");
    if (asgi_type_key == NULL || asgi_bytes_key == NULL || asgi_text_key == NULL ||
        asgi_send_kind == NULL || asgi_out_name == NULL || asgi_send_opcode_name == NULL ||
        asgi_is_closing_name == NULL) {
        return -1;
    }
    if (PyType_Ready(&AsgiFastPath_Type) < 0 || PyType_Ready(&AsgiMixin_Type) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "AsgiFastPath", (PyObject *)&AsgiFastPath_Type) < 0 ||
        PyModule_AddObjectRef(module, "UvicornFastPathMixin", (PyObject *)&AsgiMixin_Type) < 0) {
        return -1;
    }
    return 0;
}
