/* The reactor in C: one epoll instance, one timerfd, one eventfd.
 *
 * The same contract, the same step and the same kernel facts as epolloop/_reactor.py, whose
 * docstring is the reference; this file says only what is particular to C. ``Loop`` derives
 * from this type, so call_soon & co. below are the loop's own methods with no Python frame in
 * between — they are the hottest code in the package and are written for speed on purpose.
 *
 * The state, all guarded by the GIL (which call_soon_threadsafe holds too, so the ready queue
 * needs no lock of its own):
 *   - watchers: an array indexed by fd number: the reader and writer handles registered with
 *     epoll for that fd (an fd with neither is not registered), and the object it was given
 *     as, so it can still be removed after that object is closed;
 *   - ready: a ring buffer of the handles to run in the next step;
 *   - timers: a binary heap of TimerHandles ordered by (when, sequence); cancelled ones stay
 *     until they reach the top or the heap is compacted;
 *   - polling: set, with the GIL held, before the last look at the ready queue that precedes
 *     a blocking epoll_wait, so another thread that appends after that look sees it and writes
 *     the eventfd.
 */
#include "core.h"

#include <errno.h>
#include <math.h>
#include <structmember.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 1024
/* Compact the timer heap when more than half of it (and more than this many) is cancelled. */
#define MIN_TIMERS_TO_COMPACT 100
/* The latest deadline handed to the kernel (~146 years of uptime); see _linux._deadline_ns. */
#define FAR_FUTURE_NS ((double)(1LL << 62))

enum { READ = 0, WRITE = 1 };
static const uint32_t INTEREST[2] = {EPOLLIN, EPOLLOUT};
static const char *const WATCH_METHOD[2] = {"add_reader", "add_writer"};

typedef struct {
    HandleObject *handle[2]; /* reader, writer */
    PyObject *fileobj;       /* what it was registered as, when not an int */
    /* A waiting reader (_add_waiting_reader): its registration is one-shot; fired: the
     * kernel disarmed it; parked: no watcher, the disarmed registration left in the kernel. */
    char waiting, fired, parked;
} Watchers;

typedef struct {
    int *fds;
    int len, size;
} FdList;

typedef struct ReactorObject {
    PyObject_HEAD
    PyObject *weakreflist;
    int epoll_fd, timer_fd, wakeup_fd;
    char armed;            /* the timerfd holds armed_deadline */
    char timer_expired;    /* it fired and polls readable until set again (never read) */
    double armed_deadline;
    Watchers *watchers;
    int watchers_size;
    /* fds whose waiting reader fired in the last step and in the one before: see
     * rearm_waiting_readers */
    FdList fired_last, fired_earlier;
    HandleObject **ready;
    Py_ssize_t ready_head, ready_len, ready_capacity; /* capacity: a power of two */
    TimerHandleObject **timers;
    Py_ssize_t timers_len, timers_capacity, cancelled_timers;
    uint64_t timer_sequence;
    char closed, debug, stopping, polling;
    PyObject *thread_id;
    PyObject *current_handle;
    /* A `time` set on the loop itself (mock.patch.object(loop, "time")), which is then the
     * scheduler's clock, as asyncio's scheduler calls self.time(); NULL: CLOCK_MONOTONIC. */
    PyObject *clock;
    struct ReactorObject *live_prev, *live_next; /* every open reactor, for fork */
    struct epoll_event events[MAX_EVENTS];
} ReactorObject;

static ReactorObject *live_reactors;

static inline double
monotonic_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* The scheduler's clock: see ReactorObject.clock. */
static int
scheduler_now(ReactorObject *self, double *now)
{
    if (self->clock == NULL) {
        *now = monotonic_now();
        return 0;
    }
    PyObject *result = PyObject_CallNoArgs(self->clock);
    *now = result ? PyFloat_AsDouble(result) : -1.0;
    Py_XDECREF(result);
    return *now == -1.0 && PyErr_Occurred() ? -1 : 0;
}

int
reactor_debug(PyObject *loop)
{
    if (Reactor_Check(loop)) {
        return ((ReactorObject *)loop)->debug;
    }
    PyObject *debug = PyObject_CallMethodNoArgs(loop, core_globals.str_get_debug);
    if (debug == NULL) {
        return -1;
    }
    int result = PyObject_IsTrue(debug);
    Py_DECREF(debug);
    return result;
}

void
reactor_timer_cancelled(PyObject *loop, TimerHandleObject *timer)
{
    if (timer->scheduled == Py_True) {
        ((ReactorObject *)loop)->cancelled_timers++;
    }
}

/* -- the ready queue -------------------------------------------------------------------- */

static int
ready_grow(ReactorObject *self)
{
    Py_ssize_t capacity = self->ready_capacity ? self->ready_capacity * 2 : 64;
    HandleObject **ready = PyMem_New(HandleObject *, capacity);
    if (ready == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->ready_len; i++) {
        ready[i] = self->ready[(self->ready_head + i) & (self->ready_capacity - 1)];
    }
    PyMem_Free(self->ready);
    self->ready = ready;
    self->ready_head = 0;
    self->ready_capacity = capacity;
    return 0;
}

/* Append a handle (a new reference is taken). */
static inline int
ready_push(ReactorObject *self, HandleObject *handle)
{
    if (self->ready_len == self->ready_capacity && ready_grow(self) < 0) {
        return -1;
    }
    self->ready[(self->ready_head + self->ready_len) & (self->ready_capacity - 1)] =
        (HandleObject *)Py_NewRef(handle);
    self->ready_len++;
    return 0;
}

/* Drop the queue's reference to a handle it held; a handle that lives on elsewhere may now
 * be part of a cycle, so the collector is told of it (see handles.c). */
static inline void
release_handle(HandleObject *handle)
{
    if (Py_REFCNT(handle) > 1) {
        handle_track(handle);
    }
    Py_DECREF(handle);
}

/* Take the first handle (the reference passes to the caller). */
static inline HandleObject *
ready_pop(ReactorObject *self)
{
    HandleObject *handle = self->ready[self->ready_head];
    self->ready_head = (self->ready_head + 1) & (self->ready_capacity - 1);
    self->ready_len--;
    return handle;
}

/* -- the timer heap --------------------------------------------------------------------- */

static inline int
timer_before(TimerHandleObject *a, TimerHandleObject *b)
{
    return a->deadline < b->deadline ||
           (a->deadline == b->deadline && a->sequence < b->sequence);
}

static void
heap_sift_up(TimerHandleObject **heap, Py_ssize_t i)
{
    TimerHandleObject *item = heap[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!timer_before(item, heap[parent])) {
            break;
        }
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = item;
}

static void
heap_sift_down(TimerHandleObject **heap, Py_ssize_t len, Py_ssize_t i)
{
    TimerHandleObject *item = heap[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= len) {
            break;
        }
        if (child + 1 < len && timer_before(heap[child + 1], heap[child])) {
            child++;
        }
        if (!timer_before(heap[child], item)) {
            break;
        }
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = item;
}

