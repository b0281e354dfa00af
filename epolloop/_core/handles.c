/* Handle and TimerHandle: asyncio's callback handles, made and run in C.
 *
 * Hot path: every call_soon makes a Handle (every Future completion and Task step goes
 * through one), and every call_later a TimerHandle. The types derive from asyncio.Handle and
 * asyncio.TimerHandle and keep their state in asyncio's own slots (core.h), so isinstance,
 * every attribute, repr, comparisons and hashing are asyncio's own code; C adds only the
 * constructor, _run, cancel and dealloc, which the loop calls all the time.
 *
 * Garbage collection: a handle can be part of a cycle (a timeout's handle stored on the object
 * whose method it calls), so handles are tracked by the collector — but one the reactor made
 * for call_soon or call_later only once it outlives the reactor's own reference (the ready
 * queue's or the heap's) with another owner (release_handle in reactor.c), and so with
 * the context and argument tuple made for it. Until then the reactor owns them and they cannot
 * be part of unreachable garbage; untracked, the thousands made per second, each with its
 * context, cost the collector nothing (tracked, a burst of call_soon spent half its time in
 * the collector).
 */
#include "core.h"

#include <descrobject.h>
#include <structmember.h>

PyTypeObject *Handle_Type;
PyTypeObject *TimerHandle_Type;

/* Freed handles kept for reuse, per type: a call_soon or call_later then costs no
 * allocation. Hot path, on purpose. */
#define FREELIST_SIZE 256
typedef struct {
    HandleObject *items[FREELIST_SIZE];
    int length;
} Freelist;
static Freelist handle_freelist, timer_freelist;

static inline Freelist *
freelist_of(PyTypeObject *type)
{
    return type == Handle_Type ? &handle_freelist
           : type == TimerHandle_Type ? &timer_freelist
                                       : NULL;
}

HandleObject *
handle_new(PyTypeObject *type, PyObject *callback, PyObject *args, PyObject *loop,
           PyObject *context, int debug, int track)
{
    HandleObject *handle;
    Freelist *freelist = freelist_of(type);
    if (freelist != NULL && freelist->length > 0) {
        handle = freelist->items[--freelist->length];
        PyObject_Init((PyObject *)handle, type);
    }
    else {
        /* Zeroes 3.12's weakref pointer before the header; 3.11's is a slot, set below. */
        handle = PyObject_GC_New(HandleObject, type);
        if (handle == NULL) {
            return NULL;
        }
    }
#if PY_VERSION_HEX < 0x030C0000
    handle->weakreflist = NULL;
#endif
    handle->callback = Py_NewRef(callback);
    handle->args = Py_NewRef(args);
    handle->loop = Py_NewRef(loop);
    handle->cancelled = Py_NewRef(Py_False);
    handle->repr = Py_NewRef(Py_None);
    handle->source_traceback = NULL;
    if (type == TimerHandle_Type) {
        ((TimerHandleObject *)handle)->scheduled = Py_NewRef(Py_False);
        ((TimerHandleObject *)handle)->when = NULL;
    }
    if (context && context != Py_None) {
        handle->context = Py_NewRef(context);
    }
    else {
        handle->context = PyContext_CopyCurrent();
        if (handle->context == NULL) {
            goto error;
        }
        if (!track) {
            PyObject_GC_UnTrack(handle->context); /* ours alone, like the handle */
        }
    }
    if (debug) {
        /* Where the handle was made: the innermost Python frame is the caller of the loop's
         * method, since the C methods in between have no frames. */
        PyObject *frame = (PyObject *)PyEval_GetFrame();
        handle->source_traceback =
            PyObject_CallOneArg(core_globals.extract_stack, frame ? frame : Py_None);
        if (handle->source_traceback == NULL) {
            goto error;
        }
    }
    else {
        handle->source_traceback = Py_NewRef(Py_None);
    }
    if (track) {
        PyObject_GC_Track(handle);
    }
    return handle;

error:
    Py_DECREF(handle);
    return NULL;
}

static inline void
track(PyObject *op)
{
    if (op != NULL && PyObject_IS_GC(op) && !PyObject_GC_IsTracked(op)) {
        PyObject_GC_Track(op);
    }
}

void
handle_track(HandleObject *handle)
{
    track(handle->args);
    track(handle->context);
    track((PyObject *)handle);
}

/* Drop a reference to an object made untracked for an untracked handle (its arguments or
 * context). Tracked again first: it may live on elsewhere, and a context's dealloc expects
 * to find it tracked. */
static inline void
release_made(PyObject **slot)
{
    track(*slot);
    Py_CLEAR(*slot);
}

