/*
 * The coroutine API on the compiled data path (included by _fastpath.c; see
 * shakehands.asyncio._fastcoro for the theory of operation).
 *
 * It reuses FastPath's receiving (get_buffer, buffer_updated, data_received and process():
 * whole simple frames parsed here, everything else handed to the core) with a listener that is
 * the connection's inbox (its on_message(ws, message) wakes the waiting recv() or queues the
 * message), and adds:
 *
 * - CoroFastPath: a FastPath subtype that also holds what the coroutine send needs: the loop's
 *   call_soon, the write limit, the bytes queued since the last write, whether a flush is
 *   scheduled, and whether a read just handed a message to recv(). The answer to a message
 *   handed to recv() is written at once when no other message waits (no flush to schedule);
 *   other frames sent during a loop step are queued and written together by one flush
 *   scheduled with call_soon (as the Python path's _deferred_flush does), or at once past the
 *   write limit.
 * - CoroutineFastPathMixin: get_buffer, buffer_updated and data_received (FastPath's) and a
 *   send() that returns an awaitable: the connection's _drain() coroutine while the write
 *   buffer is above its high-water mark, else a finished coroutine-like object (Done), so that
 *   `await ws.send(m)` costs no Python frame.
 */

/* ------------------------------------------------------------------------------------------ */
/* Done: a coroutine that has already returned None                                            */
/* ------------------------------------------------------------------------------------------ */

/* It has __await__, send, throw and close, so collections.abc.Coroutine (and asyncio's
 * iscoroutine, create_task, ensure_future, wait_for) accept it. Stateless: one shared object. */

static PyObject *
done_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
done_iternext(PyObject *Py_UNUSED(self))
{
    return NULL; /* StopIteration, value None */
}

static PyObject *
done_send(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(value))
{
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *
done_throw(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    PyObject *typ = args[0];
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, nargs > 1 ? args[1] : Py_None);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving "
                                         "from BaseException");
    }
    return NULL;
}

static PyObject *
done_close(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_NONE;
}

static PyMethodDef Done_methods[] = {
    {"send", (PyCFunction)done_send, METH_O, "Raise StopIteration: it has returned."},
    {"throw", (PyCFunction)(void (*)(void))done_throw, METH_FASTCALL,
     "Raise the exception given."},
    {"close", (PyCFunction)done_close, METH_NOARGS, "Nothing to do."},
    {NULL},
};

static PyAsyncMethods Done_as_async = {
    .am_await = (unaryfunc)done_await,
};

static PyTypeObject Done_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.Done",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What the compiled coroutine send returns: a coroutine that has returned None.",
    .tp_as_async = &Done_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)done_iternext,
    .tp_methods = Done_methods,
};

static PyObject *done_singleton;

/* ------------------------------------------------------------------------------------------ */
/* CoroFastPath                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Payloads at least this large are written apart from their header, uncopied; smaller ones
 * are copied behind it, for one write (a 64 KiB copy costs less than a second send()). */
#define CORO_SEPARATE_PAYLOAD (256 * 1024)

typedef struct {
    FastPathObject base;
    PyObject *call_soon;   /* loop.call_soon */
    Py_ssize_t write_limit;
    Py_ssize_t unflushed;  /* bytes queued since the last write */
    int flush_scheduled;
    char handed;           /* a read handed a message to a waiting recv(): set by the inbox */
} CoroFastPathObject;

static PyTypeObject CoroFastPath_Type;
static PyObject *coro_flush_func;   /* the module's _coro_flush(fast) */
static PyObject *messages_name;       /* "messages" */
static PyObject *writing_paused_name; /* "_writing_paused" */
static PyObject *drain_name;          /* "_drain" */