/* Remove the earliest timer (the heap's reference passes to the caller). */
static TimerHandleObject *
heap_pop(ReactorObject *self)
{
    TimerHandleObject *top = self->timers[0];
    self->timers_len--;
    if (self->timers_len > 0) {
        self->timers[0] = self->timers[self->timers_len];
        heap_sift_down(self->timers, self->timers_len, 0);
    }
    set_flag(&top->scheduled, 0);
    return top;
}

static int
heap_push(ReactorObject *self, TimerHandleObject *timer)
{
    if (self->timers_len == self->timers_capacity) {
        Py_ssize_t capacity = self->timers_capacity ? self->timers_capacity * 2 : 64;
        TimerHandleObject **timers =
            grow_array(self->timers, (size_t)capacity, sizeof(TimerHandleObject *));
        if (timers == NULL) {
            return -1;
        }
        self->timers = timers;
        self->timers_capacity = capacity;
    }
    timer->sequence = self->timer_sequence++;
    set_flag(&timer->scheduled, 1);
    self->timers[self->timers_len] = (TimerHandleObject *)Py_NewRef(timer);
    heap_sift_up(self->timers, self->timers_len);
    self->timers_len++;
    return 0;
}

static void
compact_timers(ReactorObject *self)
{
    Py_ssize_t live = 0;
    for (Py_ssize_t i = 0; i < self->timers_len; i++) {
        TimerHandleObject *timer = self->timers[i];
        if (IS_CANCELLED(timer)) {
            set_flag(&timer->scheduled, 0);
            release_handle(&timer->handle);
        }
        else {
            self->timers[live++] = timer;
        }
    }
    self->timers_len = live;
    for (Py_ssize_t i = live / 2 - 1; i >= 0; i--) {
        heap_sift_down(self->timers, live, i);
    }
    self->cancelled_timers = 0;
}

/* Make sure the timerfd fires no later than the earliest live deadline; re-armed only for an
 * earlier one (see _reactor.Reactor._arm_timerfd). */
