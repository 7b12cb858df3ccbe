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
 *   write limit. The uvicorn front end's AsgiFastPath (_fastasgi.h) derives from it for that
 *   writing state (coro_init_state, coro_schedule, _coro_flush).
 * - CoroutineFastPathMixin: get_buffer, buffer_updated and data_received (FastPath's), a
 *   send() that returns an awaitable: the connection's _drain() coroutine while the write
 *   buffer is above its high-water mark, else a finished coroutine-like object (Done), so that
 *   `await ws.send(m)` costs no Python frame; and recv() and __aiter__ (see "Receiving"
 *   below): a message costs no Python frame of ours between the parser and the handler.
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
    unsigned short inline_left; /* wake-ups left to run inside this read (see Waiter) */
} CoroFastPathObject;

static PyTypeObject CoroFastPath_Type;
static PyObject *coro_flush_func;   /* the module's _coro_flush(fast) */
static PyObject *messages_name;       /* "messages" */
static PyObject *writing_paused_name; /* "_writing_paused" */
static PyObject *drain_name;          /* "_drain" */

/* The state CoroFastPath's __init__ and its subtypes' (AsgiFastPath) set alike. */
static int
coro_init_state(CoroFastPathObject *self, PyObject *shared, Py_ssize_t write_limit,
                PyObject *call_soon)
{
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
    self->base.assemble = 1; /* large cut frames are read into their message */
    Py_INCREF(call_soon);
    Py_XSETREF(self->call_soon, call_soon);
    self->write_limit = write_limit;
    return 0;
}

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
    return coro_init_state(self, shared, write_limit, call_soon);
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
    "The flush a CoroFastPath (or AsgiFastPath) schedules: write what send() queued."};

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
/* Receiving: recv() and `async for` in C                                                      */
/* ------------------------------------------------------------------------------------------ */

/*
 * The inbox stays the Python object of asyncio/messages.py (its `messages`, `_waiter`,
 * `paused` and `max_queue` slots), so that the core's deliveries (Inbox.put), Inbox.get,
 * Inbox.close and the connection's other code keep working on it unchanged; what is here
 * works on the same slots, by the same rules, without a Python frame:
 *
 * - CoroutineInboxMixin.on_message(ws, message) (mixed into _FastInbox): what the C parser
 *   calls per message. Inbox.put's rules: the coroutine waiting in recv() gets the message
 *   (the future's result; `handed` is set so that its answer is written at once), else it is
 *   queued and reading pauses at max_queue.
 * - Receive: what recv() and the iterator's __anext__ return, a coroutine-like awaitable that
 *   does Inbox.get's work when first awaited (not when made, as a coroutine): a queued message
 *   is returned without suspending (no future); with none queued, while the C parser is on
 *   (so the connection is open and more can come), it makes a Waiter (a future-compatible
 *   object, below), stores it in inbox._waiter and yields it to the task. Anything else (a paused
 *   backlog, whose get yields to the loop every `burst` messages and resumes reading; the C
 *   parser off: closing, closed, or the core reading) is Inbox.get itself, awaited through it.
 *   A waiting Receive cancelled after the inbox handed it its message puts the message back
 *   at the head of the queue; one closed, cancelled or dropped forgets its waiter (as get's
 *   `finally`).
 * - Messages: `aiter(ws)`. Its __anext__ is a Receive that ends the iteration on
 *   ConnectionClosedOK; after any exception it is exhausted (as an async generator is).
 */

static PyObject *deque_type;         /* collections.deque */
static PyObject *cancelled_error;    /* asyncio.CancelledError */
static PyObject *closed_ok;          /* shakehands ConnectionClosedOK */
static PyObject *inbox_name, *waiter_name, *paused_name, *max_queue_name, *loop_name,
    *popleft_name, *append_name, *appendleft_name, *inbox_emptied_name,
    *pause_reading_name, *get_name, *done_name, *set_result_name, *cancelled_name,
    *exception_name, *result_name, *throw_name, *close_name;

static void
restore_exception(PyObject *exc)
{
    if (exc == NULL) {
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *type = Py_NewRef((PyObject *)Py_TYPE(exc));
    PyObject *traceback = PyException_GetTraceback(exc);
    PyErr_Restore(type, exc, traceback);
#endif
}

static int
coro_ready(void)
{
    if (deque_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "shakehands._fastpath._coro_setup() was not called");
        return -1;
    }
    return 0;
}