static int
CoroFastPath_init(CoroFastPathObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *shared, *call_soon;
    Py_ssize_t write_limit;
    static char *kwlist[] = {"read_buffer", "write_limit", "call_soon", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!nO:CoroFastPath", kwlist, &ReadBuffer_Type,
                                     &shared, &write_limit, &call_soon)) {
        return -1;
    }
    if (write_limit < 1) {
        PyErr_SetString(PyExc_ValueError, "write_limit must be positive");
        return -1;
    }
    Py_INCREF(shared);
    Py_XSETREF(self->base.shared, (ReadBufferObject *)shared);
    /* Every message of a read goes to the inbox, as on the Python path (max_queue pauses
     * reading; the inbox's burst spreads a backlog over loop iterations). */
    self->base.batch_limit = PY_SSIZE_T_MAX;
    self->base.limit = -1;
    Py_INCREF(call_soon);
    Py_XSETREF(self->call_soon, call_soon);
    self->write_limit = write_limit;
    return 0;
}

static int
CoroFastPath_traverse(CoroFastPathObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->call_soon);
    return FastPath_traverse(&self->base, visit, arg);
}

static int
CoroFastPath_clear(CoroFastPathObject *self)
{
    Py_CLEAR(self->call_soon);
    return FastPath_clear(&self->base);
}

