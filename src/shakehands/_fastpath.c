/*
 * shakehands._fastpath: the compiled receive and send path of the callback API (optional).
 *
 * What it owns: the bytes of an open connection between the socket and Listener.on_message,
 * for the common case only: whole, unfragmented text and binary frames from a client (with
 * RSV1 too when permessage-deflate is negotiated: decoded by one call to the extension object,
 * the core's own), and unmasked text and binary frames to it (encoded by one call to it).
 * What it must not know: anything else of the protocol. A frame it does not take (control
 * frames, fragments, RSV bits, a frame over the limit, invalid UTF-8, a huge length) ends its run: it writes what it queued, then hands every
 * byte from that frame on to the Python connection (`ws._slow_received(data)`), which feeds the
 * sans-I/O core: the core decides, fails, answers, closes. Python turns the fast path back on
 * (`FastPath.enable`) only when the core is between messages again, so no byte is lost or
 * reordered and the core stays the single source of the protocol's rules.
 *
 * Two types:
 *
 * - ReadBuffer: one per server (one event loop). Every read of a connection that holds no
 *   partial frame lands in it (asyncio.BufferedProtocol.get_buffer): an idle connection owns no
 *   read buffer, and whole frames are parsed where the kernel put them. Only the tail of a read
 *   (a frame cut by the read) is copied into the connection's own buffer; a large frame so cut
 *   is read into its message instead (see start_partial).
 * - FastPath: one per connection, in the connection's `_fast` slot: its own buffer, the queued
 *   output of a batch, the listener and the transport (their methods are looked up per call:
 *   a cached bound method would cost 64 bytes per idle connection each).
 *
 * and the mixin CallbackFastPathMixin (no instance layout of its own, so that the slotted
 * Python connection class can inherit it): get_buffer, buffer_updated and send in C, so that a
 * read costs no Python frame of ours and a message one Python call (the listener's).
 *
 * On asyncio's plain TCP transport, a FastPath also sends on the socket itself while the
 * transport's write buffer is empty (see direct_ready), and reads it itself, called by the
 * event loop in place of the transport's _read_ready (see FastPath_call).
 *
 * Everything runs with the GIL held; a ReadBuffer is used by one loop's connections only.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#ifndef _WIN32
/* Direct sends and reads on the socket of asyncio's plain TCP transport (see direct_ready). */
#define SHAKEHANDS_DIRECT 1
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#else
#define SHAKEHANDS_DIRECT 0
#endif

#include "_frame.h"
#include "_mask.h"

/* The read size offered when the connection's own buffer is in use (a cut frame). */
#define MIN_READ (64 * 1024)
/* Frames over this are left to the core when there is no limit (it reads them in parts). */
#define NO_LIMIT_CAP (16 * 1024 * 1024)
/* Payloads at least this large are written apart from their header (as the core queues them). */
#define SEPARATE_PAYLOAD (64 * 1024)
/* Frames larger than this (header included) that a read cuts are read into their message: the
 * payload's bytes object is made once the header is in, and later reads go straight into it
 * (see start_partial). */
#define IN_PLACE (64 * 1024)

/* Interned names, made by module_exec. */
static PyObject *fast_slot_name;     /* "_fast" */
static PyObject *send_slow_name;     /* "_send_slow" */
static PyObject *slow_received_name; /* "_slow_received" */
static PyObject *compress_name;      /* "compress" */
static PyObject *on_message_name;    /* "on_message" */
static PyObject *write_name;         /* "write" */
static PyObject *transport_name;     /* "transport" */
static PyObject *decode_name;        /* "decode" */
static PyObject *encode_name;        /* "encode" */
static PyObject *is_closing_name;    /* "is_closing" */
static PyObject *write_buffer_size_name; /* "get_write_buffer_size" */
static PyObject *conn_lost_name;     /* "_conn_lost" */
static PyObject *fatal_error_name;   /* "_fatal_error" */
static PyObject *on_eof_name;        /* "_read_ready__on_eof" */
static PyObject *writelines_name;    /* "writelines" */

/* What a run over the buffered bytes ended with. */
enum { RUN_MORE = 0, RUN_SLOW, RUN_ERROR, RUN_BACKLOG, RUN_DECODE_FAILED };

/* ------------------------------------------------------------------------------------------ */
/* ReadBuffer                                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    unsigned char *buf;
    Py_ssize_t size;
    int busy; /* its bytes are being parsed (the listener may run meanwhile) */
} ReadBufferObject;

static int
ReadBuffer_init(ReadBufferObject *self, PyObject *args, PyObject *kwds)
{
    Py_ssize_t size = 256 * 1024;
    static char *kwlist[] = {"size", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:ReadBuffer", kwlist, &size)) {
        return -1;
    }
    if (size < 1024) {
        PyErr_SetString(PyExc_ValueError, "size must be at least 1024");
        return -1;
    }
    PyMem_Free(self->buf);
    self->buf = PyMem_Malloc(size);
    if (self->buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->size = size;
    self->busy = 0;
    return 0;
}

static void
ReadBuffer_dealloc(ReadBufferObject *self)
{
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef ReadBuffer_members[] = {
    {"size", T_PYSSIZET, offsetof(ReadBufferObject, size), READONLY, "Its size in bytes."},
    {NULL},
};

PyDoc_STRVAR(ReadBuffer_doc,
"ReadBuffer(size=262144)\n"
"--\n"
"\n"
"The read buffer that the connections of one server (one event loop) share: a read of a\n"
"connection holding no partial frame lands here.");

static PyTypeObject ReadBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.ReadBuffer",
    .tp_basicsize = sizeof(ReadBufferObject),
    .tp_dealloc = (destructor)ReadBuffer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = ReadBuffer_doc,
    .tp_members = ReadBuffer_members,
    .tp_init = (initproc)ReadBuffer_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------ */
/* FastPath                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    ReadBufferObject *shared;
    /* The connection's own buffer: bytes [start, end) not parsed yet (a cut frame). */
    unsigned char *buf;
    Py_ssize_t cap, start, end;
    Py_ssize_t need;     /* the whole size of the cut frame at start, once its header is here */
    /* Flags, a byte each (one of these objects per connection: issue 14's idle memory). */
    char reading_shared; /* the last get_buffer gave the shared buffer */
    char fast;           /* frames are parsed here; else every byte goes to the core */
    char send_ok;        /* send() builds frames here; else the core does */
    char in_batch;       /* messages are being delivered: sends are queued, written after */
    char backlog;        /* bytes left after batch_limit messages, delivered later */
    char last_large;     /* the last message delivered was over MIN_READ: keep the own buffer */
    char direct;         /* fd is the transport's socket: send() on it when nothing waits */
    char reading;        /* it reads the socket itself (called as the transport's _read_ready) */
    char assemble;       /* large cut frames are read into their message (not the ASGI type) */
    char reading_partial; /* the last read target was the rest of `partial` */
    char gather;         /* transport.writelines writes its list in one writev, uncopied (uvloop) */
    int fd;              /* the socket, while direct (cached at attach, forgotten at detach) */
    long long limit;     /* largest payload taken here */
    Py_ssize_t batch_limit;
    PyObject *listener;  /* its on_message is called */
    PyObject *transport; /* its write is called */
    PyObject *owner;     /* the connection, while reading: its reads go to process() */
    /* The one negotiated extension on RSV1 (permessage-deflate), or NULL: see inflate(). */
    PyObject *extension;
    PyObject *decode_limit; /* the `max_size` of extension.decode: an int or None */
    /* The output of a batch: one frame as is, or several copied into out. */
    PyObject *pending;
    unsigned char *out;
    Py_ssize_t out_len, out_cap;
    /* A large frame read into its message (see start_partial): the payload, unmasked up to
     * `filled`, and what its header was (first byte, header length, mask key). */
    PyObject *partial;
    Py_ssize_t filled;
    unsigned char partial_b0, partial_hlen;
    unsigned char partial_key[4];
    /* The last two messages assembled so (see take_spare), kept while large ones come in a
     * row: one nobody else holds any more is reused for the next frame of its size. */
    PyObject *spare[2];
} FastPathObject;

static PyTypeObject FastPath_Type;
static void drop_spares(FastPathObject *self);

static int
FastPath_init(FastPathObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *shared;
    Py_ssize_t batch_limit;
    static char *kwlist[] = {"read_buffer", "batch_limit", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!n:FastPath", kwlist, &ReadBuffer_Type,
                                     &shared, &batch_limit)) {
        return -1;
    }
    if (batch_limit < 1) {
        PyErr_SetString(PyExc_ValueError, "batch_limit must be positive");
        return -1;
    }
    Py_INCREF(shared);
    Py_XSETREF(self->shared, (ReadBufferObject *)shared);
    self->batch_limit = batch_limit;
    self->limit = -1;
    self->assemble = 1;
    return 0;
}

static int
FastPath_traverse(FastPathObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->shared);
    Py_VISIT(self->listener);
    Py_VISIT(self->transport);
    Py_VISIT(self->owner);
    Py_VISIT(self->pending);
    Py_VISIT(self->extension);
    Py_VISIT(self->decode_limit);
    Py_VISIT(self->partial);
    Py_VISIT(self->spare[0]);
    Py_VISIT(self->spare[1]);
    return 0;
}

static int
FastPath_clear(FastPathObject *self)
{
    Py_CLEAR(self->shared);
    Py_CLEAR(self->listener);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->extension);
    Py_CLEAR(self->decode_limit);
    Py_CLEAR(self->partial);
    Py_CLEAR(self->spare[0]);
    Py_CLEAR(self->spare[1]);
    return 0;
}