static void
Handle_dealloc(HandleObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    if (PyObject_GC_IsTracked((PyObject *)self)) {
        PyObject_GC_UnTrack(self);
    }
    PyObject_ClearWeakRefs((PyObject *)self);
    release_made(&self->args);
    Py_CLEAR(self->callback);
    Py_CLEAR(self->cancelled);
    release_made(&self->context);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->repr);
    Py_CLEAR(self->source_traceback);
    if (type == TimerHandle_Type) {
        Py_CLEAR(((TimerHandleObject *)self)->scheduled);
        Py_CLEAR(((TimerHandleObject *)self)->when);
    }
    Freelist *freelist = freelist_of(type);
    if (freelist != NULL && freelist->length < FREELIST_SIZE) {
        freelist->items[freelist->length++] = self;
    }
    else {
        type->tp_free(self);
    }
    Py_DECREF(type); /* instances of heap types own a reference to their type */
}

/* -- running ---------------------------------------------------------------------------- */

/* asyncio's report of a callback that raised: "Exception in callback <source>". */
static int
report_callback_error(HandleObject *self, PyObject *exc)
{
    PyObject *source;
#if PY_VERSION_HEX >= 0x030D0000
    int debug = reactor_debug(self->loop);
    if (debug < 0) {
        return -1;
    }
    PyObject *call_args[] = {self->callback, self->args, debug ? Py_True : Py_False};
    PyObject *kwnames = Py_BuildValue("(s)", "debug");
    if (kwnames == NULL) {
        return -1;
    }
    source = PyObject_Vectorcall(core_globals.format_callback_source, call_args, 2, kwnames);
    Py_DECREF(kwnames);
#else
    source = PyObject_CallFunctionObjArgs(core_globals.format_callback_source, self->callback,
                                          self->args, NULL);
#endif
    if (source == NULL) {
        return -1;
    }
    PyObject *message = PyUnicode_FromFormat("Exception in callback %U", source);
    Py_DECREF(source);
    if (message == NULL) {
        return -1;
    }
    int has_traceback = PyObject_IsTrue(self->source_traceback);
    PyObject *context = PyDict_New();
    int failed = has_traceback < 0 || context == NULL ||
                 PyDict_SetItem(context, core_globals.str_message, message) < 0 ||
                 PyDict_SetItem(context, core_globals.str_exception, exc) < 0 ||
                 PyDict_SetItem(context, core_globals.str_handle, (PyObject *)self) < 0 ||
                 (has_traceback && PyDict_SetItem(context, core_globals.str_source_traceback,
                                                  self->source_traceback) < 0);
    Py_DECREF(message);
    if (failed) {
        Py_XDECREF(context);
        return -1;
    }
    PyObject *result = PyObject_CallMethodOneArg(
        self->loop, core_globals.str_call_exception_handler, context);
    Py_DECREF(context);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

int
handle_run(HandleObject *self)
{
    if (self->callback == NULL || self->args == NULL || self->context == NULL) {
        /* Cleared by the collector, as part of garbage, or never built. */
        PyErr_SetString(PyExc_RuntimeError, "the handle has been cleared");
        return -1;
    }
    /* Our own references: the callback may cancel its handle, which drops the handle's. */
    PyObject *callback = Py_NewRef(self->callback);
    PyObject *args = Py_NewRef(self->args);
    PyObject *context = Py_NewRef(self->context);
    PyObject *result = NULL;
    if (!PyTuple_Check(args)) {
        PyErr_SetString(PyExc_TypeError, "the handle's arguments are not a tuple");
    }
    else if (!PyContext_CheckExact(context)) {
        /* Not a contextvars.Context: asyncio calls its run() all the same. */
        PyObject *run = PyObject_GetAttrString(context, "run");
        PyObject *head = run ? PyTuple_Pack(1, callback) : NULL;
        PyObject *run_args = head ? PySequence_Concat(head, args) : NULL;
        result = run_args ? PyObject_Call(run, run_args, NULL) : NULL;
        Py_XDECREF(run);
        Py_XDECREF(head);
        Py_XDECREF(run_args);
    }
    else if (PyContext_Enter(context) == 0) {
        result = PyObject_Vectorcall(callback, &PyTuple_GET_ITEM(args, 0),
                                     (size_t)PyTuple_GET_SIZE(args), NULL);
        PyContext_Exit(context);
    }
    Py_DECREF(callback);
    Py_DECREF(args);
    Py_DECREF(context);
    if (result != NULL) {
        Py_DECREF(result);
        return 0;
    }
    PyObject *exc = fetch_exception();
    if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit) ||
        PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        restore_exception(exc);
        return -1;
    }
    Py_INCREF(self);
    int status = report_callback_error(self, exc);
    Py_DECREF(self);
    Py_DECREF(exc);
    return status;
}

