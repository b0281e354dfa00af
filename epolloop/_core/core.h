/* The C core of epolloop: what module.c, handles.c and reactor.c share.
 *
 * The same contract as epolloop/_reactor.py (read its docstring first: it lists the facts
 * about epoll, timerfd and eventfd that both cores rely on). This core exists for speed: the
 * scheduling methods, the handles and the run step are the loop's hottest paths.
 */
#ifndef EPOLLOOP_CORE_H
#define EPOLLOOP_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Python objects the core calls into, looked up once when the module is imported. */
typedef struct {
    PyObject *format_callback_source; /* asyncio.format_helpers._format_callback_source */
    PyObject *extract_stack;          /* asyncio.format_helpers.extract_stack */
    PyObject *iscoroutine;            /* asyncio.coroutines.iscoroutine */
    PyObject *iscoroutinefunction;    /* asyncio.coroutines.iscoroutinefunction */
    PyObject *real_type;              /* numbers.Real */
    PyObject *future_type;            /* asyncio.Future */
    PyObject *kwnames_loop;           /* ("loop",): Future(loop=...) */
    PyObject *str_context;            /* "context", the keyword of the scheduling methods */
    PyObject *str_call_exception_handler;
    PyObject *str_report_slow_callback;
    PyObject *str_slow_callback_duration;
    PyObject *str_timer_handle_cancelled;
    PyObject *str_get_debug;
    PyObject *str_message, *str_exception, *str_handle, *str_source_traceback;
} CoreGlobals;

extern CoreGlobals core_globals;

/* Our handles are asyncio's: subclasses of asyncio.Handle and asyncio.TimerHandle (so that
 * isinstance and every attribute work as with asyncio's loops) that keep their state in
 * asyncio's own __slots__. CPython lays slots out in sorted order after the object header,
 * and __weakref__ after them (before the header from 3.12); module.c checks this layout
 * against the running asyncio when the module is imported, and refuses to load otherwise. */
typedef struct {
    PyObject_HEAD
    PyObject *args;     /* a tuple; None once cancelled */
    PyObject *callback; /* None once cancelled */
    PyObject *cancelled; /* Py_True or Py_False */
    PyObject *context;
    PyObject *loop;
    PyObject *repr;             /* kept at cancel() in debug mode, as asyncio does */
    PyObject *source_traceback; /* None unless made in debug mode */
#if PY_VERSION_HEX < 0x030C0000
    PyObject *weakreflist;
#endif
} HandleObject;

typedef struct {
    HandleObject handle;
    PyObject *scheduled; /* Py_True while in the reactor's heap */
    PyObject *when;      /* the deadline as given (asyncio's _when) */
    /* Ours: the heap orders timers by (deadline, sequence). */
    double deadline;
    uint64_t sequence;
} TimerHandleObject;

/* The two handle types, made when the module is imported. */
extern PyTypeObject *Handle_Type;
extern PyTypeObject *TimerHandle_Type;
extern PyTypeObject Reactor_Type;

#define IS_CANCELLED(handle) (((HandleObject *)(handle))->cancelled == Py_True)
#define TimerHandle_Check(op) PyObject_TypeCheck((op), TimerHandle_Type)
#define Reactor_Check(op) PyObject_TypeCheck((op), &Reactor_Type)

/* The exception being raised, taken out of the thread state (a new reference). */
static inline PyObject *
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

/* Raise again what fetch_exception() took (steals the reference). */
static inline void
restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* An array grown to `count` items of `size` bytes: the new array, or NULL with MemoryError
 * set and the old one still in place (PyMem_Resize would overwrite the caller's pointer). */
static inline void *
grow_array(void *array, size_t count, size_t size)
{
    void *grown = count <= PY_SSIZE_T_MAX / size ? PyMem_Realloc(array, count * size) : NULL;
    if (grown == NULL) {
        PyErr_NoMemory();
    }
    return grown;
}

/* Make an array indexed by fd (*table, *size items of `size_of_item` bytes) hold index fd:
 * doubled from 64 items until it does, the new items zeroed. 0, or -1 with MemoryError set and
 * the array as it was. */
static inline int
reserve_fd_table(void **table, int *size, int fd, size_t size_of_item)
{
    if (fd < *size) {
        return 0;
    }
    if (fd < 0 || fd == INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "file descriptor out of range");
        return -1;
    }
    int grown_size = *size ? *size : 64;
    while (grown_size <= fd) {
        grown_size = grown_size > INT_MAX / 2 ? INT_MAX : grown_size * 2;
    }
    char *grown = grow_array(*table, (size_t)grown_size, size_of_item);
    if (grown == NULL) {
        return -1;
    }
    memset(grown + (size_t)*size * size_of_item, 0, (size_t)(grown_size - *size) * size_of_item);
    *table = grown;
    *size = grown_size;
    return 0;
}

static inline void
set_flag(PyObject **slot, int value)
{
    Py_XSETREF(*slot, Py_NewRef(value ? Py_True : Py_False));
}

/* module.c: for METH_FASTCALL functions of two arguments: 1 if nargs is 2, else 0 with a
 * TypeError naming the function. */
int takes_two_arguments(const char *name, Py_ssize_t nargs);

/* module.c: whether asyncio's slot `name` on `type` is an object slot at `offset`. */
int slot_at(PyObject *type, const char *name, Py_ssize_t offset);

/* module.c: one read buffer for every read that copies out what arrived (stream transports,
 * sock_recv). Reads never block and the GIL is held from recv() to the copy, so no two reads
 * share it at once. Reading into a fresh 256 KiB bytes object instead costs an mmap and
 * munmap per read until glibc adapts (see issue 7). */
#define READ_SIZE (256 * 1024)
extern char core_read_buffer[READ_SIZE];

/* stream.c */
int stream_init(PyObject *module);

/* sockops.c */
int sockops_init(PyObject *module);

/* registry.c */
int registry_init(PyObject *module);

/* handles.c */
/* A new handle of our type for callback(*args); context NULL or None: a copy of the current
 * one. */
HandleObject *handle_new(PyTypeObject *type, PyObject *callback, PyObject *args,
                         PyObject *loop, PyObject *context, int debug, int track);
/* Let the collector see a handle made untracked (a no-op if it already does). */
void handle_track(HandleObject *handle);
int handles_init(PyObject *module);
/* Run the callback in its context; errors go to the loop's exception handler. -1 only for
 * what must stop the loop (SystemExit, KeyboardInterrupt), with the exception set. */
int handle_run(HandleObject *handle);
PyObject *handle_cancel_impl(HandleObject *handle);

/* reactor.c */
int reactor_debug(PyObject *loop); /* the loop's debug flag; -1 on error */
void reactor_timer_cancelled(PyObject *loop, TimerHandleObject *timer);
int reactor_module_init(PyObject *module);

#endif