static void
FastPath_dealloc(FastPathObject *self)
{
    PyObject_GC_UnTrack(self);
    /* The subtypes' (CoroFastPath, AsgiFastPath) clear their own fields: one dealloc for all. */
    Py_TYPE(self)->tp_clear((PyObject *)self);
    PyMem_Free(self->buf);
    PyMem_Free(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void
release_own_buffer(FastPathObject *self)
{
    PyMem_Free(self->buf);
    self->buf = NULL;
    self->cap = self->start = self->end = 0;
    self->need = 0;
}

/* Make room in the own buffer for `free` more bytes after end (moving the bytes to its start). */
static int
reserve(FastPathObject *self, Py_ssize_t free)
{
    Py_ssize_t used = self->end - self->start;
    if (self->start > 0 && self->cap - self->end < free) {
        memmove(self->buf, self->buf + self->start, used);
        self->start = 0;
        self->end = used;
    }
    if (self->cap - self->end < free) {
        Py_ssize_t cap = self->end + free;
        unsigned char *buf = PyMem_Realloc(self->buf, cap);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->buf = buf;
        self->cap = cap;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * Direct sends. On asyncio's plain TCP transport (`_SelectorSocketTransport`, no TLS: Python
 * decides, see shakehands.asyncio._fastpath.direct_fd, and passes the socket's fd to attach),
 * transport.write() with an empty write buffer does nothing but sock.send(data) and buffer
 * what is left. Here that send is made in C, with no Python frame: when the transport is not
 * closing and its write buffer is empty (so nothing written before can be overtaken), the
 * bytes go to send(2); what the kernel does not take (EAGAIN, a partial send), and everything
 * after any other error, goes to transport.write, which buffers it, or reports the error and
 * closes as it does for its own sends. Safety: the fd is cached at attach and forgotten at
 * detach (connection_lost: asyncio closes the socket only after that call), and nothing is
 * sent once the transport is closing (its fd may be closed and reused by then).
 */

/* One piece of output: `len` bytes at `ptr`, which belong to `owner` (an immutable bytes
 * object: what is not sent is handed on as a view of it), or NULL (copied when handed on). */
typedef struct {
    const char *ptr;
    Py_ssize_t len;
    PyObject *owner;
} Part;

#define MAX_PARTS 3

/* transport.write(data) (not attached, or detached: dropped, the transport is gone). */
static int
transport_write(FastPathObject *self, PyObject *data)
{
    if (self->transport == NULL) {
        return 0;
    }
    PyObject *args[2] = {self->transport, data};
    PyObject *r = PyObject_VectorcallMethod(write_name, args,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Whether a send(2) may be made now: 1 yes, 0 no (transport.write), -1 an error is set. */
static int
direct_ready(FastPathObject *self)
{
#if SHAKEHANDS_DIRECT
    if (!self->direct || self->transport == NULL) {
        return 0;
    }
    PyObject *args[1] = {self->transport};
    PyObject *r = PyObject_VectorcallMethod(is_closing_name, args,
                                            1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return -1;
    }
    int closing = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (closing != 0) {
        return closing < 0 ? -1 : 0;
    }
    r = PyObject_VectorcallMethod(write_buffer_size_name, args,
                                  1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_ssize_t size = PyLong_Check(r) ? PyLong_AsSsize_t(r) : -1;
    Py_DECREF(r);
    if (size == -1 && PyErr_Occurred()) {
        return -1;
    }
    return size == 0;
#else
    (void)self;
    return 0;
#endif
}

/* The bytes of parts[i] from `skip` on, as an object for transport.write. */
static PyObject *
part_rest(const Part *part, Py_ssize_t skip)
{
    if (part->owner != NULL) {
        if (skip == 0) {
            return Py_NewRef(part->owner);
        }
        PyObject *view = PyMemoryView_FromObject(part->owner);
        if (view == NULL) {
            return NULL;
        }
        PyObject *rest = PySequence_GetSlice(view, skip, part->len);
        Py_DECREF(view);
        return rest;
    }
    return PyBytes_FromStringAndSize(part->ptr + skip, part->len - skip);
}

/*
 * Write the parts, in order: send(2) first (direct_ready() said yes), then what is left through
 * transport.write. Every object handed on is made before the first Python call, so that a
 * part pointing into self->out stays valid however the transport calls back.
 */
static int
send_parts(FastPathObject *self, const Part *parts, int count)
{
    Py_ssize_t sent = 0;
#if SHAKEHANDS_DIRECT
    struct iovec iov[MAX_PARTS];
    int n_iov = 0;
    Py_ssize_t total = 0;
    for (int i = 0; i < count; i++) {
        if (parts[i].len > 0) {
            iov[n_iov].iov_base = (void *)parts[i].ptr;
            iov[n_iov].iov_len = (size_t)parts[i].len;
            n_iov++;
            total += parts[i].len;
        }
    }
    if (total == 0) {
        return 0;
    }
    for (;;) {
        ssize_t n;
        if (n_iov == 1) {
            n = send(self->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        else {
            struct msghdr msg;
            memset(&msg, 0, sizeof(msg));
            msg.msg_iov = iov;
            msg.msg_iovlen = n_iov;
            n = sendmsg(self->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n >= 0) {
            sent = (Py_ssize_t)n;
            break;
        }
        if (errno != EINTR) {
            /* EAGAIN: transport.write buffers it all. Any other error: transport.write meets
             * it too, and reports it and closes as for its own sends. */
            break;
        }
    }
    if (sent == total) {
        return 0;
    }
#endif
    PyObject *rest[MAX_PARTS];
    int n_rest = 0;
    for (int i = 0; i < count; i++) {
        if (sent >= parts[i].len) {
            sent -= parts[i].len;
            continue;
        }
        rest[n_rest] = part_rest(&parts[i], sent);
        sent = 0;
        if (rest[n_rest] == NULL) {
            for (int j = 0; j < n_rest; j++) {
                Py_DECREF(rest[j]);
            }
            return -1;
        }
        n_rest++;
    }
    int failed = 0;
    for (int i = 0; i < n_rest; i++) {
        if (!failed && transport_write(self, rest[i]) < 0) {
            failed = 1;
        }
        Py_DECREF(rest[i]);
    }
    return failed ? -1 : 0;
}

/* Write a bytes-like object (a frame, or the view of a large payload): sent here when the
 * transport allows it, else (and for what is left) through transport.write. */
static int
write_object(FastPathObject *self, PyObject *data)
{
    if (self->transport == NULL) {
        return 0; /* not attached (or detached: the transport is gone) */
    }
    int ready = direct_ready(self);
    if (ready < 0) {
        return -1;
    }
    if (!ready) {
        return transport_write(self, data);
    }
    if (PyBytes_CheckExact(data)) {
        Part part = {PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data};
        return send_parts(self, &part, 1);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    /* A view of bytes (a large payload) is handed on as a view of what is left; anything
     * else is copied (its exporter may change). */
    int immutable = PyMemoryView_Check(data) && PyMemoryView_GET_BASE(data) != NULL &&
                    PyBytes_CheckExact(PyMemoryView_GET_BASE(data)) &&
                    PyMemoryView_GET_BUFFER(data)->itemsize == 1;
    Part part = {view.buf, view.len, immutable ? data : NULL};
    int failed = send_parts(self, &part, 1);
    PyBuffer_Release(&view);
    return failed;
}

static int
out_append(FastPathObject *self, const char *data, Py_ssize_t len)
{
    if (self->out_cap - self->out_len < len) {
        Py_ssize_t cap = self->out_cap * 2;
        if (cap < self->out_len + len) {
            cap = self->out_len + len;
        }
        if (cap < 4096) {
            cap = 4096;
        }
        unsigned char *out = PyMem_Realloc(self->out, cap);
        if (out == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->out = out;
        self->out_cap = cap;
    }
    memcpy(self->out + self->out_len, data, len);
    self->out_len += len;
    return 0;
}

/* Queue a frame (bytes): kept as is if it is the only one, else copied into out. */
static int
queue_frame(FastPathObject *self, PyObject *frame)
{
    if (self->pending == NULL && self->out_len == 0) {
        Py_INCREF(frame);
        self->pending = frame;
        return 0;
    }
    if (self->pending != NULL) {
        PyObject *first = self->pending;
        self->pending = NULL;
        int failed = out_append(self, PyBytes_AS_STRING(first), PyBytes_GET_SIZE(first));
        Py_DECREF(first);
        if (failed) {
            return -1;
        }
    }
    return out_append(self, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame));
}

/* Do not keep a large output buffer per connection. */
static void
trim_out(FastPathObject *self)
{
    if (self->out_len == 0 && self->out_cap > SEPARATE_PAYLOAD) {
        PyMem_Free(self->out);
        self->out = NULL;
        self->out_cap = 0;
    }
}

/* Write what was queued, in one write. */
static int
flush_out(FastPathObject *self)
{
    if (self->pending != NULL) {
        PyObject *frame = self->pending;
        self->pending = NULL;
        int failed = write_object(self, frame);
        Py_DECREF(frame);
        return failed;
    }
    if (self->out_len == 0) {
        return 0;
    }
    int ready = direct_ready(self);
    if (ready < 0) {
        return -1;
    }
    if (ready) {
        /* Sent from out itself: no bytes object unless some is left over. */
        Part part = {(const char *)self->out, self->out_len, NULL};
        self->out_len = 0;
        int failed = send_parts(self, &part, 1);
        trim_out(self);
        return failed;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)self->out, self->out_len);
    self->out_len = 0;
    trim_out(self);
    if (data == NULL) {
        return -1;
    }
    int failed = transport_write(self, data);
    Py_DECREF(data);
    return failed;
}

/*
 * The message of a whole compressed frame (its unmasked payload, a reference stolen):
 * extension.decode(payload, True, max_message_size), the call the core makes for such a frame.
 * NULL with the extension's exception (PayloadTooBig, InvalidPayload) set.
 */
static PyObject *
inflate(FastPathObject *self, PyObject *payload)
{
    PyObject *args[4] = {self->extension, payload, Py_True,
                         self->decode_limit ? self->decode_limit : Py_None};
    PyObject *message = PyObject_VectorcallMethod(decode_name, args,
                                                  4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(payload);
    if (message != NULL && !PyBytes_Check(message)) {
        PyErr_Format(PyExc_TypeError, "decode() returned %.100s, not bytes",
                     Py_TYPE(message)->tp_name);
        Py_CLEAR(message);
    }
    return message;
}

/*
 * Parse and deliver the whole simple frames at buf[*pos, end). Returns a RUN_* code (RUN_MORE:
 * all here was delivered, or the rest is a cut frame whose whole size, if known, is in
 * self->need); *pos is where it stopped. The listener runs here.
 */
static int
run_frames(FastPathObject *self, PyObject *ws, const unsigned char *buf, Py_ssize_t *pos_p,
           Py_ssize_t end, Py_ssize_t batch_limit)
{
    Py_ssize_t pos = *pos_p;
    Py_ssize_t count = 0;
    int status = RUN_MORE;
    /* Compressed frames too: one over max_frame_size is the core's to fail (1009), and one
     * over max_message_size is buffered here no more than a plain one: the core inflates it in
     * parts (fails it, or delivers it if it inflates to no more than the limit). */
    long long limit = self->limit >= 0 ? self->limit : NO_LIMIT_CAP;

    self->need = 0;
    while (end - pos >= 2) {
        unsigned char b0 = buf[pos], b1 = buf[pos + 1];
        /* RSV1 on a whole frame: a message of the extension (permessage-deflate), if any. */
        int compressed = (b0 == 0xC2 || b0 == 0xC1) && self->extension != NULL;
        if (!(b0 == 0x82 || b0 == 0x81 || compressed) || !(b1 & 0x80)) {
            status = RUN_SLOW; /* not ours: a control frame, a fragment, RSV bits, unmasked */
            break;
        }
        uint64_t length = b1 & 0x7F;
        Py_ssize_t hlen = 6;
        if (length == 126) {
            if (end - pos < 4) {
                break;
            }
            length = ((uint64_t)buf[pos + 2] << 8) | buf[pos + 3];
            hlen = 8;
        }
        else if (length == 127) {
            if (end - pos < 10) {
                break;
            }
            length = 0;
            for (int i = 2; i < 10; i++) {
                length = (length << 8) | buf[pos + i];
            }
            hlen = 14;
        }
        if (length > (uint64_t)limit) {
            status = RUN_SLOW; /* the core fails it (1009), or reads it in parts */
            break;
        }
        Py_ssize_t n = (Py_ssize_t)length;
        if (end - pos < hlen + n) {
            if (compressed && hlen + n > MIN_READ) {
                /* A large compressed frame, cut: the core inflates it as it arrives (a bomb
                 * fails at once, with what was read; nothing waits for the whole frame). */
                status = RUN_SLOW;
                break;
            }
            self->need = hlen + n;
            break;
        }
        if (count >= batch_limit) {
            status = RUN_BACKLOG;
            break;
        }
        const unsigned char *payload = buf + pos + hlen;
        PyObject *message = PyBytes_FromStringAndSize(NULL, n);
        if (message == NULL) {
            status = RUN_ERROR;
            break;
        }
        shakehands_mask(payload, (unsigned char *)PyBytes_AS_STRING(message), n, payload - 4);
        if (compressed) {
            message = inflate(self, message);
            if (message == NULL) {
                /* The extension has consumed the frame: the core cannot parse it again, it
                 * fails the connection (_fast_decode_failed); the rest is dropped. */
                status = PyErr_ExceptionMatches(PyExc_Exception) ? RUN_DECODE_FAILED
                                                                 : RUN_ERROR;
                pos = end;
                break;
            }
            n = PyBytes_GET_SIZE(message);
        }
        if ((b0 & 0x0F) == 0x01) {
            PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(message), n, "strict");
            Py_DECREF(message);
            if (text == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                    status = RUN_ERROR;
                    break;
                }
                if (compressed) {
                    status = RUN_DECODE_FAILED; /* 1007, by the core (see above) */
                    pos = end;
                    break;
                }
                PyErr_Clear();
                status = RUN_SLOW; /* the core fails the connection with 1007 */
                break;
            }
            message = text;
        }
        pos += hlen + (Py_ssize_t)length;
        count++;
        self->last_large = hlen + (Py_ssize_t)length > MIN_READ;
        if (self->spare[1] != NULL && hlen + (Py_ssize_t)length <= IN_PLACE) {
            drop_spares(self); /* large messages no longer come in a row */
        }
        PyObject *args[3] = {self->listener, ws, message};
        PyObject *r = PyObject_VectorcallMethod(on_message_name, args,
                                                3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(message);
        if (r == NULL) {
            status = RUN_ERROR;
            break;
        }
        Py_DECREF(r);
        if (!self->fast) {
            status = RUN_SLOW; /* the listener closed or failed the connection */
            break;
        }
    }
    *pos_p = pos;
    return status;
}

/* The exception being raised, normalised, with its traceback (PyErr_GetRaisedException). */
static PyObject *
fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}


/* Hand bytes to the core through the Python connection. */
static int
to_core(PyObject *ws, const unsigned char *data, Py_ssize_t len)
{
    PyObject *name = slow_received_name;
    if (len == 0) {
        return 0;
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, len);
    if (bytes == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(ws, name, bytes);
    Py_DECREF(bytes);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
call_ws(PyObject *ws, const char *method, PyObject *arg)
{
    PyObject *r = arg ? PyObject_CallMethod(ws, method, "O", arg)
                      : PyObject_CallMethod(ws, method, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* A large frame read into its message                                                        */
/* ------------------------------------------------------------------------------------------ */

/*
 * A frame this path takes (a whole-message text or binary frame, masked, uncompressed, within
 * the limit) of more than IN_PLACE bytes that a read cuts is not kept in the connection's own
 * buffer: once its header is in, its message (a bytes object of the payload's size) is made,
 * what was read of the payload is unmasked into it, and every later byte goes straight there.
 * get_buffer and the direct reader offer exactly the rest of the payload (the kernel's copy is
 * the only one) and it is unmasked in place; bytes handed to data_received (uvloop, TLS) are
 * unmasked from where they are. So each byte is copied once after the kernel, where the own
 * buffer cost a copy into it and an unmasking copy out of it (and kept a large block per
 * connection). The whole message is delivered as run_frames delivers one (strict UTF-8 for
 * text, else the core fails the connection with 1007). If the path is turned off before the
 * frame is whole (the application closes), the frame so far is rebuilt as it was received
 * (its header, the payload masked again) and handed to the core with what follows. attach(None)
 * (the connection lost, mid-frame or not) frees it. Limits hold as before: run_frames refuses
 * a frame over the limit as soon as its length is in, before any of its payload is taken.
 */

/* Unmask len bytes from src into dst (src == dst: in place), at offset `phase` of the payload. */
static void
unmask_from(const unsigned char *src, unsigned char *dst, Py_ssize_t len,
            const unsigned char key[4], Py_ssize_t phase)
{
    unsigned char rotated[4];
    for (int i = 0; i < 4; i++) {
        rotated[i] = key[(phase + i) & 3];
    }
    shakehands_mask(src, dst, len, rotated);
}

/*
 * Recycling. A fresh bytes object of a megabyte per message costs page faults: glibc serves
 * it from the heap, and when it is freed at the top of the heap (as short-lived large blocks
 * are) trims the heap, so the next one maps and clears fresh pages (perf: exc_page_fault,
 * clear_page_erms; 4 x 2 x 1 MiB cost about 2.5x the CPU per message of the own-buffer path).
 * So the last two messages made here are kept (spare) while large messages come in a row, and
 * one that nobody else references any more (its reference count is ours alone: the listener
 * dropped it, the transport wrote it) is reused for the next frame of the same size: no other
 * code can see it, and its cached hash is reset. Any smaller message delivered, and
 * attach(None), let them go: at most two such blocks per connection, only while large
 * messages come in a row.
 */
#if PY_VERSION_HEX < 0x030F0000
#define SHAKEHANDS_RECYCLE 1
#else
#define SHAKEHANDS_RECYCLE 0 /* bytes' hash cache may move: not reused */
#endif

static PyObject *
take_spare(FastPathObject *self, Py_ssize_t n)
{
#if SHAKEHANDS_RECYCLE
    for (int i = 0; i < 2; i++) {
        PyObject *spare = self->spare[i];
        if (spare != NULL && Py_REFCNT(spare) == 1 && PyBytes_GET_SIZE(spare) == n) {
            self->spare[i] = NULL;
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
            ((PyBytesObject *)spare)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
            return spare;
        }
    }
#endif
    return PyBytes_FromStringAndSize(NULL, n);
}

/* Keep a message made here (a reference is added) as the newest spare. */
static void
keep_spare(FastPathObject *self, PyObject *message)
{
#if SHAKEHANDS_RECYCLE
    PyObject *oldest = self->spare[0];
    self->spare[0] = self->spare[1];
    self->spare[1] = Py_NewRef(message);
    Py_XDECREF(oldest);
#else
    (void)self;
    (void)message;
#endif
}

static void
drop_spares(FastPathObject *self)
{
    Py_CLEAR(self->spare[0]);
    Py_CLEAR(self->spare[1]);
}

/*
 * If p[0, avail) starts with the header (all of it, mask key included) of a whole-message
 * text or binary frame, masked, within `limit` (-1: none), of more than `in_place` bytes with
 * its payload not all here: its payload length, and its header length in *hlen. Else 0. The
 * callback/coroutine paths and the ASGI path read such a frame straight into its message.
 */
static Py_ssize_t
large_cut_frame(const unsigned char *p, Py_ssize_t avail, long long limit, Py_ssize_t in_place,
                Py_ssize_t *hlen_out)
{
    if (avail < 2) {
        return 0;
    }
    unsigned char b0 = p[0], b1 = p[1];
    if (!(b0 == 0x81 || b0 == 0x82) || !(b1 & 0x80)) {
        return 0;
    }
    uint64_t length = b1 & 0x7F;
    Py_ssize_t hlen = 6;
    if (length == 126) {
        if (avail < 4) {
            return 0;
        }
        length = ((uint64_t)p[2] << 8) | p[3];
        hlen = 8;
    }
    else if (length == 127) {
        if (avail < 10) {
            return 0;
        }
        length = 0;
        for (int i = 2; i < 10; i++) {
            length = (length << 8) | p[i];
        }
        hlen = 14;
    }
    if (limit < 0) {
        limit = NO_LIMIT_CAP;
    }
    if (length > (uint64_t)limit || avail < hlen) {
        return 0; /* the core's (over the limit), or the mask key is not all here yet */
    }
    Py_ssize_t n = (Py_ssize_t)length;
    if (hlen + n <= in_place || hlen + n <= avail) {
        return 0; /* small, or whole: parsed where it is */
    }
    *hlen_out = hlen;
    return n;
}

/*
 * If p[0, avail) starts with a frame this path takes, of more than IN_PLACE bytes, with its
 * header all there and its payload not: make its message, unmask what is here into it and
 * return avail (all used). Else 0 (nothing done); -1 with an error set.
 */
static Py_ssize_t
start_partial(FastPathObject *self, const unsigned char *p, Py_ssize_t avail)
{
    if (!self->assemble || !self->fast || self->partial != NULL) {
        return 0;
    }
    Py_ssize_t hlen = 0;
    Py_ssize_t n = large_cut_frame(p, avail, self->limit, IN_PLACE, &hlen);
    if (n == 0) {
        return 0;
    }
    unsigned char b0 = p[0];
    PyObject *message = take_spare(self, n);
    if (message == NULL) {
        return -1;
    }
    self->partial_b0 = b0;
    self->partial_hlen = (unsigned char)hlen;
    memcpy(self->partial_key, p + hlen - 4, 4);
    Py_ssize_t here = avail - hlen;
    unmask_from(p + hlen, (unsigned char *)PyBytes_AS_STRING(message), here, self->partial_key,
                0);
    self->partial = message;
    self->filled = here;
    self->last_large = 0;
    return avail;
}

/*
 * A path was turned off before the frame in `*partial` was whole: hand the core the frame as
 * it was received (`head`, its `hlen` header bytes ending with the mask key; the `filled`
 * payload bytes so far masked again), then the `extra_len` bytes at `extra` (as read; they may
 * lie in the message itself), and forget the frame (`*partial` and `*filled` cleared before
 * the core runs). Shared by the callback/coroutine paths and the ASGI path.
 */
static int
hand_back_cut_frame(PyObject *ws, const unsigned char *head, Py_ssize_t hlen,
                    PyObject **partial, Py_ssize_t *filled, const unsigned char *extra,
                    Py_ssize_t extra_len)
{
    PyObject *message = *partial;
    Py_ssize_t n = *filled;
    PyObject *data = PyBytes_FromStringAndSize(NULL, hlen + n + extra_len);
    if (data == NULL) {
        return -1;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(data);
    memcpy(out, head, hlen);
    shakehands_mask((const unsigned char *)PyBytes_AS_STRING(message), out + hlen, n,
                    head + hlen - 4);
    if (extra_len) {
        memcpy(out + hlen + n, extra, extra_len);
    }
    *partial = NULL;
    *filled = 0;
    Py_DECREF(message);
    PyObject *r = PyObject_CallMethodOneArg(ws, slow_received_name, data);
    Py_DECREF(data);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* hand_back_cut_frame for this path, whose header is rebuilt from what start_partial kept. */
static int
partial_hand_back(FastPathObject *self, PyObject *ws, const unsigned char *extra,
                  Py_ssize_t extra_len)
{
    Py_ssize_t hlen = self->partial_hlen;
    uint64_t length = (uint64_t)PyBytes_GET_SIZE(self->partial);
    unsigned char head[14];
    head[0] = self->partial_b0;
    if (hlen == 6) {
        head[1] = 0x80 | (unsigned char)length;
    }
    else if (hlen == 8) {
        head[1] = 0x80 | 126;
        head[2] = (unsigned char)(length >> 8);
        head[3] = (unsigned char)length;
    }
    else {
        head[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) {
            head[2 + i] = (unsigned char)(length >> (56 - 8 * i));
        }
    }
    memcpy(head + hlen - 4, self->partial_key, 4);
    return hand_back_cut_frame(ws, head, hlen, &self->partial, &self->filled, extra, extra_len);
}

/* The frame in `partial` is whole: deliver its message as run_frames and process() do (one
 * batch: what the listener sends is written after it). */
static int
partial_finish(FastPathObject *self, PyObject *ws)
{
    PyObject *message = self->partial;
    if (message == NULL || self->filled != PyBytes_GET_SIZE(message)) {
        return 0;
    }
    keep_spare(self, message);
    if ((self->partial_b0 & 0x0F) == 0x01) {
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(message),
                                              PyBytes_GET_SIZE(message), "strict");
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                return -1;
            }
            PyErr_Clear();
            /* Not UTF-8: the core fails the connection (1007), with what follows. */
            self->fast = 0;
            self->send_ok = 0;
            return partial_hand_back(self, ws, NULL, 0);
        }
        message = text;
    }
    else {
        Py_INCREF(message);
    }
    Py_CLEAR(self->partial);
    self->filled = 0;
    if (self->listener == NULL) {
        Py_DECREF(message);
        return 0; /* detached meanwhile */
    }
    Py_INCREF(self); /* the listener may drop the connection */
    self->in_batch = 1;
    PyObject *args[3] = {self->listener, ws, message};
    PyObject *r = PyObject_VectorcallMethod(on_message_name, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    self->in_batch = 0;
    Py_DECREF(message);
    PyObject *exc = NULL;
    if (r == NULL) {
        exc = fetch_exception();
    }
    Py_XDECREF(r);
    int failed = flush_out(self) < 0;
    if (!failed && exc != NULL) {
        /* The listener raised: Python decides (ConnectionClosed: stop; else log and 1011). */
        failed = call_ws(ws, "_fast_error", exc) < 0;
    }
    Py_XDECREF(exc);
    Py_DECREF(self);
    return failed ? -1 : 0;
}

/* `n` bytes of the frame in `partial` are at `at`: read into it after `filled` (in place), or
 * elsewhere (data_received: n is at most what the frame still needs). */
static int
partial_received(FastPathObject *self, PyObject *ws, const unsigned char *at, Py_ssize_t n)
{
    PyObject *partial = self->partial;
    if (partial == NULL || n < 0 || n > PyBytes_GET_SIZE(partial) - self->filled) {
        PyErr_SetString(PyExc_ValueError, "more bytes than the buffer holds");
        return -1;
    }
    if (!self->fast) {
        return partial_hand_back(self, ws, at, n);
    }
    unmask_from(at, (unsigned char *)PyBytes_AS_STRING(partial) + self->filled, n,
                self->partial_key, self->filled);
    self->filled += n;
    return partial_finish(self, ws);
}

/*
 * Deliver what is buffered: the `n` bytes just read (into the shared buffer or after `end` in
 * the own one), the `n` bytes of `data` (data_received, with nothing in the own buffer), or
 * the backlog (n == 0). `batch_limit` < 0: the connection's own.
 */
static PyObject *
process(FastPathObject *self, PyObject *ws, Py_ssize_t n, Py_ssize_t batch_limit,
        PyObject *data)
{
    const unsigned char *buf;
    Py_ssize_t pos, end;
    int use_shared = self->reading_shared && n > 0 && data == NULL;
    /* The bytes are not in the own buffer: what is left is copied there. */
    int from_outside = use_shared || data != NULL;
    ReadBufferObject *shared = self->shared;

    if (self->reading_partial && data == NULL && n > 0) {
        /* The read went into the rest of the large frame's message. */
        self->reading_partial = 0;
        self->reading_shared = 0;
        PyObject *partial = self->partial;
        if (partial == NULL) {
            PyErr_SetString(PyExc_ValueError, "more bytes than the buffer holds");
            return NULL;
        }
        unsigned char *at = (unsigned char *)PyBytes_AS_STRING(partial) + self->filled;
        if (partial_received(self, ws, at, n) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    self->reading_partial = 0;
    self->reading_shared = 0;
    if (data != NULL) {
        if (!self->fast) {
            /* The core's turn, and the bytes object is what it takes: no copy. */
            PyObject *r = PyObject_CallMethodOneArg(ws, slow_received_name, data);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
            Py_RETURN_NONE;
        }
        buf = (const unsigned char *)PyBytes_AS_STRING(data);
        pos = 0;
        end = n;
    }
    else if (use_shared) {
        if (n > shared->size) {
            PyErr_SetString(PyExc_ValueError, "more bytes than the buffer holds");
            return NULL;
        }
        buf = shared->buf;
        pos = 0;
        end = n;
    }
    else {
        if (n < 0 || n > self->cap - self->end) {
            PyErr_SetString(PyExc_ValueError, "more bytes than the buffer holds");
            return NULL;
        }
        self->end += n;
        buf = self->buf;
        pos = self->start;
        end = self->end;
    }
    if (!self->fast) {
        /* The core's turn: every byte goes there, in order. */
        if (use_shared) {
            if (to_core(ws, buf, end) < 0) {
                return NULL;
            }
        }
        else {
            Py_ssize_t start = self->start;
            self->start = self->end = 0;
            int failed = to_core(ws, buf + start, end - start);
            release_own_buffer(self);
            if (failed) {
                return NULL;
            }
        }
        Py_RETURN_NONE;
    }

    Py_INCREF(self); /* the listener may drop the connection */
    if (use_shared) {
        shared->busy = 1;
    }
    self->in_batch = 1;
    int status = run_frames(self, ws, buf, &pos, end,
                            batch_limit < 0 ? self->batch_limit : batch_limit);
    self->in_batch = 0;

    PyObject *exc = NULL;
    if (status == RUN_ERROR || status == RUN_DECODE_FAILED) {
        exc = fetch_exception();
    }
    /* Keep what is left: the cut frame, the backlog, or what goes to the core. */
    int failed = 0;
    if (from_outside) {
        Py_ssize_t left = end - pos;
        if (left && status == RUN_MORE && self->need > IN_PLACE) {
            /* A large frame cut by the read: into its message from now on. */
            Py_ssize_t used = start_partial(self, buf + pos, left);
            if (used < 0) {
                failed = 1;
            }
            else if (used > 0) {
                left = 0;
                release_own_buffer(self);
            }
        }
        if (left && !failed) {
            Py_ssize_t want = left > self->need ? left : self->need;
            if (want < MIN_READ && status == RUN_MORE) {
                want = MIN_READ;
            }
            self->start = self->end = 0;
            if (reserve(self, want) < 0) {
                failed = 1;
            }
            else {
                memcpy(self->buf, buf + pos, left);
                self->end = left;
            }
        }
        if (use_shared) {
            shared->busy = 0;
        }
        if (!left && self->buf != NULL && !self->last_large) {
            release_own_buffer(self); /* kept for large messages; this one was small */
        }
    }
    else {
        self->start = pos;
        if (self->start < self->end && status == RUN_MORE && self->need > IN_PLACE) {
            /* A large frame whose header was cut: into its message from now on. */
            Py_ssize_t used = start_partial(self, self->buf + self->start,
                                            self->end - self->start);
            if (used < 0) {
                failed = 1;
            }
            else if (used > 0) {
                release_own_buffer(self);
            }
        }
        if (self->start == self->end) {
            if (self->last_large) {
                /* Large messages come in a row: keep the buffer for the next one (freeing
                 * and allocating a large block per message costs page faults, as glibc
                 * trims the heap and maps fresh pages). It goes with the next small one. */
                self->start = self->end = 0;
            }
            else {
                release_own_buffer(self);
            }
        }
    }
    if (!failed && flush_out(self) < 0) {
        failed = 1;
    }
    if (failed) {
        Py_XDECREF(exc);
        Py_DECREF(self);
        return NULL;
    }
    if (status == RUN_ERROR) {
        /* The listener raised: Python decides (ConnectionClosed: stop; else log and 1011). */
        if (call_ws(ws, "_fast_error", exc) < 0) {
            Py_DECREF(exc);
            Py_DECREF(self);
            return NULL;
        }
        Py_DECREF(exc);
        status = RUN_SLOW;
    }
    if (status == RUN_DECODE_FAILED) {
        /* The core fails the connection; what followed the frame is dropped, as it does. */
        self->fast = 0;
        self->send_ok = 0;
        release_own_buffer(self);
        failed = call_ws(ws, "_fast_decode_failed", exc) < 0;
        Py_DECREF(exc);
    }
    else if (status == RUN_SLOW) {
        /* The rest, from the frame not taken here on, is the core's. */
        self->fast = 0;
        self->send_ok = 0;
        Py_ssize_t start = self->start;
        Py_ssize_t stop = self->end;
        self->start = self->end = 0;
        failed = to_core(ws, self->buf + start, stop - start);
        release_own_buffer(self);
    }
    else if (status == RUN_BACKLOG) {
        self->backlog = 1;
        failed = call_ws(ws, "_fast_backlog", NULL) < 0;
    }
    Py_DECREF(self);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastPath_enable_doc,
"enable(listener, limit, extension=None, message_limit=-1, /)\n"
"--\n"
"\n"
"Parse whole simple frames here and deliver them to ``listener.on_message(ws, message)``;\n"
"build and write frames in ``send``. ``limit``: the largest payload taken here (< 0: none); larger\n"
"frames go to the core. Call only when the core is open and between messages.\n"
"\n"
"``extension``: the one negotiated extension, on RSV1 (permessage-deflate). Whole frames with\n"
"RSV1 are then taken too, up to ``limit`` bytes on the wire, and decoded with\n"
"``extension.decode(payload, True, message_limit)`` (< 0: ``None``); when that raises, or the\n"
"text is not UTF-8, ``ws._fast_decode_failed(exc)`` is called and the rest of the read is\n"
"dropped. ``send`` encodes with ``extension.encode(payload, True)`` unless ``compress`` is false.");

static PyObject *
FastPath_enable(FastPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "enable() takes 2 or 4 arguments");
        return NULL;
    }
    long long limit = PyLong_AsLongLong(args[1]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *extension = NULL, *decode_limit = NULL;
    if (nargs == 4 && args[2] != Py_None) {
        long long message_limit = PyLong_AsLongLong(args[3]);
        if (message_limit == -1 && PyErr_Occurred()) {
            return NULL;
        }
        decode_limit = message_limit < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(message_limit);
        if (decode_limit == NULL) {
            return NULL;
        }
        extension = Py_NewRef(args[2]);
    }
    Py_XSETREF(self->extension, extension);
    Py_XSETREF(self->decode_limit, decode_limit);
    Py_INCREF(args[0]);
    Py_XSETREF(self->listener, args[0]);
    self->limit = limit;
    self->fast = 1;
    self->send_ok = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastPath_disable_doc,
"disable()\n"
"--\n"
"\n"
"Hand every byte to the core from now on, and let it build every frame.");

static PyObject *
FastPath_disable(FastPathObject *self, PyObject *Py_UNUSED(ignored))
{
    self->fast = 0;
    self->send_ok = 0;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastPath_attach_doc,
"attach(transport, fd=-1, /)\n"
"--\n"
"\n"
"Write through ``transport.write``; ``None`` drops it (the transport is gone: call it in\n"
"``connection_lost``, before asyncio closes the socket). ``fd`` (see\n"
"``shakehands.asyncio._fastpath.direct_fd``): the socket of asyncio's plain TCP transport,\n"
"which this then sends on itself while the transport is not closing and its write buffer\n"
"is empty (what is not sent goes to ``transport.write``), and may read (``take_reads``).");

static PyObject *
FastPath_attach(FastPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "attach() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *transport = args[0];
    long fd = -1;
    if (nargs == 2) {
        fd = PyLong_AsLong(args[1]);
        if (fd == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (fd > INT_MAX) {
            PyErr_SetString(PyExc_ValueError, "fd out of range");
            return NULL;
        }
    }
    /* Whatever the transport, reads and sends of the last one are forgotten first. */
    self->direct = 0;
    self->reading = 0;
    self->fd = -1;
    Py_CLEAR(self->owner);
    if (transport == Py_None) {
        Py_CLEAR(self->transport);
        Py_CLEAR(self->listener);
        Py_CLEAR(self->extension);
        Py_CLEAR(self->decode_limit);
        self->fast = 0;
        self->send_ok = 0;
        Py_CLEAR(self->pending);
        self->out_len = 0;
        /* A large frame being read (a peer that left mid-frame): freed now. */
        Py_CLEAR(self->partial);
        self->filled = 0;
        self->reading_partial = 0;
        drop_spares(self);
    }
    else {
        Py_INCREF(transport);
        Py_XSETREF(self->transport, transport);
        if (SHAKEHANDS_DIRECT && fd >= 0) {
            self->direct = 1;
            self->fd = (int)fd;
        }
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastPath_take_reads_doc,
"take_reads(ws, /)\n"
"--\n"
"\n"
"Read the socket given to ``attach`` here, for ``ws`` (the connection): the caller then\n"
"makes this object the transport's ``_read_ready`` (asyncio's event loop calls it when the\n"
"socket is readable). A call does what asyncio's ``_read_ready__get_buffer`` does (with no\n"
"Python frame): ``recv`` into the buffer ``get_buffer`` would give, then what\n"
"``buffer_updated`` does; EOF, errors and failures go to the same transport methods\n"
"(``_read_ready__on_eof``, ``_fatal_error``). ``attach`` ends it.");

static PyObject *
FastPath_take_reads(FastPathObject *self, PyObject *ws)
{
    if (!self->direct || self->transport == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "take_reads() needs a socket (attach(transport, fd))");
        return NULL;
    }
    Py_INCREF(ws);
    Py_XSETREF(self->owner, ws);
    self->reading = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastPath_flush_doc,
"flush()\n"
"--\n"
"\n"
"Write the frames queued by ``send`` during the current batch now (before anything the core\n"
"writes, so that the order holds).");

static PyObject *
FastPath_flush(FastPathObject *self, PyObject *Py_UNUSED(ignored))
{
    if (flush_out(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(FastPath_resume_doc,
"resume(ws, all, /)\n"
"--\n"
"\n"
"Deliver the backlog: ``batch_limit`` more messages, or all of them if ``all``.");

static PyObject *
FastPath_resume(FastPathObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "resume() takes 2 arguments");
        return NULL;
    }
    int all = PyObject_IsTrue(args[1]);
    if (all < 0) {
        return NULL;
    }
    self->backlog = 0;
    self->reading_shared = 0;
    self->reading_partial = 0;
    if (all) {
        /* The connection is lost: sends go to the core, which raises ConnectionClosed. */
        self->send_ok = 0;
    }
    if (self->start == self->end) {
        Py_RETURN_NONE;
    }
    return process(self, args[0], 0, all ? PY_SSIZE_T_MAX : -1, NULL);
}

static PyObject *
FastPath_get_active(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->fast);
}

static PyObject *
FastPath_get_buffered(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->end - self->start);
}

static PyObject *
FastPath_get_queued(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->pending != NULL || self->out_len > 0);
}

static PyObject *
FastPath_get_backlogged(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->backlog);
}

static PyObject *
FastPath_get_fd(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->direct ? self->fd : -1);
}

static PyObject *
FastPath_get_reading(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->reading);
}

static PyObject *
FastPath_get_assembling(FastPathObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->partial == NULL ? 0 : PyBytes_GET_SIZE(self->partial));
}

static PyMemberDef FastPath_members[] = {
    {"gather", T_BOOL, offsetof(FastPathObject, gather), 0,
     "Whether the transport's writelines writes its list in one call, uncopied (uvloop's\n"
     "TCP transport): a large payload then leaves with its header in one writelines."},
    {NULL},
};

static PyGetSetDef FastPath_getset[] = {
    {"assembling", (getter)FastPath_get_assembling, NULL,
     "The payload size of the large frame being read into its message (0: none).", NULL},
    {"fd", (getter)FastPath_get_fd, NULL,
     "The socket sent on directly (attach), or -1.", NULL},
    {"reading", (getter)FastPath_get_reading, NULL,
     "Whether it reads the socket itself (take_reads).", NULL},
    {"active", (getter)FastPath_get_active, NULL, "Whether frames are parsed here.", NULL},
    {"buffered", (getter)FastPath_get_buffered, NULL,
     "Bytes read and not parsed yet (a frame cut by a read, or a backlog).", NULL},
    {"queued", (getter)FastPath_get_queued, NULL,
     "Whether output built here waits to be written (the end of a batch).", NULL},
    {"backlogged", (getter)FastPath_get_backlogged, NULL,
     "Whether messages wait for the next loop iteration (after batch_limit).", NULL},
    {NULL},
};

static PyMethodDef FastPath_methods[] = {
    {"enable", (PyCFunction)(void (*)(void))FastPath_enable, METH_FASTCALL, FastPath_enable_doc},
    {"disable", (PyCFunction)FastPath_disable, METH_NOARGS, FastPath_disable_doc},
    {"attach", (PyCFunction)(void (*)(void))FastPath_attach, METH_FASTCALL, FastPath_attach_doc},
    {"take_reads", (PyCFunction)FastPath_take_reads, METH_O, FastPath_take_reads_doc},
    {"flush", (PyCFunction)FastPath_flush, METH_NOARGS, FastPath_flush_doc},
    {"resume", (PyCFunction)(void (*)(void))FastPath_resume, METH_FASTCALL, FastPath_resume_doc},
    {NULL},
};

PyDoc_STRVAR(FastPath_doc,
"FastPath(read_buffer, batch_limit)\n"
"--\n"
"\n"
"The compiled data path of one callback connection (see the module docstring). Calling it\n"
"reads the socket (see take_reads).");

static PyObject *FastPath_call(PyObject *op, PyObject *args, PyObject *kwds);

static PyTypeObject FastPath_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.FastPath",
    .tp_call = FastPath_call,
    .tp_basicsize = sizeof(FastPathObject),
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = FastPath_doc,
    .tp_traverse = (traverseproc)FastPath_traverse,
    .tp_clear = (inquiry)FastPath_clear,
    .tp_methods = FastPath_methods,
    .tp_members = FastPath_members,
    .tp_getset = FastPath_getset,
    .tp_init = (initproc)FastPath_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------ */
/* CallbackFastPathMixin                                                                       */
/* ------------------------------------------------------------------------------------------ */


static FastPathObject *
fast_of(PyObject *ws)
{
    PyObject *fast = PyObject_GetAttr(ws, fast_slot_name);
    if (fast == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(fast, &FastPath_Type)) { /* or CoroFastPath */
        Py_DECREF(fast);
        PyErr_SetString(PyExc_TypeError, "_fast is not a FastPath");
        return NULL;
    }
    return (FastPathObject *)fast;
}

PyDoc_STRVAR(mixin_get_buffer_doc,
"get_buffer(sizehint, /)\n"
"--\n"
"\n"
"asyncio.BufferedProtocol: where the next read goes (the server's shared buffer, or this\n"
"connection's own after a cut frame).");

/* Where the next read goes: the shared buffer, or the own one after a cut frame. */
static int
read_target(FastPathObject *self, unsigned char **dst, Py_ssize_t *room)
{
    ReadBufferObject *shared = self->shared;
    if (self->partial != NULL) {
        /* Exactly the rest of the large frame's payload, into its message. */
        self->reading_partial = 1;
        self->reading_shared = 0;
        *dst = (unsigned char *)PyBytes_AS_STRING(self->partial) + self->filled;
        *room = PyBytes_GET_SIZE(self->partial) - self->filled;
        return 0;
    }
    self->reading_partial = 0;
    if (self->start == self->end && self->buf == NULL && shared != NULL && !shared->busy) {
        self->reading_shared = 1;
        *dst = shared->buf;
        *room = shared->size;
        return 0;
    }
    self->reading_shared = 0;
    Py_ssize_t want = self->need - (self->end - self->start);
    if (want < MIN_READ) {
        want = MIN_READ;
    }
    if (reserve(self, want) < 0) {
        return -1;
    }
    *dst = self->buf + self->end;
    *room = self->cap - self->end;
    return 0;
}

static PyObject *
mixin_get_buffer(PyObject *ws, PyObject *Py_UNUSED(sizehint))
{
    FastPathObject *self = fast_of(ws);
    if (self == NULL) {
        return NULL;
    }
    unsigned char *dst;
    Py_ssize_t room;
    PyObject *view = NULL;
    if (read_target(self, &dst, &room) == 0) {
        view = PyMemoryView_FromMemory((char *)dst, room, PyBUF_WRITE);
    }
    Py_DECREF(self);
    return view;
}

/*
 * The reader (take_reads): called by asyncio's selector loop in place of the transport's
 * _read_ready, it does what _read_ready__get_buffer does in Python (3.11-3.13 alike): nothing
 * once the connection is lost; recv(2) into the buffer get_buffer() would give; EAGAIN and
 * EINTR: nothing; an error: transport._fatal_error(exc, ...); EOF:
 * transport._read_ready__on_eof(); else what buffer_updated does, and its failure goes to
 * transport._fatal_error too. SystemExit and KeyboardInterrupt propagate, as there.
 */
static PyObject *
reader_failed(PyObject *transport, const char *message)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
        PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return NULL;
    }
    PyObject *exc = fetch_exception();
    if (exc == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_FromString(message);
    if (text == NULL) {
        Py_DECREF(exc);
        return NULL;
    }
    PyObject *args[3] = {transport, exc, text};
    PyObject *r = PyObject_VectorcallMethod(fatal_error_name, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(exc);
    Py_DECREF(text);
    return r;
}

static PyObject *
FastPath_call(PyObject *op, PyObject *args, PyObject *kwds)
{
    FastPathObject *self = (FastPathObject *)op;
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a FastPath is called with no arguments");
        return NULL;
    }
#if SHAKEHANDS_DIRECT
    if (!self->reading || !self->direct || self->transport == NULL || self->owner == NULL) {
        Py_RETURN_NONE; /* detached: the transport is gone */
    }
    Py_INCREF(self); /* the listener may drop the connection */
    PyObject *transport = Py_NewRef(self->transport);
    PyObject *ws = Py_NewRef(self->owner);
    PyObject *result = NULL;
    unsigned char *dst;
    Py_ssize_t room;
    ssize_t n;

    PyObject *lost = PyObject_GetAttr(transport, conn_lost_name);
    int is_lost = lost == NULL ? -1 : PyObject_IsTrue(lost);
    Py_XDECREF(lost);
    if (is_lost != 0) {
        result = is_lost < 0 ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    if (read_target(self, &dst, &room) < 0) {
        result = reader_failed(transport, "Fatal error: protocol.get_buffer() call failed.");
        goto done;
    }
    for (;;) {
        n = recv(self->fd, dst, (size_t)room, MSG_DONTWAIT);
        if (n >= 0 || errno != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) { /* as sock.recv_into when a signal handler raises */
            self->reading_shared = 0;
            self->reading_partial = 0;
            result = reader_failed(transport, "Fatal read error on socket transport");
            goto done;
        }
    }
    if (n < 0) {
        self->reading_shared = 0;
        self->reading_partial = 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            result = Py_NewRef(Py_None);
        }
        else {
            PyErr_SetFromErrno(PyExc_OSError);
            result = reader_failed(transport, "Fatal read error on socket transport");
        }
        goto done;
    }
    if (n == 0) {
        self->reading_shared = 0;
        self->reading_partial = 0;
        PyObject *eof_args[1] = {transport};
        result = PyObject_VectorcallMethod(on_eof_name, eof_args,
                                           1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        goto done;
    }
    result = process(self, ws, (Py_ssize_t)n, -1, NULL);
    if (result == NULL) {
        result = reader_failed(transport, "Fatal error: protocol.buffer_updated() call failed.");
    }
done:
    Py_DECREF(ws);
    Py_DECREF(transport);
    Py_DECREF(self);
    return result;
#else
    Py_RETURN_NONE;
#endif
}

PyDoc_STRVAR(mixin_buffer_updated_doc,
"buffer_updated(nbytes, /)\n"
"--\n"
"\n"
"asyncio.BufferedProtocol: ``nbytes`` were read; deliver every whole message.");

static PyObject *
mixin_buffer_updated(PyObject *ws, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    FastPathObject *self = fast_of(ws);
    if (self == NULL) {
        return NULL;
    }
    PyObject *r = process(self, ws, n, -1, NULL);
    Py_DECREF(self);
    return r;
}

PyDoc_STRVAR(mixin_data_received_doc,
"data_received(data, /)\n"
"--\n"
"\n"
"asyncio.Protocol: ``data`` was read (uvloop, TLS and other transports that do not take a\n"
"BufferedProtocol call this); deliver every whole message, parsed where it is.");

/* data_received while a large frame is read into its message: its next bytes are unmasked
 * from where they are; what follows the frame is parsed as any read is. */
static PyObject *
partial_data_received(FastPathObject *self, PyObject *ws, PyObject *data)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (!self->fast) {
        if (partial_hand_back(self, ws, p, n) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t k = PyBytes_GET_SIZE(self->partial) - self->filled;
    if (k > n) {
        k = n;
    }
    Py_INCREF(self);
    int failed = partial_received(self, ws, p, k) < 0;
    Py_ssize_t rest = n - k;
    if (!failed && rest > 0) {
        if (self->partial != NULL) {
            PyErr_SetString(PyExc_RuntimeError, "frame in progress"); /* never: k was all */
            failed = 1;
        }
        else if (!self->fast || self->transport == NULL) {
            failed = self->transport != NULL && to_core(ws, p + k, rest) < 0;
        }
        else {
            /* The next large frame goes into its message at once; anything else is parsed
             * from the own buffer (empty while a frame was being read into its message). */
            Py_ssize_t used = start_partial(self, p + k, rest);
            if (used < 0) {
                failed = 1;
            }
            else if (used == 0) {
                if (reserve(self, rest) < 0) {
                    failed = 1;
                }
                else {
                    memcpy(self->buf + self->end, p + k, rest);
                    PyObject *r = process(self, ws, rest, -1, NULL);
                    failed = r == NULL;
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

static PyObject *
mixin_data_received(PyObject *ws, PyObject *data)
{
    if (!PyBytes_Check(data)) {
        /* Anything else (a bytearray, a memoryview) is copied once. */
        PyObject *copy = PyBytes_FromObject(data);
        if (copy == NULL) {
            return NULL;
        }
        PyObject *r = mixin_data_received(ws, copy);
        Py_DECREF(copy);
        return r;
    }
    FastPathObject *self = fast_of(ws);
    if (self == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *r;
    self->reading_shared = 0;
    self->reading_partial = 0;
    if (self->partial != NULL) {
        r = partial_data_received(self, ws, data);
    }
    else if (self->start == self->end) {
        r = process(self, ws, n, -1, data);
    }
    else if (reserve(self, n) < 0) {
        r = NULL;
    }
    else {
        /* After a cut frame: appended to it. */
        memcpy(self->buf + self->end, PyBytes_AS_STRING(data), n);
        r = process(self, ws, n, -1, NULL);
    }
    Py_DECREF(self);
    return r;
}

/* Build an unmasked frame: header, then payload, in one bytes object. */
static PyObject *
build_frame(unsigned char first, const char *payload, Py_ssize_t len, Py_ssize_t *hlen_p)
{
    unsigned char header[SHAKEHANDS_MAX_HEADER];
    Py_ssize_t hlen = shakehands_frame_header(first, (uint64_t)len, header);

    *hlen_p = hlen;
    PyObject *frame = PyBytes_FromStringAndSize(NULL, hlen + (payload ? len : 0));
    if (frame != NULL) {
        memcpy(PyBytes_AS_STRING(frame), header, hlen);
        if (payload != NULL) {
            memcpy(PyBytes_AS_STRING(frame) + hlen, payload, len);
        }
    }
    return frame;
}

/*
 * Write the queued output, then the frame (header, payload), in one send(2) with no frame
 * object built (direct_ready() said yes). The payload's bytes are `data`; `message` owns them
 * if it is bytes (what is not sent is handed on as a view of it), else they are copied.
 */
static int
send_frame_direct(FastPathObject *self, unsigned char first, PyObject *message,
                  const char *data, Py_ssize_t len)
{
    unsigned char header[SHAKEHANDS_MAX_HEADER];
    Py_ssize_t hlen = shakehands_frame_header(first, (uint64_t)len, header);
    Part parts[MAX_PARTS];
    int count = 0;
    PyObject *pending = self->pending;
    self->pending = NULL;
    if (pending != NULL) {
        parts[count++] = (Part){PyBytes_AS_STRING(pending), PyBytes_GET_SIZE(pending), pending};
    }
    else if (self->out_len > 0) {
        parts[count++] = (Part){(const char *)self->out, self->out_len, NULL};
        self->out_len = 0;
    }
    parts[count++] = (Part){(const char *)header, hlen, NULL};
    parts[count++] = (Part){data, len, PyBytes_CheckExact(message) ? message : NULL};
    int failed = send_parts(self, parts, count);
    Py_XDECREF(pending);
    trim_out(self);
    return failed;
}

/*
 * transport.writelines((queued output, header, payload)) for a large bytes payload, on a
 * transport whose writelines writes its list in one call with no join (`gather`: uvloop's, a
 * writev of the three); what it does not take it keeps as a view of the payload.
 */
static int
send_gathered(FastPathObject *self, unsigned char first, PyObject *message, Py_ssize_t len)
{
    Py_ssize_t hlen;
    PyObject *header = build_frame(first, NULL, len, &hlen);
    if (header == NULL) {
        return -1;
    }
    PyObject *queued = NULL;
    if (self->pending != NULL) {
        queued = self->pending;
        self->pending = NULL;
    }
    else if (self->out_len > 0) {
        queued = PyBytes_FromStringAndSize((const char *)self->out, self->out_len);
        self->out_len = 0;
        trim_out(self);
        if (queued == NULL) {
            Py_DECREF(header);
            return -1;
        }
    }
    PyObject *parts = PyTuple_New(queued != NULL ? 3 : 2);
    if (parts == NULL) {
        Py_XDECREF(queued);
        Py_DECREF(header);
        return -1;
    }
    Py_ssize_t i = 0;
    if (queued != NULL) {
        PyTuple_SET_ITEM(parts, i++, queued);
    }
    PyTuple_SET_ITEM(parts, i++, header);
    PyTuple_SET_ITEM(parts, i, Py_NewRef(message));
    PyObject *args[2] = {self->transport, parts};
    PyObject *r = PyObject_VectorcallMethod(writelines_name, args,
                                            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(parts);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
send_frame(FastPathObject *self, unsigned char first, PyObject *message, const char *data,
           Py_ssize_t len)
{
    Py_ssize_t hlen;
    int large = len >= SEPARATE_PAYLOAD && PyBytes_CheckExact(message);
    if (large || !self->in_batch) {
        /* Written now: in one send(2), uncopied, when the transport allows it. */
        int ready = direct_ready(self);
        if (ready < 0) {
            return -1;
        }
        if (ready) {
            return send_frame_direct(self, first, message, data, len);
        }
    }
    if (large && self->gather && self->transport != NULL) {
        /* Immutable and large: with the header (and what was queued) in one writelines. */
        return send_gathered(self, first, message, len);
    }
    if (large) {
        /* Immutable and large: the header, then the payload itself, not copied. */
        PyObject *header = build_frame(first, NULL, len, &hlen);
        if (header == NULL) {
            return -1;
        }
        int failed = queue_frame(self, header) < 0 || flush_out(self) < 0;
        Py_DECREF(header);
        if (failed) {
            return -1;
        }
        PyObject *view = PyMemoryView_FromObject(message);
        if (view == NULL) {
            return -1;
        }
        failed = write_object(self, view);
        Py_DECREF(view);
        return failed;
    }
    PyObject *frame = build_frame(first, data, len, &hlen);
    if (frame == NULL) {
        return -1;
    }
    int failed;
    if (self->in_batch) {
        failed = queue_frame(self, frame);
    }
    else {
        failed = flush_out(self) < 0 || write_object(self, frame) < 0;
    }
    Py_DECREF(frame);
    return failed ? -1 : 0;
}

/*
 * send() with the extension (permessage-deflate): one call to extension.encode(payload, True),
 * then a frame with RSV1, as the core's send builds it. Returns whether it was handled here
 * (else the core's send does it); *failed: an error is set.
 */
static int
send_encoded(FastPathObject *self, PyObject *message, int *failed)
{
    unsigned char first;
    PyObject *payload;
    if (PyUnicode_CheckExact(message)) {
        Py_ssize_t len;
        const char *utf8 = PyUnicode_AsUTF8AndSize(message, &len);
        if (utf8 == NULL) {
            PyErr_Clear(); /* lone surrogates: the core raises the right error */
            return 0;
        }
        first = 0xC1;
        /* A view of the UTF-8 the str keeps: encode reads it, no copy. */
        payload = PyMemoryView_FromMemory((char *)utf8, len, PyBUF_READ);
    }
    else if (PyBytes_CheckExact(message) ||
             (PyObject_CheckBuffer(message) && !PyUnicode_Check(message))) {
        first = 0xC2;
        payload = Py_NewRef(message);
    }
    else {
        return 0;
    }
    if (payload == NULL) {
        *failed = 1;
        return 1;
    }
    PyObject *args[3] = {self->extension, payload, Py_True};
    PyObject *encoded = PyObject_VectorcallMethod(encode_name, args,
                                                  3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (encoded != NULL && Py_REFCNT(payload) > 1 && PyMemoryView_Check(payload)) {
        /* Kept by encode: released, so that it never outlives the str it reads. */
        PyObject *r = PyObject_CallMethod(payload, "release", NULL);
        if (r == NULL) {
            PyErr_Clear(); /* exported further: it holds the buffer itself */
        }
        Py_XDECREF(r);
    }
    Py_DECREF(payload);
    if (encoded == NULL) {
        *failed = 1;
        return 1;
    }
    if (!PyBytes_Check(encoded)) {
        PyErr_Format(PyExc_TypeError, "encode() returned %.100s, not bytes",
                     Py_TYPE(encoded)->tp_name);
        Py_DECREF(encoded);
        *failed = 1;
        return 1;
    }
    *failed = send_frame(self, first, encoded, PyBytes_AS_STRING(encoded),
                         PyBytes_GET_SIZE(encoded)) < 0;
    Py_DECREF(encoded);
    return 1;
}

PyDoc_STRVAR(mixin_send_doc,
"send(message, *, compress=True)\n"
"--\n"
"\n"
"Send a message (text for ``str``, binary otherwise); during a batch it leaves with the\n"
"batch. The frame is built here when the connection is open (compressed with one call to\n"
"the extension's ``encode`` when one is on and ``compress`` is true); otherwise (and for\n"
"any error) the core's send does it.");

static PyObject *
mixin_send(PyObject *ws, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    FastPathObject *self = fast_of(ws);
    if (self == NULL) {
        return NULL;
    }
    int handled = 0, failed = 0;
    if (self->send_ok && nargs == 1 &&
        (kwnames == NULL ||
         (PyTuple_GET_SIZE(kwnames) == 1 &&
          PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), compress_name) == 0))) {
        PyObject *message = args[0];
        int compress = self->extension != NULL;
        if (compress && kwnames != NULL) {
            compress = PyObject_IsTrue(args[1]);
            if (compress < 0) {
                Py_DECREF(self);
                return NULL;
            }
        }
        if (compress) {
            handled = send_encoded(self, message, &failed);
        }
        else if (PyBytes_CheckExact(message)) {
            handled = 1;
            failed = send_frame(self, 0x82, message, PyBytes_AS_STRING(message),
                                PyBytes_GET_SIZE(message));
        }
        else if (PyUnicode_CheckExact(message)) {
            Py_ssize_t len;
            const char *utf8 = PyUnicode_AsUTF8AndSize(message, &len);
            if (utf8 != NULL) {
                handled = 1;
                failed = send_frame(self, 0x81, message, utf8, len);
            }
            else {
                PyErr_Clear(); /* lone surrogates: the core raises the right error */
            }
        }
        else if (PyObject_CheckBuffer(message) && !PyUnicode_Check(message)) {
            Py_buffer view;
            if (PyObject_GetBuffer(message, &view, PyBUF_SIMPLE) == 0) {
                handled = 1;
                failed = send_frame(self, 0x82, message, view.buf, view.len);
                PyBuffer_Release(&view);
            }
            else {
                PyErr_Clear();
            }
        }
    }
    Py_DECREF(self);
    if (handled) {
        if (failed) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    /* The core's way: closed, extensions, odd types and their errors. */
    PyObject *slow = PyObject_GetAttr(ws, send_slow_name);
    if (slow == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(slow, args, nargsf, kwnames);
    Py_DECREF(slow);
    return r;
}

static PyMethodDef mixin_methods[] = {
    {"get_buffer", (PyCFunction)mixin_get_buffer, METH_O, mixin_get_buffer_doc},
    {"buffer_updated", (PyCFunction)mixin_buffer_updated, METH_O, mixin_buffer_updated_doc},
    {"data_received", (PyCFunction)mixin_data_received, METH_O, mixin_data_received_doc},
    {"send", (PyCFunction)(void (*)(void))mixin_send, METH_FASTCALL | METH_KEYWORDS,
     mixin_send_doc},
    {NULL},
};

PyDoc_STRVAR(mixin_doc,
"The C methods of a callback connection on the compiled path: get_buffer, buffer_updated,\n"
"data_received and send. No instance layout of its own; its state is the FastPath in the\n"
"``_fast`` slot of the class it is mixed into, which also defines ``_slow_received(data)``,\n"
"``_fast_error(exc)``, ``_fast_backlog()`` and ``_send_slow(message, *, compress=True)``.");

static PyTypeObject Mixin_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.CallbackFastPathMixin",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = mixin_doc,
    .tp_methods = mixin_methods,
    .tp_new = PyType_GenericNew,
};

/* The coroutine API's types (CoroFastPath, CoroutineFastPathMixin): a file of their own. */
#include "_fastcoro.h"

/* The uvicorn front end's types (AsgiFastPath, UvicornFastPathMixin): a file of their own. */
#include "_fastasgi.h"

/* ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(module_doc,
"The compiled data path of the callback API (optional; see shakehands.asyncio._fastpath).\n"
"\n"
"Use it through shakehands.asyncio.serve_callbacks: it picks this module when the C\n"
"speedups are in use, pure Python otherwise (SHAKEHANDS_NO_SPEEDUPS=1).");

/* ------------------------------------------------------------------------------------------ */
/* fan_out: the writes of a broadcast                                                          */
/* ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(fan_out_doc,
"fan_out(data, connections, direct, /) -> (int, list)\n"
"--\n"
"\n"
"For each connection of the iterable ``connections``: if ``direct(connection)`` is true,\n"
"``connection.transport.write(data)``; else the connection is kept for the caller. Returns\n"
"how many were written to, and the connections kept, in order. ``direct`` (Python, shakehands.asyncio.broadcast) is the one\n"
"place that decides; this loop only spares the Python frames of the writes.");

static PyObject *
fan_out(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "fan_out() takes exactly 3 positional arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *data = args[0], *direct = args[2];
    PyObject *iterator = PyObject_GetIter(args[1]);
    if (iterator == NULL) {
        return NULL;
    }
    PyObject *rest = PyList_New(0);
    if (rest == NULL) {
        Py_DECREF(iterator);
        return NULL;
    }
    PyObject *connection;
    Py_ssize_t written = 0;
    while ((connection = PyIter_Next(iterator)) != NULL) {
        PyObject *answer = PyObject_CallOneArg(direct, connection);
        int yes = answer == NULL ? -1 : PyObject_IsTrue(answer);
        Py_XDECREF(answer);
        int failed = yes < 0;
        if (yes > 0) {
            PyObject *transport = PyObject_GetAttr(connection, transport_name);
            if (transport == NULL) {
                failed = 1;
            }
            else {
                PyObject *wargs[2] = {transport, data};
                PyObject *r = PyObject_VectorcallMethod(
                    write_name, wargs, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                failed = r == NULL;
                written += !failed;
                Py_XDECREF(r);
                Py_DECREF(transport);
            }
        }
        else if (yes == 0) {
            failed = PyList_Append(rest, connection) < 0;
        }
        Py_DECREF(connection);
        if (failed) {
            Py_DECREF(iterator);
            Py_DECREF(rest);
            return NULL;
        }
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred()) {
        Py_DECREF(rest);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(nN)", written, rest);
    return result;
}

static PyMethodDef module_methods[] = {
    {"fan_out", (PyCFunction)(void (*)(void))fan_out, METH_FASTCALL, fan_out_doc},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    fast_slot_name = PyUnicode_InternFromString("_fast");
    send_slow_name = PyUnicode_InternFromString("_send_slow");
    compress_name = PyUnicode_InternFromString("compress");
    slow_received_name = PyUnicode_InternFromString("_slow_received");
    on_message_name = PyUnicode_InternFromString("on_message");
    write_name = PyUnicode_InternFromString("write");
    transport_name = PyUnicode_InternFromString("transport");
    decode_name = PyUnicode_InternFromString("decode");
    encode_name = PyUnicode_InternFromString("encode");
    is_closing_name = PyUnicode_InternFromString("is_closing");
    write_buffer_size_name = PyUnicode_InternFromString("get_write_buffer_size");
    conn_lost_name = PyUnicode_InternFromString("_conn_lost");
    fatal_error_name = PyUnicode_InternFromString("_fatal_error");
    on_eof_name = PyUnicode_InternFromString("_read_ready__on_eof");
    writelines_name = PyUnicode_InternFromString("writelines");
    if (is_closing_name == NULL || write_buffer_size_name == NULL || conn_lost_name == NULL ||
        fatal_error_name == NULL || on_eof_name == NULL || writelines_name == NULL) {
        return -1;
    }
    if (decode_name == NULL || encode_name == NULL) {
        return -1;
    }
    if (transport_name == NULL || fast_slot_name == NULL || send_slow_name == NULL || compress_name == NULL ||
        slow_received_name == NULL || on_message_name == NULL || write_name == NULL) {
        return -1;
    }
    if (PyType_Ready(&ReadBuffer_Type) < 0 || PyType_Ready(&FastPath_Type) < 0 ||
        PyType_Ready(&Mixin_Type) < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "ReadBuffer", (PyObject *)&ReadBuffer_Type) < 0 ||
        PyModule_AddObjectRef(module, "FastPath", (PyObject *)&FastPath_Type) < 0 ||
        PyModule_AddObjectRef(module, "CallbackFastPathMixin", (PyObject *)&Mixin_Type) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "DIRECT", SHAKEHANDS_DIRECT) < 0) {
        return -1;
    }
    if (fastcoro_exec(module) < 0) {
        return -1;
    }
    if (fastasgi_exec(module) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* Static types and interned names shared by the whole process. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shakehands._fastpath",
    .m_doc = module_doc,
    .m_size = 0,
    .m_slots = module_slots,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModuleDef_Init(&fastpath_module);
}