static PyObject *
Handle_run(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    if (handle_run(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- cancelling ------------------------------------------------------------------------- */

PyObject *
handle_cancel_impl(HandleObject *self)
{
    if (IS_CANCELLED(self)) {
        Py_RETURN_NONE;
    }
    if (TimerHandle_Check(self)) {
        if (Reactor_Check(self->loop)) {
            reactor_timer_cancelled(self->loop, (TimerHandleObject *)self);
        }
        else {
            PyObject *result = PyObject_CallMethodOneArg(
                self->loop, core_globals.str_timer_handle_cancelled, (PyObject *)self);
            if (result == NULL) {
                return NULL;
            }
            Py_DECREF(result);
        }
    }
    set_flag(&self->cancelled, 1);
    int debug = reactor_debug(self->loop);
    if (debug < 0) {
        return NULL;
    }
    if (debug) {
        /* Keep the description for the slow-callback warning, as asyncio does. */
        PyObject *repr = PyObject_Repr((PyObject *)self);
        if (repr == NULL) {
            return NULL;
        }
        Py_XSETREF(self->repr, repr);
    }
    Py_XSETREF(self->callback, Py_NewRef(Py_None));
    release_made(&self->args);
    self->args = Py_NewRef(Py_None);
    Py_RETURN_NONE;
}

static PyObject *
Handle_cancel(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    return handle_cancel_impl(self);
}

static PyObject *
Handle_get_context(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->context);
}

/* -- the types -------------------------------------------------------------------------- */

static PyMethodDef Handle_methods[] = {
    {"cancel", (PyCFunction)Handle_cancel, METH_NOARGS, "Cancel the callback."},
    {"get_context", (PyCFunction)Handle_get_context, METH_NOARGS,
     "The contextvars.Context the callback runs in."},
    {"_run", (PyCFunction)Handle_run, METH_NOARGS, NULL},
    {NULL},
};

static PyType_Slot Handle_slots[] = {
    {Py_tp_doc, "A callback scheduled on the loop: an asyncio.Handle."},
    {Py_tp_dealloc, Handle_dealloc},
    {Py_tp_methods, Handle_methods},
    {0, NULL},
};

static PyType_Spec Handle_spec = {
    .name = "epolloop._core.Handle",
    .basicsize = sizeof(HandleObject),
    .flags = Py_TPFLAGS_DEFAULT, /* GC and its traverse come from asyncio's classes */
    .slots = Handle_slots,
};

static PyType_Slot TimerHandle_slots[] = {
    {Py_tp_doc, "A callback due at a loop time: an asyncio.TimerHandle."},
    {Py_tp_dealloc, Handle_dealloc},
    {Py_tp_methods, Handle_methods},
    {0, NULL},
};

static PyType_Spec TimerHandle_spec = {
    .name = "epolloop._core.TimerHandle",
    .basicsize = sizeof(TimerHandleObject),
    .flags = Py_TPFLAGS_DEFAULT, /* GC and its traverse come from asyncio's classes */
    .slots = TimerHandle_slots,
};

static int
layout_matches(PyObject *handle, PyObject *timer_handle)
{
#define SLOT(type, name, structure, field) slot_at(type, name, offsetof(structure, field))
    return SLOT(handle, "_args", HandleObject, args) &&
           SLOT(handle, "_callback", HandleObject, callback) &&
           SLOT(handle, "_cancelled", HandleObject, cancelled) &&
           SLOT(handle, "_context", HandleObject, context) &&
           SLOT(handle, "_loop", HandleObject, loop) &&
           SLOT(handle, "_repr", HandleObject, repr) &&
           SLOT(handle, "_source_traceback", HandleObject, source_traceback) &&
           SLOT(timer_handle, "_scheduled", TimerHandleObject, scheduled) &&
           SLOT(timer_handle, "_when", TimerHandleObject, when) &&
           ((PyTypeObject *)handle)->tp_basicsize == (Py_ssize_t)sizeof(HandleObject) &&
           ((PyTypeObject *)timer_handle)->tp_basicsize ==
               (Py_ssize_t)offsetof(TimerHandleObject, deadline) &&
           ((PyTypeObject *)handle)->tp_dictoffset == 0;
#undef SLOT
}

int
handles_init(PyObject *module)
{
    PyObject *events = PyImport_ImportModule("asyncio.events");
    PyObject *handle = events ? PyObject_GetAttrString(events, "Handle") : NULL;
    PyObject *timer_handle = events ? PyObject_GetAttrString(events, "TimerHandle") : NULL;
    Py_XDECREF(events);
    int status = -1;
    if (handle == NULL || timer_handle == NULL) {
        goto done;
    }
    if (!layout_matches(handle, timer_handle)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ImportError,
                        "asyncio.Handle's slots are not laid out as epolloop's C core expects");
        goto done;
    }
    Handle_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Handle_spec, handle);
    TimerHandle_Type =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &TimerHandle_spec, timer_handle);
    if (Handle_Type == NULL || TimerHandle_Type == NULL ||
        PyModule_AddObjectRef(module, "Handle", (PyObject *)Handle_Type) < 0 ||
        PyModule_AddObjectRef(module, "TimerHandle", (PyObject *)TimerHandle_Type) < 0) {
        goto done;
    }
    status = 0;
done:
    Py_XDECREF(handle);
    Py_XDECREF(timer_handle);
    return status;
}