static void
CoroFastPath_dealloc(CoroFastPathObject *self)
{
    PyObject_GC_UnTrack(self);
    CoroFastPath_clear(self);
    PyMem_Free(self->base.buf);
    PyMem_Free(self->base.out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Write what send() queued at the end of this loop step (once per step). */
static int
coro_schedule(CoroFastPathObject *self)
{
    if (self->flush_scheduled || self->call_soon == NULL) {
        return 0;
    }
    PyObject *args[2] = {coro_flush_func, (PyObject *)self};
    PyObject *handle = PyObject_Vectorcall(self->call_soon, args, 2, NULL);
    if (handle == NULL) {
        return -1;
    }
    Py_DECREF(handle);
    self->flush_scheduled = 1;
    return 0;
}

static PyObject *
coro_flush(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &CoroFastPath_Type)) {
        PyErr_SetString(PyExc_TypeError, "_coro_flush() takes a CoroFastPath");
        return NULL;
    }
    CoroFastPathObject *self = (CoroFastPathObject *)arg;
    self->flush_scheduled = 0;
    self->unflushed = 0;
    if (flush_out(&self->base) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef coro_flush_def = {
    "_coro_flush", (PyCFunction)coro_flush, METH_O,
    "The flush a CoroFastPath schedules: write what send() queued."};

static PyMemberDef CoroFastPath_members[] = {
    {"handed", T_BOOL, offsetof(CoroFastPathObject, handed), 0,
     "A read handed a message to a waiting recv() (set by the inbox, cleared by send): the\n"
     "next send answers it, and writes at once."},
    {NULL},
};

PyDoc_STRVAR(CoroFastPath_doc,
"CoroFastPath(read_buffer, write_limit, call_soon)\n"
"--\n"
"\n"
"The compiled data path of one coroutine connection: a FastPath whose listener is the\n"
"connection's inbox. The answer to a message handed to a waiting recv() is written at once\n"
"when no other message waits; other sends are written once per loop step (``call_soon``),\n"
"or at once past ``write_limit`` bytes.");

static PyTypeObject CoroFastPath_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.CoroFastPath",
    .tp_basicsize = sizeof(CoroFastPathObject),
    .tp_dealloc = (destructor)CoroFastPath_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = CoroFastPath_doc,
    .tp_traverse = (traverseproc)CoroFastPath_traverse,
    .tp_clear = (inquiry)CoroFastPath_clear,
    .tp_members = CoroFastPath_members,
    .tp_base = &FastPath_Type,
    .tp_init = (initproc)CoroFastPath_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------ */
/* CoroutineFastPathMixin                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Whether the inbox holds messages the application has not read (more answers may follow in
 * this loop step). */
static int
coro_more_to_answer(CoroFastPathObject *self)
{
    PyObject *inbox = self->base.listener;
    if (inbox == NULL) {
        return 0;
    }
    PyObject *messages = PyObject_GetAttr(inbox, messages_name);
    if (messages == NULL) {
        return -1;
    }
    int more = PyObject_IsTrue(messages);
    Py_DECREF(messages);
    return more;
}

/*
 * Send one frame. When it answers a message a read handed to recv() and no other message
 * waits in the inbox (a request-response exchange, or the last answer to a burst read at
 * once), it is written now, with what was queued before it: no flush to schedule. Otherwise
 * (more messages to answer, or sends not answering a read) it is queued, and the frames of
 * the loop step leave together in one write (call_soon), or at once past write_limit.
 * Payloads of CORO_SEPARATE_PAYLOAD or more are written now, apart from their header.
 */
static int
coro_send_frame(CoroFastPathObject *self, unsigned char first, PyObject *message,
                const char *data, Py_ssize_t len)
{
    FastPathObject *base = &self->base;
    int handed = self->handed;
    self->handed = 0;
    if (len >= CORO_SEPARATE_PAYLOAD && PyBytes_CheckExact(message)) {
        /* Written now, after what is queued: the header, then the payload, uncopied. */
        self->unflushed = 0;
        return send_frame(base, first, message, data, len);
    }
    Py_ssize_t hlen;
    PyObject *frame = build_frame(first, data, len, &hlen);
    if (frame == NULL) {
        return -1;
    }
    if (len >= SEPARATE_PAYLOAD) {
        /* Large: not copied again behind queued frames; they leave first. */
        self->unflushed = 0;
        int failed = flush_out(base) < 0 || write_object(base, frame) < 0;
        Py_DECREF(frame);
        return failed ? -1 : 0;
    }
    int failed = queue_frame(base, frame);
    Py_DECREF(frame);
    if (failed) {
        return -1;
    }
    self->unflushed += len;
    if (self->unflushed >= self->write_limit) {
        self->unflushed = 0;
        return flush_out(base);
    }
    if (handed) {
        int more = coro_more_to_answer(self);
        if (more < 0) {
            return -1;
        }
        if (!more) {
            self->unflushed = 0;
            return flush_out(base);
        }
        self->handed = 1; /* the last answer of the burst writes them all */
    }
    return coro_schedule(self);
}

PyDoc_STRVAR(coro_send_doc,
"send(message, *, compress=True)\n"
"--\n"
"\n"
"Send a message (text for ``str``, binary otherwise) and return an awaitable that waits while\n"
"the write buffer is above its high-water mark. The frame is built here when the connection\n"
"is open with no extension and no fragmented message being sent; otherwise (and for any\n"
"error) the core's send does it.");

static PyObject *
coro_send(PyObject *ws, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    FastPathObject *fast = fast_of(ws);
    if (fast == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck((PyObject *)fast, &CoroFastPath_Type)) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_TypeError, "_fast is not a CoroFastPath");
        return NULL;
    }
    CoroFastPathObject *self = (CoroFastPathObject *)fast;
    int handled = 0, failed = 0;
    if (fast->send_ok && nargs == 1 &&
        (kwnames == NULL ||
         (PyTuple_GET_SIZE(kwnames) == 1 &&
          PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), compress_name) == 0))) {
        /* No extension is negotiated when send_ok: compress changes nothing. */
        PyObject *message = args[0];
        if (PyBytes_CheckExact(message)) {
            handled = 1;
            failed = coro_send_frame(self, 0x82, message, PyBytes_AS_STRING(message),
                                     PyBytes_GET_SIZE(message));
        }
        else if (PyUnicode_CheckExact(message)) {
            Py_ssize_t len;
            const char *utf8 = PyUnicode_AsUTF8AndSize(message, &len);
            if (utf8 != NULL) {
                handled = 1;
                failed = coro_send_frame(self, 0x81, message, utf8, len);
            }
            else {
                PyErr_Clear(); /* lone surrogates: the core raises the right error */
            }
        }
        else if ((PyByteArray_Check(message) || PyMemoryView_Check(message) ||
                  PyBytes_Check(message))) {
            Py_buffer view;
            if (PyObject_GetBuffer(message, &view, PyBUF_SIMPLE) == 0) {
                handled = 1;
                failed = coro_send_frame(self, 0x82, message, view.buf, view.len);
                PyBuffer_Release(&view);
            }
            else {
                PyErr_Clear(); /* e.g. a non-contiguous view: the core's way */
            }
        }
    }
    Py_DECREF(fast);
    if (!handled) {
        /* The core's way (a coroutine): closed, extensions, fragments, odd types, errors. */
        PyObject *slow = PyObject_GetAttr(ws, send_slow_name);
        if (slow == NULL) {
            return NULL;
        }
        PyObject *r = PyObject_Vectorcall(slow, args, nargsf, kwnames);
        Py_DECREF(slow);
        return r;
    }
    if (failed) {
        return NULL;
    }
    PyObject *paused = PyObject_GetAttr(ws, writing_paused_name);
    if (paused == NULL) {
        return NULL;
    }
    int wait = PyObject_IsTrue(paused);
    Py_DECREF(paused);
    if (wait < 0) {
        return NULL;
    }
    if (wait) {
        return PyObject_CallMethodNoArgs(ws, drain_name);
    }
    return Py_NewRef(done_singleton);
}