/* Whether attribute `name` of `obj` is true (-1: error). */
static int
coro_attr_true(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

static int
coro_call_true(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_CallMethodNoArgs(obj, name);
    if (value == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

static int
coro_call_discard(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *r = arg ? PyObject_CallMethodOneArg(obj, name, arg)
                      : PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* inbox.messages as a deque (made on the first message that waits, as Inbox.put does); a new
 * reference. */
static PyObject *
inbox_deque(PyObject *inbox)
{
    PyObject *messages = PyObject_GetAttr(inbox, messages_name);
    if (messages == NULL || !PyTuple_Check(messages)) {
        return messages;
    }
    Py_DECREF(messages);
    messages = PyObject_CallNoArgs(deque_type);
    if (messages != NULL && PyObject_SetAttr(inbox, messages_name, messages) < 0) {
        Py_CLEAR(messages);
    }
    return messages;
}

/* ------------------------------------------------------------------------------------------ */
/* Waiter: the future a waiting recv() awaits                                                  */
/* ------------------------------------------------------------------------------------------ */

/*
 * A future-compatible object (asyncio's duck type: _asyncio_future_blocking, get_loop,
 * add_done_callback, remove_done_callback, done, cancelled, result, exception, set_result,
 * set_exception, cancel), so that the task awaiting recv() waits on it as on an
 * asyncio.Future; made without a Python frame (asyncio.Future's constructor calls
 * loop.get_debug()). Its done callbacks are scheduled with loop.call_soon, as a future's are,
 * except in one case: when the C parser hands it a message (waiter_hand) and its only callback
 * is the wake-up of the task awaiting it, with no task running, the task is stepped there and
 * then, in its context (what the loop would do one iteration later, minus the Handle and the
 * iteration): the handler runs inside the read, as a callback API listener does, and its
 * answer joins the read's batch of output.
 */

enum { WAITER_PENDING = 0, WAITER_FINISHED, WAITER_CANCELLED };

typedef struct {
    PyObject_HEAD
    PyObject *loop;
    PyObject *result;
    PyObject *exception;
    PyObject *cancel_msg;
    PyObject *callback; /* the first done callback and its context */
    PyObject *context;
    PyObject *more;     /* a list of (callback, context) after the first, or NULL */
    char state;
    char blocking;      /* _asyncio_future_blocking */
} WaiterObject;

static PyTypeObject Waiter_Type;
static PyObject *invalid_state_error; /* asyncio.InvalidStateError */
static PyObject *current_task_func;   /* asyncio.current_task */
static PyObject *call_soon_name, *call_exception_handler_name, *context_kwnames;

static PyObject *
waiter_new(PyObject *loop)
{
    WaiterObject *self = PyObject_GC_New(WaiterObject, &Waiter_Type);
    if (self == NULL) {
        return NULL;
    }
    self->loop = Py_NewRef(loop);
    self->result = self->exception = self->cancel_msg = NULL;
    self->callback = self->context = self->more = NULL;
    self->state = WAITER_PENDING;
    self->blocking = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
waiter_call_soon(WaiterObject *self, PyObject *callback, PyObject *context)
{
    PyObject *args[4] = {self->loop, callback, (PyObject *)self, context};
    PyObject *r = PyObject_VectorcallMethod(call_soon_name, args,
                                            3 | PY_VECTORCALL_ARGUMENTS_OFFSET, context_kwnames);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The future is done: schedule its callbacks (loop.call_soon, in their contexts). */
static int
waiter_schedule(WaiterObject *self)
{
    PyObject *callback = self->callback, *context = self->context, *more = self->more;
    self->callback = self->context = self->more = NULL;
    int failed = 0;
    if (callback != NULL) {
        failed = waiter_call_soon(self, callback, context) < 0;
        Py_DECREF(callback);
        Py_DECREF(context);
    }
    if (more != NULL) {
        for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(more); i++) {
            PyObject *pair = PyList_GET_ITEM(more, i);
            failed = waiter_call_soon(self, PyTuple_GET_ITEM(pair, 0),
                                      PyTuple_GET_ITEM(pair, 1)) < 0;
        }
        Py_DECREF(more);
    }
    return failed ? -1 : 0;
}

/*
 * The C parser hands the message: the result is set, and the one callback, the wake-up of the
 * task awaiting recv(), is run here when no task is running (else, or with more callbacks,
 * they are scheduled as a future's are).
 */
static int
waiter_hand(WaiterObject *self, PyObject *message, int here)
{
    self->result = Py_NewRef(message);
    self->state = WAITER_FINISHED;
    if (!here || self->callback == NULL || self->more != NULL) {
        return waiter_schedule(self);
    }
    PyObject *running = PyObject_CallOneArg(current_task_func, self->loop);
    if (running == NULL) {
        return -1;
    }
    int busy = running != Py_None;
    Py_DECREF(running);
    if (busy || PyContext_Enter(self->context) < 0) {
        PyErr_Clear();
        return waiter_schedule(self);
    }
    PyObject *callback = self->callback, *context = self->context;
    self->callback = self->context = NULL;
    Py_INCREF(self); /* the task may drop it */
    PyObject *r = PyObject_CallOneArg(callback, (PyObject *)self);
    int failed = 0;
    if (r == NULL) {
        /* As the loop reports a callback's exception (Handle._run). */
        PyObject *exc = fetch_exception();
        PyObject *info = Py_BuildValue("{s:s,s:O,s:O}", "message",
                                       "Exception in callback (recv wake-up)", "exception",
                                       exc ? exc : Py_None, "future", (PyObject *)self);
        Py_XDECREF(exc);
        if (info != NULL) {
            PyObject *args[2] = {self->loop, info};
            r = PyObject_VectorcallMethod(call_exception_handler_name, args,
                                          2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(info);
        }
        if (r == NULL) {
            PyErr_WriteUnraisable(callback);
        }
    }
    Py_XDECREF(r);
    if (PyContext_Exit(context) < 0) {
        failed = 1;
    }
    Py_DECREF(callback);
    Py_DECREF(context);
    Py_DECREF(self);
    return failed ? -1 : 0;
}

static PyObject *
waiter_done(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->state != WAITER_PENDING);
}

static PyObject *
waiter_cancelled(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->state == WAITER_CANCELLED);
}

static int
waiter_raise_cancelled(WaiterObject *self)
{
    if (self->cancel_msg != NULL && self->cancel_msg != Py_None) {
        PyErr_SetObject(cancelled_error, self->cancel_msg);
    }
    else {
        PyErr_SetNone(cancelled_error);
    }
    return -1;
}

static PyObject *
waiter_result(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state == WAITER_PENDING) {
        PyErr_SetString(invalid_state_error, "Result is not ready.");
        return NULL;
    }
    if (self->state == WAITER_CANCELLED) {
        waiter_raise_cancelled(self);
        return NULL;
    }
    if (self->exception != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(self->exception), self->exception);
        return NULL;
    }
    return Py_NewRef(self->result ? self->result : Py_None);
}

static PyObject *
waiter_exception(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->state == WAITER_PENDING) {
        PyErr_SetString(invalid_state_error, "Exception is not set.");
        return NULL;
    }
    if (self->state == WAITER_CANCELLED) {
        waiter_raise_cancelled(self);
        return NULL;
    }
    return Py_NewRef(self->exception ? self->exception : Py_None);
}

static PyObject *
waiter_set_result(WaiterObject *self, PyObject *result)
{
    if (self->state != WAITER_PENDING) {
        PyErr_SetString(invalid_state_error, "invalid state");
        return NULL;
    }
    self->result = Py_NewRef(result);
    self->state = WAITER_FINISHED;
    if (waiter_schedule(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
waiter_set_exception(WaiterObject *self, PyObject *exception)
{
    if (self->state != WAITER_PENDING) {
        PyErr_SetString(invalid_state_error, "invalid state");
        return NULL;
    }
    PyObject *value;
    if (PyExceptionClass_Check(exception)) {
        value = PyObject_CallNoArgs(exception);
        if (value == NULL) {
            return NULL;
        }
    }
    else {
        value = Py_NewRef(exception);
    }
    if (!PyExceptionInstance_Check(value)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "invalid exception object");
        return NULL;
    }
    self->exception = value;
    self->state = WAITER_FINISHED;
    if (waiter_schedule(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
waiter_cancel(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *msg = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "msg"))) {
        PyErr_SetString(PyExc_TypeError, "cancel() takes an optional msg");
        return NULL;
    }
    if (nargs + nkw == 1) {
        msg = args[0];
    }
    if (self->state != WAITER_PENDING) {
        Py_RETURN_FALSE;
    }
    self->state = WAITER_CANCELLED;
    self->cancel_msg = Py_NewRef(msg);
    if (waiter_schedule(self) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
waiter_add_done_callback(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 1 || nkw > 1 ||
        (nkw == 1 &&
         PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "context"))) {
        PyErr_SetString(PyExc_TypeError, "add_done_callback(fn, *, context=None)");
        return NULL;
    }
    PyObject *callback = args[0];
    PyObject *context = nkw ? args[1] : Py_None;
    if (context == Py_None) {
        context = PyContext_CopyCurrent();
        if (context == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(context);
    }
    int failed = 0;
    if (self->state != WAITER_PENDING) {
        failed = waiter_call_soon(self, callback, context) < 0;
        Py_DECREF(context);
    }
    else if (self->callback == NULL) {
        self->callback = Py_NewRef(callback);
        self->context = context;
    }
    else {
        PyObject *pair = PyTuple_Pack(2, callback, context);
        Py_DECREF(context);
        if (pair == NULL) {
            return NULL;
        }
        if (self->more == NULL) {
            self->more = PyList_New(0);
        }
        failed = self->more == NULL || PyList_Append(self->more, pair) < 0;
        Py_DECREF(pair);
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
waiter_remove_done_callback(WaiterObject *self, PyObject *callback)
{
    Py_ssize_t removed = 0;
    if (self->more != NULL) {
        for (Py_ssize_t i = PyList_GET_SIZE(self->more) - 1; i >= 0; i--) {
            PyObject *pair = PyList_GET_ITEM(self->more, i);
            int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(pair, 0), callback, Py_EQ);
            if (same < 0) {
                return NULL;
            }
            if (same) {
                if (PySequence_DelItem(self->more, i) < 0) {
                    return NULL;
                }
                removed++;
            }
        }
    }
    if (self->callback != NULL) {
        int same = PyObject_RichCompareBool(self->callback, callback, Py_EQ);
        if (same < 0) {
            return NULL;
        }
        if (same) {
            Py_CLEAR(self->callback);
            Py_CLEAR(self->context);
            removed++;
            if (self->more != NULL && PyList_GET_SIZE(self->more) > 0) {
                PyObject *pair = PyList_GET_ITEM(self->more, 0);
                self->callback = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
                self->context = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
                if (PySequence_DelItem(self->more, 0) < 0) {
                    return NULL;
                }
            }
        }
    }
    return PyLong_FromSsize_t(removed);
}

static PyObject *
waiter_get_loop(WaiterObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->loop);
}

static PyObject *
waiter_get_blocking(WaiterObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->blocking);
}

static int
waiter_set_blocking(WaiterObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _asyncio_future_blocking");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0) {
        return -1;
    }
    self->blocking = (char)truth;
    return 0;
}

static int
Waiter_traverse(WaiterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->result);
    Py_VISIT(self->exception);
    Py_VISIT(self->cancel_msg);
    Py_VISIT(self->callback);
    Py_VISIT(self->context);
    Py_VISIT(self->more);
    return 0;
}

static int
Waiter_clear(WaiterObject *self)
{
    Py_CLEAR(self->loop);
    Py_CLEAR(self->result);
    Py_CLEAR(self->exception);
    Py_CLEAR(self->cancel_msg);
    Py_CLEAR(self->callback);
    Py_CLEAR(self->context);
    Py_CLEAR(self->more);
    return 0;
}

static void
Waiter_dealloc(WaiterObject *self)
{
    PyObject_GC_UnTrack(self);
    Waiter_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef Waiter_methods[] = {
    {"done", (PyCFunction)waiter_done, METH_NOARGS, "Whether it has a result, or is cancelled."},
    {"cancelled", (PyCFunction)waiter_cancelled, METH_NOARGS, "Whether it was cancelled."},
    {"result", (PyCFunction)waiter_result, METH_NOARGS, "The message (or raise)."},
    {"exception", (PyCFunction)waiter_exception, METH_NOARGS, "The exception set, or None."},
    {"set_result", (PyCFunction)waiter_set_result, METH_O, "Hand the message."},
    {"set_exception", (PyCFunction)waiter_set_exception, METH_O, "Fail the waiting recv()."},
    {"cancel", (PyCFunction)(void (*)(void))waiter_cancel, METH_FASTCALL | METH_KEYWORDS,
     "Cancel it (False if done)."},
    {"add_done_callback", (PyCFunction)(void (*)(void))waiter_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS, "Call fn(self) once done (in context)."},
    {"remove_done_callback", (PyCFunction)waiter_remove_done_callback, METH_O,
     "Forget fn; return how many were removed."},
    {"get_loop", (PyCFunction)waiter_get_loop, METH_NOARGS, "Its event loop."},
    {NULL},
};

static PyGetSetDef Waiter_getset[] = {
    {"_asyncio_future_blocking", (getter)waiter_get_blocking, (setter)waiter_set_blocking,
     "asyncio's mark of a future a task waits on.", NULL},
    {NULL},
};

static PyTypeObject Waiter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.Waiter",
    .tp_basicsize = sizeof(WaiterObject),
    .tp_dealloc = (destructor)Waiter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The future a waiting recv() of a compiled coroutine connection awaits.",
    .tp_traverse = (traverseproc)Waiter_traverse,
    .tp_clear = (inquiry)Waiter_clear,
    .tp_methods = Waiter_methods,
    .tp_getset = Waiter_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* CoroutineInboxMixin                                                                         */
/* ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(inbox_on_message_doc,
"on_message(ws, message, /)\n"
"--\n"
"\n"
"A message parsed by C, by Inbox.put's rules: the coroutine waiting in recv() gets it (and its\n"
"answer is written at once), else it is queued and reading pauses at max_queue.");

static PyObject *
inbox_on_message(PyObject *inbox, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "on_message() takes 2 arguments");
        return NULL;
    }
    if (coro_ready() < 0) {
        return NULL;
    }
    PyObject *ws = args[0], *message = args[1];
    PyObject *waiter = PyObject_GetAttr(inbox, waiter_name);
    if (waiter == NULL) {
        return NULL;
    }
    if (waiter != Py_None) {
        int queued = coro_attr_true(inbox, messages_name);
        int done = queued                            ? queued
                   : Py_IS_TYPE(waiter, &Waiter_Type) ? ((WaiterObject *)waiter)->state != 0
                                                      : coro_call_true(waiter, done_name);
        if (done < 0) {
            Py_DECREF(waiter);
            return NULL;
        }
        if (!done) {
            /* Handed to the waiting recv(). Its answer is written at once (unless more
             * messages wait: then with theirs), or with the read's output when its task runs
             * here (waiter_hand). */
            FastPathObject *fast = fast_of(ws);
            if (fast == NULL) {
                Py_DECREF(waiter);
                return NULL;
            }
            int here = 0;
            if (PyObject_TypeCheck((PyObject *)fast, &CoroFastPath_Type)) {
                CoroFastPathObject *coro = (CoroFastPathObject *)fast;
                coro->handed = 1;
                if (coro->inline_left > 0) {
                    coro->inline_left--;
                    here = 1;
                }
            }
            Py_DECREF(fast);
            int failed = PyObject_SetAttr(inbox, waiter_name, Py_None) < 0;
            if (!failed) {
                failed = Py_IS_TYPE(waiter, &Waiter_Type)
                             ? waiter_hand((WaiterObject *)waiter, message, here) < 0
                             : coro_call_discard(waiter, set_result_name, message) < 0;
            }
            Py_DECREF(waiter);
            if (failed) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    Py_DECREF(waiter);
    /* Queued; a full queue pauses reading. */
    PyObject *messages = inbox_deque(inbox);
    if (messages == NULL) {
        return NULL;
    }
    if (coro_call_discard(messages, append_name, message) < 0) {
        Py_DECREF(messages);
        return NULL;
    }
    Py_ssize_t count = PyObject_Size(messages);
    Py_DECREF(messages);
    if (count < 0) {
        return NULL;
    }
    PyObject *max_queue = PyObject_GetAttr(inbox, max_queue_name);
    if (max_queue == NULL) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(max_queue);
    Py_DECREF(max_queue);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (count >= limit) {
        int paused = coro_attr_true(inbox, paused_name);
        if (paused < 0) {
            return NULL;
        }
        if (!paused) {
            PyObject *now = PyObject_CallMethodNoArgs(ws, pause_reading_name);
            if (now == NULL) {
                return NULL;
            }
            int failed = PyObject_SetAttr(inbox, paused_name, now);
            Py_DECREF(now);
            if (failed < 0) {
                return NULL;
            }
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef inbox_mixin_methods[] = {
    {"on_message", (PyCFunction)(void (*)(void))inbox_on_message, METH_FASTCALL,
     inbox_on_message_doc},
    {NULL},
};

PyDoc_STRVAR(inbox_mixin_doc,
"The C part of the inbox of a coroutine connection on the compiled path (on_message). No\n"
"instance layout of its own: it works on the slots of the Inbox class it is mixed into.");

static PyTypeObject InboxMixin_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.CoroutineInboxMixin",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = inbox_mixin_doc,
    .tp_methods = inbox_mixin_methods,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------------------ */
/* Messages (the async iterator) and Receive (the awaitable of recv and __anext__)             */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *ws;
    char finished; /* an exception ended it: every __anext__ raises StopAsyncIteration */
} MessagesObject;

enum { RECV_NEW = 0, RECV_WAITING, RECV_DELEGATING, RECV_OVER };

typedef struct {
    PyObject_HEAD
    PyObject *ws;
    PyObject *inbox;
    MessagesObject *owner; /* the iterator whose __anext__ made it, or NULL (recv) */
    PyObject *waiter;      /* RECV_WAITING: the Waiter stored in inbox._waiter */
    PyObject *inner;       /* RECV_DELEGATING: the Inbox.get() coroutine it awaits */
    char state;
} ReceiveObject;

static PyTypeObject Receive_Type;
static PyTypeObject Messages_Type;

static PyObject *
receive_new(PyObject *ws, MessagesObject *owner)
{
    if (coro_ready() < 0) {
        return NULL;
    }
    PyObject *inbox = PyObject_GetAttr(ws, inbox_name);
    if (inbox == NULL) {
        return NULL;
    }
    ReceiveObject *self = PyObject_GC_New(ReceiveObject, &Receive_Type);
    if (self == NULL) {
        Py_DECREF(inbox);
        return NULL;
    }
    self->ws = Py_NewRef(ws);
    self->inbox = inbox;
    self->owner = (MessagesObject *)Py_XNewRef((PyObject *)owner);
    self->waiter = NULL;
    self->inner = NULL;
    self->state = RECV_NEW;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* Forget the waiter (get's `finally`: inbox._waiter = None if it is still ours). Keeps the
 * exception being raised, if any. */
static int
receive_forget_waiter(ReceiveObject *self)
{
    PyObject *waiter = self->waiter;
    if (waiter == NULL || self->inbox == NULL) {
        return 0;
    }
    self->waiter = NULL;
    PyObject *exc = PyErr_Occurred() ? fetch_exception() : NULL;
    int failed = 0;
    PyObject *current = PyObject_GetAttr(self->inbox, waiter_name);
    if (current == NULL) {
        failed = 1;
    }
    else {
        if (current == waiter) {
            failed = PyObject_SetAttr(self->inbox, waiter_name, Py_None) < 0;
        }
        Py_DECREF(current);
    }
    Py_DECREF(waiter);
    if (exc != NULL) {
        if (failed) {
            PyErr_WriteUnraisable(NULL);
        }
        restore_exception(exc);
        return 0;
    }
    return failed ? -1 : 0;
}

/* A cancelled recv() that the inbox had already handed its message: the message goes back
 * to the head of the queue (get's `except CancelledError`). Keeps the exception raised. */
static void
receive_keep_message(ReceiveObject *self)
{
    PyObject *waiter = self->waiter;
    if (waiter == NULL) {
        return;
    }
    PyObject *exc = fetch_exception();
    PyObject *result = NULL, *messages = NULL;
    int done = coro_call_true(waiter, done_name);
    if (done <= 0) {
        goto end;
    }
    int cancelled = coro_call_true(waiter, cancelled_name);
    if (cancelled != 0) {
        goto end;
    }
    PyObject *error = PyObject_CallMethodNoArgs(waiter, exception_name);
    if (error == NULL) {
        goto end;
    }
    int failed = error != Py_None;
    Py_DECREF(error);
    if (failed) {
        goto end;
    }
    result = PyObject_CallMethodNoArgs(waiter, result_name);
    if (result == NULL) {
        goto end;
    }
    messages = inbox_deque(self->inbox);
    if (messages != NULL) {
        (void)coro_call_discard(messages, appendleft_name, result);
    }
end:
    if (PyErr_Occurred()) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(result);
    Py_XDECREF(messages);
    restore_exception(exc);
}

/* It has returned or raised: forget the waiter; an iteration ends on ConnectionClosedOK and
 * is over after any exception. */
static PySendResult
receive_end(ReceiveObject *self, PySendResult status, PyObject **result)
{
    self->state = RECV_OVER;
    Py_CLEAR(self->inner);
    if (receive_forget_waiter(self) < 0 && status == PYGEN_RETURN) {
        Py_CLEAR(*result);
        status = PYGEN_ERROR;
    }
    if (status == PYGEN_ERROR && self->owner != NULL) {
        self->owner->finished = 1;
        if (PyErr_ExceptionMatches(closed_ok)) {
            PyErr_Clear();
            PyErr_SetNone(PyExc_StopAsyncIteration);
        }
    }
    return status;
}

static PySendResult
receive_step(ReceiveObject *self, PyObject *arg, PyObject **result)
{
    PySendResult status = PyIter_Send(self->inner, arg, result);
    if (status == PYGEN_NEXT) {
        return status;
    }
    return receive_end(self, status, result);
}

/* Inbox.get itself (a paused backlog, or the C parser off). */
static PySendResult
receive_delegate(ReceiveObject *self, PyObject **result)
{
    PyObject *coro = PyObject_CallMethodNoArgs(self->inbox, get_name);
    if (coro == NULL) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    self->inner = coro;
    self->state = RECV_DELEGATING;
    return receive_step(self, Py_None, result);
}

/* Waiting on its Waiter: yield it to the task until it is done, then return its message or
 * raise its exception (as a future's __await__). */
static PySendResult
receive_wait(ReceiveObject *self, PyObject **result)
{
    WaiterObject *waiter = (WaiterObject *)self->waiter;
    *result = NULL;
    if (waiter->state == WAITER_PENDING) {
        waiter->blocking = 1;
        *result = Py_NewRef((PyObject *)waiter);
        return PYGEN_NEXT;
    }
    if (waiter->state == WAITER_CANCELLED) {
        waiter_raise_cancelled(waiter);
        return receive_end(self, PYGEN_ERROR, result);
    }
    if (waiter->exception != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(waiter->exception), waiter->exception);
        return receive_end(self, PYGEN_ERROR, result);
    }
    *result = Py_NewRef(waiter->result ? waiter->result : Py_None);
    return receive_end(self, PYGEN_RETURN, result);
}

/* The first step: Inbox.get's work. */
static PySendResult
receive_start(ReceiveObject *self, PyObject **result)
{
    PyObject *inbox = self->inbox;
    *result = NULL;
    if (self->owner != NULL && self->owner->finished) {
        self->state = RECV_OVER;
        PyErr_SetNone(PyExc_StopAsyncIteration);
        return PYGEN_ERROR;
    }
    PyObject *messages = PyObject_GetAttr(inbox, messages_name);
    if (messages == NULL) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    int queued = PyObject_IsTrue(messages);
    int paused = queued > 0 ? coro_attr_true(inbox, paused_name) : 0;
    if (queued < 0 || paused < 0) {
        Py_DECREF(messages);
        return receive_end(self, PYGEN_ERROR, result);
    }
    if (queued) {
        if (paused) {
            Py_DECREF(messages);
            return receive_delegate(self, result);
        }
        /* Returned without suspending. */
        PyObject *message = PyObject_CallMethodNoArgs(messages, popleft_name);
        Py_ssize_t left = message == NULL ? -1 : PyObject_Size(messages);
        Py_DECREF(messages);
        if (left == 0 && coro_call_discard(self->ws, inbox_emptied_name, NULL) < 0) {
            left = -1;
        }
        if (left < 0) {
            Py_XDECREF(message);
            return receive_end(self, PYGEN_ERROR, result);
        }
        *result = message;
        return receive_end(self, PYGEN_RETURN, result);
    }
    Py_DECREF(messages);
    FastPathObject *fast = fast_of(self->ws);
    if (fast == NULL) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    int active = fast->fast;
    Py_DECREF(fast);
    if (!active) {
        /* Closing, closed, or the core reading: get() says how it ends, or waits. */
        return receive_delegate(self, result);
    }
    /* Open, and the C parser on: more can come. Wait for the next message. */
    PyObject *waiter = PyObject_GetAttr(inbox, waiter_name);
    if (waiter == NULL) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    int busy = waiter != Py_None;
    Py_DECREF(waiter);
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "another coroutine is already waiting for the next message");
        return receive_end(self, PYGEN_ERROR, result);
    }
    PyObject *loop = PyObject_GetAttr(self->ws, loop_name);
    if (loop == NULL) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    waiter = waiter_new(loop);
    Py_DECREF(loop);
    if (waiter == NULL) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    self->waiter = waiter;
    self->state = RECV_WAITING;
    if (PyObject_SetAttr(inbox, waiter_name, waiter) < 0) {
        return receive_end(self, PYGEN_ERROR, result);
    }
    return receive_wait(self, result);
}

static PySendResult
receive_am_send(ReceiveObject *self, PyObject *arg, PyObject **result)
{
    switch (self->state) {
    case RECV_NEW:
        if (arg != Py_None) {
            *result = NULL;
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to a just-started coroutine");
            return PYGEN_ERROR;
        }
        return receive_start(self, result);
    case RECV_WAITING:
        return receive_wait(self, result);
    case RECV_DELEGATING:
        return receive_step(self, arg, result);
    default:
        *result = NULL;
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
}

/* StopIteration(value), as a generator's return raises it. */
static void
set_stop_iteration(PyObject *value)
{
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return;
    }
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
}

static PyObject *
receive_iternext(ReceiveObject *self)
{
    PyObject *result;
    PySendResult status = receive_am_send(self, Py_None, &result);
    if (status == PYGEN_NEXT) {
        return result;
    }
    if (status == PYGEN_RETURN) {
        set_stop_iteration(result);
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *
receive_send(ReceiveObject *self, PyObject *arg)
{
    PyObject *result;
    PySendResult status = receive_am_send(self, arg, &result);
    if (status == PYGEN_NEXT) {
        return result;
    }
    if (status == PYGEN_RETURN) {
        set_stop_iteration(result);
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *
receive_throw(ReceiveObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    if (self->state == RECV_WAITING) {
        /* Raised where it waits; a message already handed to it goes back to the queue. */
        (void)done_throw(NULL, args, nargs);
        if (PyErr_ExceptionMatches(cancelled_error)) {
            receive_keep_message(self);
        }
        PyObject *none = NULL;
        receive_end(self, PYGEN_ERROR, &none);
        return NULL;
    }
    if (self->state != RECV_DELEGATING) {
        /* Not started (raised where it would start, nothing done) or over. */
        self->state = RECV_OVER;
        return done_throw(NULL, args, nargs);
    }
    PyObject *call[4] = {self->inner, NULL, NULL, NULL};
    for (Py_ssize_t i = 0; i < nargs; i++) {
        call[i + 1] = args[i];
    }
    PyObject *r = PyObject_VectorcallMethod(throw_name, call,
                                            (size_t)(nargs + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                            NULL);
    if (r != NULL) {
        return r; /* it yielded: still awaiting */
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        /* It returned (StopIteration carries the value). */
        self->state = RECV_OVER;
        Py_CLEAR(self->inner);
        (void)receive_forget_waiter(self);
        return NULL;
    }
    PyObject *none = NULL;
    receive_end(self, PYGEN_ERROR, &none);
    return NULL;
}

static PyObject *
receive_close(ReceiveObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *inner = self->inner;
    int failed = 0;
    if (self->state == RECV_DELEGATING && inner != NULL) {
        failed = coro_call_discard(inner, close_name, NULL) < 0;
    }
    self->state = RECV_OVER;
    Py_CLEAR(self->inner);
    if (receive_forget_waiter(self) < 0) {
        failed = 1;
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
receive_await(PyObject *self)
{
    return Py_NewRef(self);
}

static int
Receive_traverse(ReceiveObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ws);
    Py_VISIT(self->inbox);
    Py_VISIT(self->owner);
    Py_VISIT(self->waiter);
    Py_VISIT(self->inner);
    return 0;
}

static int
Receive_clear(ReceiveObject *self)
{
    Py_CLEAR(self->ws);
    Py_CLEAR(self->inbox);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->waiter);
    Py_CLEAR(self->inner);
    return 0;
}

static void
Receive_dealloc(ReceiveObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->state == RECV_WAITING) {
        /* Dropped while waiting (as a coroutine's close on finalisation): forget the waiter. */
        PyObject *exc = PyErr_Occurred() ? fetch_exception() : NULL;
        if (receive_forget_waiter(self) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
        restore_exception(exc);
    }
    Receive_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef Receive_methods[] = {
    {"send", (PyCFunction)receive_send, METH_O, "Resume it with a value (None)."},
    {"throw", (PyCFunction)(void (*)(void))receive_throw, METH_FASTCALL,
     "Raise an exception where it waits (a cancelled recv keeps a message handed to it)."},
    {"close", (PyCFunction)receive_close, METH_NOARGS, "Stop waiting."},
    {NULL},
};

static PyAsyncMethods Receive_as_async = {
    .am_await = (unaryfunc)receive_await,
    .am_send = (sendfunc)receive_am_send,
};

static PyTypeObject Receive_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.Receive",
    .tp_basicsize = sizeof(ReceiveObject),
    .tp_dealloc = (destructor)Receive_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What recv() and the message iterator's __anext__ return: a coroutine (await it,\n"
              "or make a task of it) that returns the next message.",
    .tp_traverse = (traverseproc)Receive_traverse,
    .tp_clear = (inquiry)Receive_clear,
    .tp_as_async = &Receive_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)receive_iternext,
    .tp_methods = Receive_methods,
};

static PyObject *
messages_new(PyObject *ws)
{
    MessagesObject *self = PyObject_GC_New(MessagesObject, &Messages_Type);
    if (self == NULL) {
        return NULL;
    }
    self->ws = Py_NewRef(ws);
    self->finished = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
messages_aiter(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
messages_anext(MessagesObject *self)
{
    return receive_new(self->ws, self);
}

static int
Messages_traverse(MessagesObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ws);
    return 0;
}

static int
Messages_clear(MessagesObject *self)
{
    Py_CLEAR(self->ws);
    return 0;
}

static void
Messages_dealloc(MessagesObject *self)
{
    PyObject_GC_UnTrack(self);
    Messages_clear(self);
    PyObject_GC_Del(self);
}

static PyAsyncMethods Messages_as_async = {
    .am_aiter = (unaryfunc)messages_aiter,
    .am_anext = (unaryfunc)messages_anext,
};

static PyTypeObject Messages_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.Messages",
    .tp_basicsize = sizeof(MessagesObject),
    .tp_dealloc = (destructor)Messages_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "aiter(ws) of a compiled coroutine connection: its messages until it closes\n"
              "(a clean close ends the iteration quietly).",
    .tp_traverse = (traverseproc)Messages_traverse,
    .tp_clear = (inquiry)Messages_clear,
    .tp_as_async = &Messages_as_async,
};

PyDoc_STRVAR(coro_recv_doc,
"recv()\n"
"--\n"
"\n"
"Return the next message: ``str`` for text, ``bytes`` for binary (a coroutine:\n"
"``await ws.recv()``).\n"
"\n"
"Raises:\n"
"    ConnectionClosedOK: the connection closed cleanly (and no message is left).\n"
"    ConnectionClosedError: it closed with an error, or without a closing handshake.\n"
"    RuntimeError: another coroutine is already waiting in ``recv``.");

static PyObject *
coro_recv(PyObject *ws, PyObject *Py_UNUSED(ignored))
{
    return receive_new(ws, NULL);
}

static PyObject *
coro_aiter(PyObject *ws)
{
    return messages_new(ws);
}

PyDoc_STRVAR(coro_setup_doc,
"_coro_setup(deque, cancelled_error, closed_ok, invalid_state_error, current_task, /)\n"
"--\n"
"\n"
"The Python objects the compiled recv needs: collections.deque, asyncio.CancelledError,\n"
"ConnectionClosedOK, asyncio.InvalidStateError and asyncio.current_task.");

static PyObject *
coro_setup(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_coro_setup() takes 5 arguments");
        return NULL;
    }
    Py_XSETREF(deque_type, Py_NewRef(args[0]));
    Py_XSETREF(cancelled_error, Py_NewRef(args[1]));
    Py_XSETREF(closed_ok, Py_NewRef(args[2]));
    Py_XSETREF(invalid_state_error, Py_NewRef(args[3]));
    Py_XSETREF(current_task_func, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

static PyMethodDef coro_setup_def = {
    "_coro_setup", (PyCFunction)(void (*)(void))coro_setup, METH_FASTCALL, coro_setup_doc};

static int
coro_recv_exec(PyObject *module)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&inbox_name, "_inbox"},
        {&waiter_name, "_waiter"},
        {&paused_name, "paused"},
        {&max_queue_name, "max_queue"},
        {&loop_name, "loop"},
        {&call_soon_name, "call_soon"},
        {&call_exception_handler_name, "call_exception_handler"},
        {&popleft_name, "popleft"},
        {&append_name, "append"},
        {&appendleft_name, "appendleft"},
        {&inbox_emptied_name, "_inbox_emptied"},
        {&pause_reading_name, "_pause_reading"},
        {&get_name, "get"},
        {&done_name, "done"},
        {&set_result_name, "set_result"},
        {&cancelled_name, "cancelled"},
        {&exception_name, "exception"},
        {&result_name, "result"},
        {&throw_name, "throw"},
        {&close_name, "close"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL) {
            *names[i].slot = PyUnicode_InternFromString(names[i].name);
            if (*names[i].slot == NULL) {
                return -1;
            }
        }
    }
    if (context_kwnames == NULL) {
        PyObject *name = PyUnicode_InternFromString("context");
        if (name == NULL) {
            return -1;
        }
        context_kwnames = PyTuple_Pack(1, name);
        Py_DECREF(name);
        if (context_kwnames == NULL) {
            return -1;
        }
    }
    if (PyType_Ready(&InboxMixin_Type) < 0 || PyType_Ready(&Receive_Type) < 0 ||
        PyType_Ready(&Messages_Type) < 0 || PyType_Ready(&Waiter_Type) < 0) {
        return -1;
    }
    PyObject *setup = PyCFunction_New(&coro_setup_def, NULL);
    if (setup == NULL) {
        return -1;
    }
    int failed = PyModule_AddObjectRef(module, "_coro_setup", setup) < 0;
    Py_DECREF(setup);
    if (failed ||
        PyModule_AddObjectRef(module, "CoroutineInboxMixin", (PyObject *)&InboxMixin_Type) < 0 ||
        PyModule_AddObjectRef(module, "Receive", (PyObject *)&Receive_Type) < 0 ||
        PyModule_AddObjectRef(module, "Messages", (PyObject *)&Messages_Type) < 0 ||
        PyModule_AddObjectRef(module, "Waiter", (PyObject *)&Waiter_Type) < 0) {
        return -1;
    }
    return 0;
}

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
    if (PyBytes_CheckExact(message) &&
        (len >= CORO_SEPARATE_PAYLOAD ||
         (len >= SEPARATE_PAYLOAD && (base->direct || base->gather)))) {
        /* Written now, after what is queued: the header, then the payload, uncopied (in one
         * sendmsg on asyncio's plain TCP transport, one writelines on uvloop's). */
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
    if (base->in_batch) {
        /* Sent by a handler a read woke (waiter_hand): written with the read's output, at
         * the end of the read. */
        return 0;
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

/* At most this many waiting tasks are woken inside one read; later messages of the read wake
 * theirs through the loop (a flood of tiny messages then queues, pauses reading at max_queue,
 * and is read with the inbox's bursts, as without the compiled path), so that one read cannot
 * hold the loop for more than this many handler steps. */
#define CORO_INLINE_PER_READ 256

static void
coro_new_read(PyObject *ws)
{
    FastPathObject *fast = fast_of(ws);
    if (fast == NULL) {
        PyErr_Clear(); /* the method called next raises it again */
        return;
    }
    if (PyObject_TypeCheck((PyObject *)fast, &CoroFastPath_Type)) {
        ((CoroFastPathObject *)fast)->inline_left = CORO_INLINE_PER_READ;
    }
    Py_DECREF(fast);
}

static PyObject *
coro_get_buffer(PyObject *ws, PyObject *sizehint)
{
    coro_new_read(ws);
    return mixin_get_buffer(ws, sizehint);
}

static PyObject *
coro_data_received(PyObject *ws, PyObject *data)
{
    coro_new_read(ws);
    return mixin_data_received(ws, data);
}

static PyMethodDef coro_mixin_methods[] = {
    {"get_buffer", (PyCFunction)coro_get_buffer, METH_O, mixin_get_buffer_doc},
    {"buffer_updated", (PyCFunction)mixin_buffer_updated, METH_O, mixin_buffer_updated_doc},
    {"data_received", (PyCFunction)coro_data_received, METH_O, mixin_data_received_doc},
    {"send", (PyCFunction)(void (*)(void))coro_send, METH_FASTCALL | METH_KEYWORDS,
     coro_send_doc},
    {"recv", (PyCFunction)coro_recv, METH_NOARGS, coro_recv_doc},
    {NULL},
};

static PyAsyncMethods coro_mixin_as_async = {
    .am_aiter = (unaryfunc)coro_aiter,
};

PyDoc_STRVAR(coro_mixin_doc,
"The C methods of a coroutine connection on the compiled path: get_buffer, buffer_updated,\n"
"data_received, send, recv and __aiter__. No instance layout of its own; its state is the\n"
"CoroFastPath in the ``_fast`` slot of the class it is mixed into, which also defines\n"
"``_slow_received(data)``, ``_fast_error(exc)``, ``_drain()``, ``_send_slow(message, *,\n"
"compress=True)``, ``loop``, ``_inbox`` (an Inbox with CoroutineInboxMixin),\n"
"``_inbox_emptied()`` and ``_pause_reading()``.");

static PyTypeObject CoroMixin_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shakehands._fastpath.CoroutineFastPathMixin",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = coro_mixin_doc,
    .tp_as_async = &coro_mixin_as_async,
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
    if (coro_recv_exec(module) < 0) {
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