static int
arm_timerfd(ReactorObject *self)
{
    while (self->timers_len > 0 && IS_CANCELLED(self->timers[0])) {
        release_handle(&heap_pop(self)->handle);
        self->cancelled_timers--;
    }
    if (self->timers_len == 0) {
        /* Disarming clears an expiration as arming does; else it would wake every wait. */
        if (self->timer_expired) {
            struct itimerspec disarm = {{0, 0}, {0, 0}};
            if (timerfd_settime(self->timer_fd, 0, &disarm, NULL) < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            self->timer_expired = 0;
        }
        return 0;
    }
    double deadline = self->timers[0]->deadline;
    if (self->armed && !(deadline < self->armed_deadline)) {
        return 0;
    }
    /* Rounded up to the nanosecond, never down: a timer must not fire early. 0 would disarm
     * and a negative value is refused, so a deadline at or before the epoch becomes 1 ns. */
    double ns = deadline * 1e9;
    ns = ns < 1 ? 1 : !(ns < FAR_FUTURE_NS) ? FAR_FUTURE_NS : ceil(ns);
    long long whole = (long long)ns;
    struct itimerspec spec = {
        .it_value = {.tv_sec = whole / 1000000000LL, .tv_nsec = whole % 1000000000LL},
    };
    if (timerfd_settime(self->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->armed = 1;
    self->armed_deadline = deadline;
    self->timer_expired = 0; /* setting it cleared any expiration not yet seen */
    return 0;
}

/* -- checks, off the fast paths --------------------------------------------------------- */

static int
check_thread(ReactorObject *self)
{
    if (self->thread_id == NULL || self->thread_id == Py_None) {
        return 0;
    }
    PyObject *current = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (current == NULL) {
        return -1;
    }
    int same = PyObject_RichCompareBool(current, self->thread_id, Py_EQ);
    Py_DECREF(current);
    if (same < 0) {
        return -1;
    }
    if (!same) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop other than the "
                        "current one");
        return -1;
    }
    return 0;
}

static int
is_coroutine(PyObject *test, PyObject *callback)
{
    PyObject *result = PyObject_CallOneArg(test, callback);
    if (result == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* What cannot be called is always refused; debug mode adds asyncio's fuller checks (the
 * thread check only where asyncio makes it: call_soon, call_later, call_at). */
static int
check_callback(ReactorObject *self, PyObject *callback, const char *method, int check_thread_too)
{
    int coroutine;
    if (self->debug) {
        if (check_thread_too && check_thread(self) < 0) {
            return -1;
        }
        coroutine = is_coroutine(core_globals.iscoroutine, callback);
        if (coroutine == 0) {
            coroutine = is_coroutine(core_globals.iscoroutinefunction, callback);
        }
        if (coroutine < 0) {
            return -1;
        }
        if (coroutine) {
            PyErr_Format(PyExc_TypeError, "coroutines cannot be used with %s()", method);
            return -1;
        }
    }
    if (!PyCallable_Check(callback)) {
        coroutine = is_coroutine(core_globals.iscoroutine, callback);
        if (coroutine < 0) {
            return -1;
        }
        if (coroutine) {
            PyErr_Format(PyExc_TypeError, "coroutines cannot be used with %s()", method);
        }
        else {
            PyErr_Format(PyExc_TypeError, "a callable object was expected by %s(), got %R",
                         method, callback);
        }
        return -1;
    }
    return 0;
}

/* The scheduling methods come here only when the loop is closed, in debug mode, or for a
 * callback that cannot be called. */
static int
check_call(ReactorObject *self, PyObject *callback, const char *method, int check_thread_too)
{
    if (self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return check_callback(self, callback, method, check_thread_too);
}

#define NEEDS_CHECK(self, callback) \
    ((self)->closed || (self)->debug || !PyCallable_Check(callback))

/* -- time and callbacks ----------------------------------------------------------------- */

/* The keyword arguments of the scheduling methods: only context=. */
static int
parse_context(PyObject *kwnames, PyObject *const *kwargs, const char *method, PyObject **context)
{
    *context = NULL;
    if (kwnames == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (name != core_globals.str_context &&
            PyUnicode_Compare(name, core_globals.str_context) != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         method, name);
            return -1;
        }
        *context = kwargs[i];
    }
    return 0;
}

static int
require_args(Py_ssize_t nargs, Py_ssize_t needed, const char *method, const char *names)
{
    if (nargs >= needed) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s() missing required positional arguments: %s", method,
                 names);
    return -1;
}

static PyObject *
Reactor_time(ReactorObject *Py_UNUSED(self), PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(monotonic_now());
}

static PyObject *
Reactor_get_debug(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

/* Hot path (every sleep, read wait and gather makes a future): asyncio.Future(loop=self). */
static PyObject *
Reactor_create_future(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args[] = {(PyObject *)self};
    return PyObject_Vectorcall(core_globals.future_type, args, 0, core_globals.kwnames_loop);
}

/* Hot path: a Handle for callback(*args) at the end of the ready queue. */
static HandleObject *
schedule_soon(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              const char *method, int check_thread_too)
{
    PyObject *context;
    if (parse_context(kwnames, args + nargs, method, &context) < 0 ||
        require_args(nargs, 1, method, "'callback'") < 0) {
        return NULL;
    }
    PyObject *callback = args[0];
    if (NEEDS_CHECK(self, callback) && check_call(self, callback, method, check_thread_too) < 0) {
        return NULL;
    }
    PyObject *callback_args = PyTuple_New(nargs - 1);
    if (callback_args == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyTuple_SET_ITEM(callback_args, i - 1, Py_NewRef(args[i]));
    }
    if (nargs > 1) {
        PyObject_GC_UnTrack(callback_args); /* tracked with its handle (handles.c) */
    }
    HandleObject *handle = handle_new(Handle_Type, callback, callback_args, (PyObject *)self,
                                      context, self->debug, 0);
    Py_DECREF(callback_args);
    if (handle == NULL) {
        return NULL;
    }
    if (ready_push(self, handle) < 0) {
        Py_DECREF(handle);
        return NULL;
    }
    return handle;
}

static PyObject *
Reactor_call_soon(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    return (PyObject *)schedule_soon(self, args, nargs, kwnames, "call_soon", 1);
}

static void
wake_up(ReactorObject *self)
{
    uint64_t one = 1;
    /* EAGAIN: the counter is saturated, and the loop is certain to wake anyway. */
    if (write(self->wakeup_fd, &one, sizeof one) < 0) {
        return;
    }
}

static PyObject *
Reactor_call_soon_threadsafe(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    HandleObject *handle = schedule_soon(self, args, nargs, kwnames, "call_soon_threadsafe", 0);
    /* Only while the loop may sleep, and once: after one write the loop is certain to run
     * its next step (a burst from another thread would otherwise make a syscall per call).
     * The GIL orders this against close(): a closed loop has refused the call above. */
    if (handle != NULL && self->polling && !self->closed) {
        self->polling = 0;
        wake_up(self);
    }
    return (PyObject *)handle;
}

/* A TimerHandle for args[1](*args[2:]) due at deadline; when: the deadline as asyncio keeps
 * it (stolen). */
static PyObject *
schedule_timer(ReactorObject *self, double deadline, PyObject *when, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames, const char *method)
{
    PyObject *context;
    PyObject *callback = args[1];
    if (when == NULL || parse_context(kwnames, args + nargs, method, &context) < 0 ||
        (NEEDS_CHECK(self, callback) && check_call(self, callback, method, 1) < 0)) {
        Py_XDECREF(when);
        return NULL;
    }
    if (isnan(deadline)) {
        /* A NaN deadline is never due and would stall every timer behind it in the heap. */
        PyErr_SetString(PyExc_ValueError, "the deadline of a timer cannot be NaN");
        Py_DECREF(when);
        return NULL;
    }
    PyObject *callback_args = PyTuple_New(nargs - 2);
    if (callback_args == NULL) {
        Py_DECREF(when);
        return NULL;
    }
    for (Py_ssize_t i = 2; i < nargs; i++) {
        PyTuple_SET_ITEM(callback_args, i - 2, Py_NewRef(args[i]));
    }
    if (nargs > 2) {
        PyObject_GC_UnTrack(callback_args); /* tracked with its handle (handles.c) */
    }
    TimerHandleObject *timer = (TimerHandleObject *)handle_new(
        TimerHandle_Type, callback, callback_args, (PyObject *)self, context, self->debug, 0);
    Py_DECREF(callback_args);
    if (timer == NULL) {
        Py_DECREF(when);
        return NULL;
    }
    timer->when = when;
    timer->deadline = deadline;
    if (heap_push(self, timer) < 0) {
        Py_DECREF(timer);
        return NULL;
    }
    return (PyObject *)timer;
}

static PyObject *
Reactor_call_later(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    if (require_args(nargs, 2, "call_later", "'delay' and 'callback'") < 0) {
        return NULL;
    }
    PyObject *delay = args[0];
    double now, when;
    if (scheduler_now(self, &now) < 0) {
        return NULL;
    }
    if (PyFloat_CheckExact(delay)) {
        when = now + PyFloat_AS_DOUBLE(delay);
    }
    else if (PyLong_CheckExact(delay)) {
        when = now + PyLong_AsDouble(delay);
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    else if (delay == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return NULL;
    }
    else {
        /* Whatever "now + delay" makes of it, with the TypeError that makes for a non-number. */
        PyObject *start = PyFloat_FromDouble(now);
        PyObject *sum = start ? PyNumber_Add(start, delay) : NULL;
        Py_XDECREF(start);
        if (sum == NULL) {
            return NULL;
        }
        when = PyFloat_AsDouble(sum);
        Py_DECREF(sum);
        if (when == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
    }
    return schedule_timer(self, when, PyFloat_FromDouble(when), args, nargs, kwnames,
                          "call_later");
}

static PyObject *
Reactor_call_at(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (require_args(nargs, 2, "call_at", "'when' and 'callback'") < 0) {
        return NULL;
    }
    PyObject *when = args[0];
    double deadline;
    if (PyFloat_CheckExact(when)) {
        deadline = PyFloat_AS_DOUBLE(when);
    }
    else {
        if (when == Py_None) {
            PyErr_SetString(PyExc_TypeError, "when cannot be None");
            return NULL;
        }
        int real = PyLong_Check(when) || PyFloat_Check(when) ||
                   PyObject_IsInstance(when, core_globals.real_type);
        if (real <= 0) {
            if (real == 0) {
                PyErr_Format(PyExc_TypeError, "when must be a number, got %R", when);
            }
            return NULL;
        }
        deadline = PyFloat_AsDouble(when);
        if (deadline == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
    }
    return schedule_timer(self, deadline, Py_NewRef(when), args, nargs, kwnames, "call_at");
}

static PyObject *
Reactor_timer_handle_cancelled(ReactorObject *self, PyObject *handle)
{
    if (TimerHandle_Check(handle)) {
        reactor_timer_cancelled((PyObject *)self, (TimerHandleObject *)handle);
    }
    Py_RETURN_NONE;
}

static PyObject *
Reactor_check_callback(ReactorObject *self, PyObject *args)
{
    PyObject *callback;
    const char *method;
    int check_thread_too = 0;
    if (!PyArg_ParseTuple(args, "Os|p:_check_callback", &callback, &method, &check_thread_too) ||
        check_callback(self, callback, method, check_thread_too) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Reactor_check_thread(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_thread(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- file descriptors ------------------------------------------------------------------- */

static inline Watchers *
watchers_of(ReactorObject *self, int fd)
{
    if (fd >= self->watchers_size) {
        return NULL;
    }
    Watchers *watchers = &self->watchers[fd];
    return watchers->handle[READ] || watchers->handle[WRITE] ? watchers : NULL;
}

static int
watchers_reserve(ReactorObject *self, int fd)
{
    return reserve_fd_table((void **)&self->watchers, &self->watchers_size, fd, sizeof(Watchers));
}

static int
epoll_set(ReactorObject *self, int op, int fd, uint32_t events)
{
    struct epoll_event event = {.events = events, .data.fd = fd};
    return epoll_ctl(self->epoll_fd, op, fd, &event);
}

static uint32_t
interest_of(Watchers *watchers, int direction)
{
    return watchers->handle[direction] ? INTEREST[direction] : 0;
}

static int
cancel_and_release(HandleObject *handle)
{
    if (handle == NULL) {
        return 0;
    }
    PyObject *result = handle_cancel_impl(handle);
    Py_DECREF(handle);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* Drop a table entry whose kernel registration is already gone. */
static int
forget(ReactorObject *self, int fd)
{
    Watchers *watchers = &self->watchers[fd];
    HandleObject *reader = watchers->handle[READ], *writer = watchers->handle[WRITE];
    watchers->handle[READ] = watchers->handle[WRITE] = NULL;
    watchers->waiting = watchers->fired = 0;
    Py_CLEAR(watchers->fileobj);
    int status = cancel_and_release(reader);
    return cancel_and_release(writer) < 0 ? -1 : status;
}

/* Register a handle for callback(*args) on fd in one direction (replacing any previous one);
 * a new reference to the handle. fileobj: the object the fd was given as, or NULL. */
static HandleObject *
watch(ReactorObject *self, int fd, int direction, PyObject *callback, PyObject *args,
      PyObject *fileobj, int waiting)
{
    if (NEEDS_CHECK(self, callback) &&
        check_call(self, callback, WATCH_METHOD[direction], 0) < 0) {
        return NULL;
    }
    Watchers *watchers = watchers_of(self, fd);
    waiting = waiting && (watchers == NULL || watchers->handle[WRITE] == NULL);
    uint32_t events = waiting ? EPOLLIN | EPOLLONESHOT
                              : INTEREST[direction] |
                                    (watchers ? interest_of(watchers, 1 - direction) : 0);
    if (watchers == NULL) {
        int status;
        if (fd < self->watchers_size && self->watchers[fd].parked) {
            /* Its disarmed registration is modified; if the kernel dropped it with its file
             * (the number now names another), one is added. */
            self->watchers[fd].parked = 0;
            status = epoll_set(self, EPOLL_CTL_MOD, fd, events);
            if (status < 0 && errno == ENOENT) {
                status = epoll_set(self, EPOLL_CTL_ADD, fd, events);
            }
        }
        else {
            /* Bad fds fail here, before the table grows to their number. */
            status = epoll_set(self, EPOLL_CTL_ADD, fd, events);
        }
        if (status < 0) {
            return (HandleObject *)PyErr_SetFromErrno(PyExc_OSError);
        }
        if (watchers_reserve(self, fd) < 0) {
            epoll_set(self, EPOLL_CTL_DEL, fd, 0);
            return NULL;
        }
    }
    else if (epoll_set(self, EPOLL_CTL_MOD, fd, events) < 0) {
        int error = errno;
        if (forget(self, fd) < 0) {
            return NULL;
        }
        /* ENOENT: the fd was closed without being unwatched and its number reused; the
         * kernel dropped the old registration with the old file. Start afresh, with none of
         * the stale entry's interest. */
        events &= INTEREST[direction] | EPOLLONESHOT;
        if (error != ENOENT || epoll_set(self, EPOLL_CTL_ADD, fd, events) < 0) {
            errno = error == ENOENT ? errno : error;
            return (HandleObject *)PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    self->watchers[fd].waiting = (char)waiting;
    self->watchers[fd].fired = 0;
    HandleObject *handle =
        handle_new(Handle_Type, callback, args, (PyObject *)self, NULL, self->debug, 1);
    watchers = &self->watchers[fd];
    if (handle == NULL) {
        if (watchers->handle[1 - direction] == NULL) {
            epoll_set(self, EPOLL_CTL_DEL, fd, 0);
        }
        return NULL;
    }
    HandleObject *previous = watchers->handle[direction];
    watchers->handle[direction] = (HandleObject *)Py_NewRef(handle);
    if (fileobj != NULL) {
        Py_XSETREF(watchers->fileobj, Py_NewRef(fileobj));
    }
    if (cancel_and_release(previous) < 0) {
        Py_DECREF(handle);
        return NULL;
    }
    return handle;
}

/* 1 if a watcher was removed, 0 if there was none, -1 on error. */
static int
unwatch(ReactorObject *self, int fd, int direction)
{
    Watchers *watchers = self->closed ? NULL : watchers_of(self, fd);
    if (watchers == NULL || watchers->handle[direction] == NULL) {
        return 0;
    }
    HandleObject *handle = watchers->handle[direction];
    watchers->handle[direction] = NULL;
    if (watchers->handle[1 - direction] == NULL) {
        if (watchers->waiting && watchers->fired) {
            watchers->parked = 1; /* disarmed by the kernel when it fired: left there */
        }
        else {
            /* Failing means it was already closed: the registration went with the file. */
            epoll_set(self, EPOLL_CTL_DEL, fd, 0);
        }
        watchers->waiting = watchers->fired = 0;
        Py_CLEAR(watchers->fileobj); /* last: it may run code that grows the table */
    }
    else if (epoll_set(self, EPOLL_CTL_MOD, fd, INTEREST[1 - direction]) < 0) {
        /* Closed while the other direction was still watched: nothing can fire. */
        if (forget(self, fd) < 0) {
            Py_DECREF(handle);
            return -1;
        }
    }
    return cancel_and_release(handle) < 0 ? -1 : 1;
}

/* An fd from an int or an object with fileno(), with the errors selectors raise. */
static long
fileobj_to_fd(PyObject *fileobj)
{
    long fd;
    if (PyLong_Check(fileobj)) {
        fd = PyLong_AsLong(fileobj);
    }
    else {
        PyObject *number = PyObject_CallMethod(fileobj, "fileno", NULL);
        if (number != NULL) {
            PyObject *integer = PyNumber_Long(number);
            Py_DECREF(number);
            number = integer;
        }
        if (number == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
                PyErr_ExceptionMatches(PyExc_TypeError) ||
                PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
            }
            return -1;
        }
        fd = PyLong_AsLong(number);
        Py_DECREF(number);
    }
    if (fd == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -1;
    }
    return fd;
}

/* The fd an object was registered as: its fileno(), or, once it is closed (fileno() says -1),
 * the fd it was registered under, found by the object itself as asyncio's selectors do. */
static long
registered_fd(ReactorObject *self, PyObject *fileobj)
{
    long fd = fileobj_to_fd(fileobj);
    if (fd >= 0 || !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return fd;
    }
    for (int i = 0; i < self->watchers_size; i++) {
        if (self->watchers[i].fileobj == fileobj && watchers_of(self, i) != NULL) {
            PyErr_Clear();
            return i;
        }
    }
    return -1;
}

static PyObject *
watch_method(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs, int direction,
             int public, int waiting)
{
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%s() missing required positional arguments: 'fd' and "
                     "'callback'", WATCH_METHOD[direction]);
        return NULL;
    }
    long fd = fileobj_to_fd(args[0]);
    if (fd < 0) {
        return NULL;
    }
    if (fd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "file descriptor is greater than maximum");
        return NULL;
    }
    PyObject *callback_args = PyTuple_New(nargs - 2);
    if (callback_args == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 2; i < nargs; i++) {
        PyTuple_SET_ITEM(callback_args, i - 2, Py_NewRef(args[i]));
    }
    HandleObject *handle = watch(self, (int)fd, direction, args[1], callback_args,
                                 PyLong_Check(args[0]) ? NULL : args[0], waiting);
    Py_DECREF(callback_args);
    if (handle == NULL || !public) {
        return (PyObject *)handle;
    }
    Py_DECREF(handle);
    Py_RETURN_NONE;
}

static PyObject *
unwatch_method(ReactorObject *self, PyObject *fileobj, int direction, int public)
{
    long fd = public ? registered_fd(self, fileobj) : fileobj_to_fd(fileobj);
    if (fd < 0) {
        return NULL;
    }
    int removed = fd < self->watchers_size ? unwatch(self, (int)fd, direction) : 0;
    if (removed < 0) {
        return NULL;
    }
    return PyBool_FromLong(removed);
}

static PyObject *
Reactor_add_reader(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return watch_method(self, args, nargs, READ, 1, 0);
}

static PyObject *
Reactor_add_writer(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return watch_method(self, args, nargs, WRITE, 1, 0);
}

static PyObject *
Reactor_remove_reader(ReactorObject *self, PyObject *fd)
{
    return unwatch_method(self, fd, READ, 1);
}

static PyObject *
Reactor_remove_writer(ReactorObject *self, PyObject *fd)
{
    return unwatch_method(self, fd, WRITE, 1);
}

/* The loop's own users (transports, sock_* operations) pass int fds and want the handle. */

static PyObject *
Reactor_internal_add_reader(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return watch_method(self, args, nargs, READ, 0, 0);
}

/* A reader for one sock_* wait: see _reactor.py's _add_waiting_reader. */
static PyObject *
Reactor_internal_add_waiting_reader(ReactorObject *self, PyObject *const *args,
                                    Py_ssize_t nargs)
{
    return watch_method(self, args, nargs, READ, 0, 1);
}

static PyObject *
Reactor_internal_add_writer(ReactorObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return watch_method(self, args, nargs, WRITE, 0, 0);
}

static PyObject *
Reactor_internal_remove_reader(ReactorObject *self, PyObject *fd)
{
    return unwatch_method(self, fd, READ, 0);
}

static PyObject *
Reactor_internal_remove_writer(ReactorObject *self, PyObject *fd)
{
    return unwatch_method(self, fd, WRITE, 0);
}

/* -- running ---------------------------------------------------------------------------- */

static PyObject *
Reactor_stop(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    self->stopping = 1;
    Py_RETURN_NONE;
}

/* Room in fired_last for every event one poll can return, made before the poll: an event
 * of a one-shot registration that was taken from the kernel and then not noted would never
 * be re-armed. */
static int
reserve_fired(ReactorObject *self)
{
    FdList *list = &self->fired_last;
    if (list->size - list->len >= MAX_EVENTS) {
        return 0;
    }
    int size = list->len + MAX_EVENTS;
    int *fds = grow_array(list->fds, (size_t)size, sizeof(int));
    if (fds == NULL) {
        return -1;
    }
    list->fds = fds;
    list->size = size;
    return 0;
}

/* A waiting reader's one-shot registration fired: the kernel disarmed it (reserve_fired made
 * the room). */
static void
note_fired(ReactorObject *self, int fd)
{
    self->watchers[fd].fired = 1;
    self->fired_last.fds[self->fired_last.len++] = fd;
}

/* Re-arm the waiting readers that fired and still wait: see _reactor.py's
 * _rearm_waiting_readers (every: before a blocking poll, those that fired last step too). */
static int
rearm_fds(ReactorObject *self, const FdList *list)
{
    for (int i = 0; i < list->len; i++) {
        int fd = list->fds[i];
        Watchers *watchers = watchers_of(self, fd);
        if (watchers == NULL || !watchers->waiting || !watchers->fired) {
            continue;
        }
        if (epoll_set(self, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLONESHOT) < 0) {
            if (forget(self, fd) < 0) { /* closed under the wait: nothing can fire */
                return -1;
            }
            continue;
        }
        watchers->fired = 0;
    }
    return 0;
}

static int
rearm_waiting_readers(ReactorObject *self, int every)
{
    if (rearm_fds(self, &self->fired_earlier) < 0 ||
        (every && rearm_fds(self, &self->fired_last) < 0)) {
        return -1;
    }
    FdList earlier = self->fired_earlier;
    earlier.len = 0;
    if (every) {
        self->fired_last.len = 0;
    }
    self->fired_earlier = self->fired_last;
    self->fired_last = earlier;
    return 0;
}

/* Queue the callbacks of the ready fds. */
static int
dispatch_events(ReactorObject *self, int count)
{
    for (int i = 0; i < count; i++) {
        int fd = self->events[i].data.fd;
        uint32_t mask = self->events[i].events;
        Watchers *watchers = watchers_of(self, fd);
        if (watchers != NULL) {
            /* Everything but "writable" concerns the reader, everything but "readable" the
             * writer: the callback sees the error when it touches the fd. */
            for (int direction = READ; direction <= WRITE; direction++) {
                watchers = watchers_of(self, fd);
                HandleObject *handle = watchers ? watchers->handle[direction] : NULL;
                if (handle == NULL || !(mask & ~INTEREST[1 - direction])) {
                    continue;
                }
                if (direction == READ && watchers->waiting) {
                    note_fired(self, fd);
                }
                if (IS_CANCELLED(handle) ? unwatch(self, fd, direction) < 0
                                      : ready_push(self, handle) < 0) {
                    return -1;
                }
            }
        }
        else if (fd == self->timer_fd) {
            /* Not read: arm_timerfd's next timerfd_settime clears the expiration (see
             * _reactor.py), a syscall fewer per wake-up. */
            self->armed = 0;
            self->timer_expired = 1;
        }
        else if (fd == self->wakeup_fd) {
            /* Drain the counter so the fd stops polling readable; EAGAIN only means there
             * was nothing to take. */
            uint64_t counter;
            if (read(fd, &counter, sizeof counter) < 0 && errno != EAGAIN) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
        }
    }
    return 0;
}

/* Queue every timer whose deadline has passed, in deadline order. */
static int
queue_due_timers(ReactorObject *self)
{
    if (self->timers_len == 0) {
        return 0;
    }
    double now;
    if (scheduler_now(self, &now) < 0) {
        return -1;
    }
    while (self->timers_len > 0 && self->timers[0]->deadline <= now) {
        TimerHandleObject *timer = heap_pop(self);
        int status = 0;
        if (IS_CANCELLED(timer)) {
            self->cancelled_timers--;
        }
        else {
            status = ready_push(self, &timer->handle);
        }
        release_handle(&timer->handle);
        if (status < 0) {
            return -1;
        }
    }
    return 0;
}

/* The run phase in debug mode: time every callback and report the slow ones. */
static int
run_ready_debug(ReactorObject *self, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count && self->ready_len > 0; i++) {
        HandleObject *handle = ready_pop(self);
        if (IS_CANCELLED(handle)) {
            release_handle(handle);
            continue;
        }
        Py_XSETREF(self->current_handle, Py_NewRef(handle));
        double started = monotonic_now();
        int status = handle_run(handle);
        double elapsed = monotonic_now() - started;
        if (status == 0) {
            PyObject *limit =
                PyObject_GetAttr((PyObject *)self, core_globals.str_slow_callback_duration);
            double slow = limit ? PyFloat_AsDouble(limit) : -1.0;
            Py_XDECREF(limit);
            if (PyErr_Occurred()) {
                status = -1;
            }
            else if (elapsed >= slow) {
                PyObject *seconds = PyFloat_FromDouble(elapsed);
                PyObject *result = seconds ? PyObject_CallMethodObjArgs(
                                                 (PyObject *)self,
                                                 core_globals.str_report_slow_callback,
                                                 (PyObject *)handle, seconds, NULL)
                                           : NULL;
                status = result ? 0 : -1;
                Py_XDECREF(result);
                Py_XDECREF(seconds);
            }
        }
        Py_CLEAR(self->current_handle);
        release_handle(handle);
        if (status < 0) {
            return -1;
        }
    }
    return 0;
}

/* The poll's timeout in ms while a `time` set on the loop is the clock: until the earliest
 * timer is due by it, as asyncio computes it (-1: no timer). */
static int
timeout_by_clock(ReactorObject *self, int *timeout)
{
    double now;
    if (self->timers_len == 0) {
        *timeout = -1;
        return 0;
    }
    if (scheduler_now(self, &now) < 0) {
        return -1;
    }
    double ms = ceil((self->timers[0]->deadline - now) * 1e3);
    *timeout = ms < 0 ? 0 : ms > 86400e3 ? 86400000 : (int)ms;
    return 0;
}

static int
run_once(ReactorObject *self)
{
    if (self->cancelled_timers > MIN_TIMERS_TO_COMPACT &&
        2 * self->cancelled_timers > self->timers_len) {
        compact_timers(self);
    }
    if ((self->fired_last.len > 0 || self->fired_earlier.len > 0) &&
        rearm_waiting_readers(self, self->ready_len == 0 && !self->stopping) < 0) {
        return -1;
    }
    if (reserve_fired(self) < 0) {
        return -1;
    }
    int count;
    if (self->ready_len > 0 || self->stopping) {
        count = epoll_wait(self->epoll_fd, self->events, MAX_EVENTS, 0);
    }
    else {
        int timeout = -1;
        if (self->clock != NULL) {
            /* Not the timerfd, which knows only the real clock: asyncio's timeout. */
            if (timeout_by_clock(self, &timeout) < 0) {
                return -1;
            }
        }
        else if (arm_timerfd(self) < 0) {
            return -1;
        }
        self->polling = 1;
        Py_BEGIN_ALLOW_THREADS
        count = epoll_wait(self->epoll_fd, self->events, MAX_EVENTS, timeout);
        Py_END_ALLOW_THREADS
        self->polling = 0;
    }
    if (count < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        /* A signal: its Python handler runs now (KeyboardInterrupt leaves from here, as it
         * does from asyncio's select()); the next step waits again. */
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        count = 0;
    }
    if (dispatch_events(self, count) < 0 || queue_due_timers(self) < 0) {
        return -1;
    }
    /* Exactly the callbacks queued so far; what they schedule waits for the next step. */
    Py_ssize_t ready = self->ready_len;
    if (self->debug) {
        return run_ready_debug(self, ready);
    }
    for (Py_ssize_t i = 0; i < ready && self->ready_len > 0; i++) {
        HandleObject *handle = ready_pop(self);
        int status = IS_CANCELLED(handle) ? 0 : handle_run(handle);
        release_handle(handle);
        if (status < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
Reactor_run_once(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    if (run_once(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Reactor_run_until_stopped(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    do {
        if (run_once(self) < 0) {
            return NULL;
        }
    } while (!self->stopping);
    Py_RETURN_NONE;
}

/* -- kernel objects and lifetime -------------------------------------------------------- */

static int
open_kernel_objects(ReactorObject *self)
{
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int error = errno;
    if (epoll_fd < 0 || timer_fd < 0 || wakeup_fd < 0 ||
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, timer_fd,
                  &(struct epoll_event){.events = EPOLLIN, .data.fd = timer_fd}) < 0 ||
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wakeup_fd,
                  &(struct epoll_event){.events = EPOLLIN, .data.fd = wakeup_fd}) < 0) {
        error = epoll_fd < 0 || timer_fd < 0 || wakeup_fd < 0 ? error : errno;
        for (int i = 0; i < 3; i++) {
            int fd = (int[]){epoll_fd, timer_fd, wakeup_fd}[i];
            if (fd >= 0) {
                close(fd);
            }
        }
        errno = error;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->epoll_fd = epoll_fd;
    self->timer_fd = timer_fd;
    self->wakeup_fd = wakeup_fd;
    self->armed = 0;
    self->timer_expired = 0;
    return 0;
}

static void
close_kernel_objects(ReactorObject *self)
{
    close(self->epoll_fd);
    close(self->timer_fd);
    close(self->wakeup_fd);
    self->epoll_fd = self->timer_fd = self->wakeup_fd = -1;
}

static void
live_remove(ReactorObject *self)
{
    if (self->live_prev != NULL) {
        self->live_prev->live_next = self->live_next;
    }
    else if (live_reactors == self) {
        live_reactors = self->live_next;
    }
    if (self->live_next != NULL) {
        self->live_next->live_prev = self->live_prev;
    }
    self->live_prev = self->live_next = NULL;
}

static PyObject *
Reactor_tp_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    ReactorObject *self = (ReactorObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->closed = 1; /* until the kernel objects exist (Loop.__del__ looks) */
        self->epoll_fd = self->timer_fd = self->wakeup_fd = -1;
    }
    return (PyObject *)self;
}

static int
Reactor_tp_init(ReactorObject *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Reactor() takes no arguments");
        return -1;
    }
    if (self->epoll_fd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is already initialised");
        return -1;
    }
    if (open_kernel_objects(self) < 0) {
        return -1;
    }
    self->closed = 0;
    self->live_next = live_reactors;
    if (live_reactors != NULL) {
        live_reactors->live_prev = self;
    }
    live_reactors = self;
    return 0;
}

/* Take every callback out of the reactor; the references are released by the caller. */
typedef struct {
    HandleObject **ready;
    Py_ssize_t ready_head, ready_len, ready_capacity;
    TimerHandleObject **timers;
    Py_ssize_t timers_len;
    Watchers *watchers;
    int watchers_size;
} Contents;

static Contents
take_contents(ReactorObject *self)
{
    Contents contents = {self->ready, self->ready_head, self->ready_len, self->ready_capacity,
                         self->timers, self->timers_len, self->watchers, self->watchers_size};
    self->ready = NULL;
    self->ready_head = self->ready_len = self->ready_capacity = 0;
    self->timers = NULL;
    self->timers_len = self->timers_capacity = self->cancelled_timers = 0;
    self->watchers = NULL;
    self->watchers_size = 0;
    PyMem_Free(self->fired_last.fds);
    PyMem_Free(self->fired_earlier.fds);
    self->fired_last = self->fired_earlier = (FdList){NULL, 0, 0};
    return contents;
}

static void
release_contents(Contents *contents)
{
    for (Py_ssize_t i = 0; i < contents->ready_len; i++) {
        release_handle(
            contents->ready[(contents->ready_head + i) & (contents->ready_capacity - 1)]);
    }
    PyMem_Free(contents->ready);
    for (Py_ssize_t i = 0; i < contents->timers_len; i++) {
        set_flag(&contents->timers[i]->scheduled, 0);
        release_handle(&contents->timers[i]->handle);
    }
    PyMem_Free(contents->timers);
    for (int fd = 0; fd < contents->watchers_size; fd++) {
        Py_XDECREF(contents->watchers[fd].handle[READ]);
        Py_XDECREF(contents->watchers[fd].handle[WRITE]);
        Py_XDECREF(contents->watchers[fd].fileobj);
    }
    PyMem_Free(contents->watchers);
}

static PyObject *
Reactor_close_reactor(ReactorObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closed) {
        Py_RETURN_NONE;
    }
    /* Closed first: releasing the callbacks may run code that calls back into the loop. */
    self->closed = 1;
    close_kernel_objects(self);
    live_remove(self);
    Contents contents = take_contents(self);
    release_contents(&contents);
    Py_RETURN_NONE;
}

static int
Reactor_traverse(ReactorObject *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->ready_len; i++) {
        Py_VISIT(self->ready[(self->ready_head + i) & (self->ready_capacity - 1)]);
    }
    for (Py_ssize_t i = 0; i < self->timers_len; i++) {
        Py_VISIT(self->timers[i]);
    }
    for (int fd = 0; fd < self->watchers_size; fd++) {
        Py_VISIT(self->watchers[fd].handle[READ]);
        Py_VISIT(self->watchers[fd].handle[WRITE]);
        Py_VISIT(self->watchers[fd].fileobj);
    }
    Py_VISIT(self->thread_id);
    Py_VISIT(self->current_handle);
    Py_VISIT(self->clock);
    return 0;
}

static int
Reactor_clear(ReactorObject *self)
{
    Contents contents = take_contents(self);
    release_contents(&contents);
    Py_CLEAR(self->thread_id);
    Py_CLEAR(self->current_handle);
    Py_CLEAR(self->clock);
    return 0;
}

static void
Reactor_dealloc(ReactorObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (!self->closed) {
        self->closed = 1;
        close_kernel_objects(self);
        live_remove(self);
    }
    Reactor_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* In a forked child: kernel objects of our own, so nothing we do reaches the parent. */
static void
renew_after_fork(ReactorObject *self)
{
    int inherited[3] = {self->epoll_fd, self->timer_fd, self->wakeup_fd};
    if (open_kernel_objects(self) < 0) {
        /* Out of descriptors in the child: keep the inherited ones, as a last resort. */
        PyErr_WriteUnraisable((PyObject *)self);
        self->epoll_fd = inherited[0];
        self->timer_fd = inherited[1];
        self->wakeup_fd = inherited[2];
        return;
    }
    self->polling = 0;
    for (int fd = 0; fd < self->watchers_size; fd++) {
        self->watchers[fd].parked = 0; /* (the new epoll instance has none of them) */
        Watchers *watchers = watchers_of(self, fd);
        if (watchers == NULL) {
            continue;
        }
        watchers->fired = 0;
        uint32_t events = watchers->waiting
                              ? EPOLLIN | EPOLLONESHOT
                              : interest_of(watchers, READ) | interest_of(watchers, WRITE);
        if (epoll_set(self, EPOLL_CTL_ADD, fd, events) < 0 && forget(self, fd) < 0) {
            PyErr_WriteUnraisable((PyObject *)self); /* closed without being unwatched */
        }
    }
    for (int i = 0; i < 3; i++) {
        close(inherited[i]);
    }
}

static PyObject *
after_fork_in_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    for (ReactorObject *reactor = live_reactors; reactor != NULL; reactor = reactor->live_next) {
        renew_after_fork(reactor);
    }
    Py_RETURN_NONE;
}

/* -- attributes shared with Loop, and views for tests ----------------------------------- */

static PyObject *
Reactor_get_flag(ReactorObject *self, void *offset)
{
    return PyBool_FromLong(*((char *)self + (size_t)offset));
}

static int
Reactor_set_flag(ReactorObject *self, PyObject *value, void *offset)
{
    int truth = value ? PyObject_IsTrue(value) : 0;
    if (truth < 0) {
        return -1;
    }
    *((char *)self + (size_t)offset) = (char)truth;
    return 0;
}

static PyObject *
Reactor_get_fd(ReactorObject *self, void *offset)
{
    return PyLong_FromLong(*(int *)((char *)self + (size_t)offset));
}

/* The heap as the pure core keeps it: (when, sequence, handle) in heap order (a snapshot). */
static PyObject *
Reactor_get_timers(ReactorObject *self, void *Py_UNUSED(closure))
{
    PyObject *timers = PyList_New(self->timers_len);
    for (Py_ssize_t i = 0; timers != NULL && i < self->timers_len; i++) {
        TimerHandleObject *timer = self->timers[i];
        PyObject *entry = Py_BuildValue("(dKO)", timer->deadline,
                                        (unsigned long long)timer->sequence, timer);
        if (entry == NULL) {
            Py_CLEAR(timers);
            break;
        }
        PyList_SET_ITEM(timers, i, entry);
    }
    return timers;
}

/* The ready queue in order, as a list (a snapshot; the pure core keeps a deque). */
static PyObject *
Reactor_get_ready(ReactorObject *self, void *Py_UNUSED(closure))
{
    PyObject *ready = PyList_New(self->ready_len);
    for (Py_ssize_t i = 0; ready != NULL && i < self->ready_len; i++) {
        PyList_SET_ITEM(ready, i,
                        Py_NewRef(self->ready[(self->ready_head + i) &
                                              (self->ready_capacity - 1)]));
    }
    return ready;
}

/* fd -> [reader or None, writer or None], as the pure core keeps it (a snapshot). */
static PyObject *
Reactor_get_watchers(ReactorObject *self, void *Py_UNUSED(closure))
{
    PyObject *table = PyDict_New();
    for (int fd = 0; table != NULL && fd < self->watchers_size; fd++) {
        Watchers *watchers = watchers_of(self, fd);
        if (watchers == NULL) {
            continue;
        }
        PyObject *key = PyLong_FromLong(fd);
        PyObject *value = Py_BuildValue(
            "[OO]", watchers->handle[READ] ? (PyObject *)watchers->handle[READ] : Py_None,
            watchers->handle[WRITE] ? (PyObject *)watchers->handle[WRITE] : Py_None);
        if (key == NULL || value == NULL || PyDict_SetItem(table, key, value) < 0) {
            Py_CLEAR(table);
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
    }
    return table;
}

#define OFFSET(field) ((void *)offsetof(ReactorObject, field))

static PyGetSetDef Reactor_getset[] = {
    {"_closed", (getter)Reactor_get_flag, NULL, NULL, OFFSET(closed)},
    {"_debug", (getter)Reactor_get_flag, (setter)Reactor_set_flag, NULL, OFFSET(debug)},
    {"_stopping", (getter)Reactor_get_flag, (setter)Reactor_set_flag, NULL, OFFSET(stopping)},
    {"_polling", (getter)Reactor_get_flag, NULL, NULL, OFFSET(polling)},
    {"_epoll_fd", (getter)Reactor_get_fd, NULL, NULL, OFFSET(epoll_fd)},
    {"_timer_fd", (getter)Reactor_get_fd, NULL, NULL, OFFSET(timer_fd)},
    {"_wakeup_fd", (getter)Reactor_get_fd, NULL, NULL, OFFSET(wakeup_fd)},
    {"_ready", (getter)Reactor_get_ready, NULL, NULL, NULL},
    {"_timers", (getter)Reactor_get_timers, NULL, NULL, NULL},
    {"_watchers", (getter)Reactor_get_watchers, NULL, NULL, NULL},
    {NULL},
};

static PyMemberDef Reactor_members[] = {
    {"_thread_id", T_OBJECT, offsetof(ReactorObject, thread_id), 0, NULL},
    {"_current_handle", T_OBJECT, offsetof(ReactorObject, current_handle), 0, NULL},
    {NULL},
};

#define FASTCALL_KW(name, function, doc) \
    {name, (PyCFunction)(void (*)(void))function, METH_FASTCALL | METH_KEYWORDS, doc}
#define FASTCALL(name, function, doc) \
    {name, (PyCFunction)(void (*)(void))function, METH_FASTCALL, doc}

static PyMethodDef Reactor_methods[] = {
    {"time", (PyCFunction)Reactor_time, METH_NOARGS,
     "The loop's clock: time.monotonic(), at full resolution."},
    {"get_debug", (PyCFunction)Reactor_get_debug, METH_NOARGS, NULL},
    {"create_future", (PyCFunction)Reactor_create_future, METH_NOARGS,
     "A new asyncio.Future of this loop."},
    FASTCALL_KW("call_soon", Reactor_call_soon,
                "Run callback(*args) in the next step, after callbacks already scheduled."),
    FASTCALL_KW("call_soon_threadsafe", Reactor_call_soon_threadsafe,
                "call_soon from any thread: wakes the loop if it may be asleep."),
    FASTCALL_KW("call_later", Reactor_call_later,
                "Run callback(*args) delay seconds from now (at once if delay <= 0)."),
    FASTCALL_KW("call_at", Reactor_call_at,
                "Run callback(*args) when loop.time() reaches when."),
    {"_timer_handle_cancelled", (PyCFunction)Reactor_timer_handle_cancelled, METH_O, NULL},
    {"_check_callback", (PyCFunction)Reactor_check_callback, METH_VARARGS, NULL},
    {"_check_thread", (PyCFunction)Reactor_check_thread, METH_NOARGS, NULL},
    FASTCALL("add_reader", Reactor_add_reader,
             "Call callback(*args) whenever fd is readable (replacing any previous reader)."),
    FASTCALL("add_writer", Reactor_add_writer,
             "Call callback(*args) whenever fd is writable (replacing any previous writer)."),
    {"remove_reader", (PyCFunction)Reactor_remove_reader, METH_O,
     "Stop watching fd for reading; True if a reader was registered."},
    {"remove_writer", (PyCFunction)Reactor_remove_writer, METH_O,
     "Stop watching fd for writing; True if a writer was registered."},
    FASTCALL("_add_reader", Reactor_internal_add_reader, NULL),
    FASTCALL("_add_waiting_reader", Reactor_internal_add_waiting_reader, NULL),
    FASTCALL("_add_writer", Reactor_internal_add_writer, NULL),
    {"_remove_reader", (PyCFunction)Reactor_internal_remove_reader, METH_O, NULL},
    {"_remove_writer", (PyCFunction)Reactor_internal_remove_writer, METH_O, NULL},
    {"stop", (PyCFunction)Reactor_stop, METH_NOARGS,
     "Stop after the current step (or after one step, if called before running)."},
    {"_run_once", (PyCFunction)Reactor_run_once, METH_NOARGS, NULL},
    {"_run_until_stopped", (PyCFunction)Reactor_run_until_stopped, METH_NOARGS, NULL},
    {"_close_reactor", (PyCFunction)Reactor_close_reactor, METH_NOARGS, NULL},
    {NULL},
};

/* Setting or deleting `time` on the loop sets or clears the scheduler's clock. */
static int
Reactor_setattro(ReactorObject *self, PyObject *name, PyObject *value)
{
    int status = PyObject_GenericSetAttr((PyObject *)self, name, value);
    if (status == 0 && PyUnicode_Check(name) &&
        PyUnicode_CompareWithASCIIString(name, "time") == 0) {
        Py_XSETREF(self->clock, Py_XNewRef(value));
    }
    return status;
}

PyTypeObject Reactor_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "epolloop._core.Reactor",
    .tp_doc = "The reactor core in C; Loop derives from it.",
    .tp_basicsize = sizeof(ReactorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = Reactor_tp_new,
    .tp_init = (initproc)Reactor_tp_init,
    .tp_dealloc = (destructor)Reactor_dealloc,
    .tp_traverse = (traverseproc)Reactor_traverse,
    .tp_clear = (inquiry)Reactor_clear,
    .tp_setattro = (setattrofunc)Reactor_setattro,
    .tp_weaklistoffset = offsetof(ReactorObject, weakreflist),
    .tp_methods = Reactor_methods,
    .tp_members = Reactor_members,
    .tp_getset = Reactor_getset,
};

static PyMethodDef after_fork_def = {"_after_fork_in_child", after_fork_in_child, METH_NOARGS,
                                     NULL};

/* Every open reactor gets fresh kernel objects in a forked child. */
int
reactor_module_init(PyObject *module)
{
    PyObject *hook = PyCFunction_NewEx(&after_fork_def, module, NULL);
    PyObject *os = PyImport_ImportModule("os");
    PyObject *register_at_fork = os ? PyObject_GetAttrString(os, "register_at_fork") : NULL;
    PyObject *kwargs = hook ? Py_BuildValue("{sO}", "after_in_child", hook) : NULL;
    PyObject *empty = PyTuple_New(0);
    PyObject *result = register_at_fork && kwargs && empty
                           ? PyObject_Call(register_at_fork, empty, kwargs)
                           : NULL;
    Py_XDECREF(hook);
    Py_XDECREF(os);
    Py_XDECREF(register_at_fork);
    Py_XDECREF(kwargs);
    Py_XDECREF(empty);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}