static PyMethodDef coro_mixin_methods[] = {
    {"get_buffer", (PyCFunction)mixin_get_buffer, METH_O, mixin_get_buffer_doc},
    {"buffer_updated", (PyCFunction)mixin_buffer_updated, METH_O, mixin_buffer_updated_doc},
    {"data_received", (PyCFunction)mixin_data_received, METH_O, mixin_data_received_doc},
    {"send", (PyCFunction)(void (*)(void))coro_send, METH_FASTCALL | METH_KEYWORDS,
     coro_send_doc},
    {NULL},
};

PyDoc_STRVAR(coro_mixin_doc,
"The C methods of a coroutine connection on the compiled path: get_buffer, buffer_updated,\n"
"data_received and send. No instance layout of its own; its state is the CoroFastPath in the\n"
"``_fast`` slot of the class it is mixed into, which also defines ``_slow_received(data)``,\n"
"``_fast_error(exc)``, ``_drain()`` and ``_send_slow(message, *, compress=True)``.");

static PyTypeObject CoroMixin_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.CoroutineFastPathMixin",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = coro_mixin_doc,
    .tp_methods = coro_mixin_methods,
    .tp_new = PyType_GenericNew,
};

/* Called by module_exec. */
static int
fastcoro_exec(PyObject *module)
{
    writing_paused_name = PyUnicode_InternFromString("_writing_paused");
    drain_name = PyUnicode_InternFromString("_drain");
    messages_name = PyUnicode_InternFromString("messages");
    if (writing_paused_name == NULL || drain_name == NULL || messages_name == NULL) {
        return -1;
    }
    if (PyType_Ready(&Done_Type) < 0 || PyType_Ready(&CoroFastPath_Type) < 0 ||
        PyType_Ready(&CoroMixin_Type) < 0) {
        return -1;
    }
    if (done_singleton == NULL) {
        done_singleton = PyType_GenericAlloc(&Done_Type, 0);
        if (done_singleton == NULL) {
            return -1;
        }
    }
    if (coro_flush_func == NULL) {
        coro_flush_func = PyCFunction_New(&coro_flush_def, NULL);
        if (coro_flush_func == NULL) {
            return -1;
        }
    }
    if (PyModule_AddObjectRef(module, "CoroFastPath", (PyObject *)&CoroFastPath_Type) < 0 ||
        PyModule_AddObjectRef(module, "CoroutineFastPathMixin", (PyObject *)&CoroMixin_Type) < 0 ||
        PyModule_AddObjectRef(module, "Done", (PyObject *)&Done_Type) < 0) {
        return -1;
    }
    return 0;
}
