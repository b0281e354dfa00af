/* The stream transport's hot paths in C: the two read paths and write()'s direct send.
 *
 * _core.StreamTransportBase is the first base of transports/stream.py's CStreamTransport,
 * ahead of the Python parts (base.py) that the transport is otherwise assembled from. It
 * holds the state the hot paths need as the attributes those parts use (_fd, _protocol,
 * _buffer, _empty_waiter, _conn_lost, _closing, _eof), and its methods take the place of
 * theirs on every readiness event and every write: one C call where the Python parts run a
 * frame or three. Everything off those paths (a short send, errors, EOF, close, flow control)
 * goes back to the Python parts, so each behaviour has one copy.
 *
 * is_closing() is here too: it is asked before every write.
 *
 * The type derives from asyncio.Transport, whose one slot (_extra) comes first in the
 * layout; module import checks that against the running asyncio, as handles.c does.
 */
#include "core.h"

#include <errno.h>
#include <structmember.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

typedef struct {
    PyObject_HEAD
    PyObject *extra; /* asyncio.BaseTransport's _extra slot */
    PyObject *protocol;
    PyObject *buffer; /* the write queue: a deque, or () before QueuedWriting sets it */
    PyObject *empty_waiter;
    int fd;
    int conn_lost;
    char closing;
    char eof;
    char big_reads; /* the last read took at least DIRECT_READ_MIN bytes */
} StreamObject;

/* From this size on, a read goes straight into its bytes object (see read_direct). */
#define DIRECT_READ_MIN (16 * 1024)

static PyObject *str_fatal_error, *str_read_eof, *str_write_slowly, *str_data_received,
    *str_get_buffer, *str_buffer_updated;

/* Hand an exception raised by the protocol (or the socket) to the transport's _fatal_error,
 * which reports it and closes this transport only; SystemExit and KeyboardInterrupt go on. */
static PyObject *
fail(StreamObject *self, const char *message)
{
    PyObject *exc = fetch_exception();
    if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit) ||
        PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
        restore_exception(exc);
        return NULL;
    }
    PyObject *text = PyUnicode_FromString(message);
    PyObject *result = text ? PyObject_CallMethodObjArgs((PyObject *)self, str_fatal_error, exc,
                                                         text, NULL)
                            : NULL;
    Py_XDECREF(text);
    Py_DECREF(exc);
    return result;
}

/* After recv() returned n: nothing to do (-1 with no error: EAGAIN), EOF, or an error. */
static PyObject *
read_failed(StreamObject *self, ssize_t n)
{
    if (n == 0) {
        return PyObject_CallMethodNoArgs((PyObject *)self, str_read_eof);
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        Py_RETURN_NONE; /* level-triggered: we are called again while data waits */
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return fail(self, "Fatal read error on socket transport");
}

/* A big read without the copy out of the shared buffer: FIONREAD says how much is queued, and
 * recv() writes it into a bytes object of that size. The ioctl costs less than copying more
 * than a few KiB, so only a connection whose last read was big asks. 1: *data holds the *n
 * bytes read; 0: too little is queued, read the usual way; -1: *n is recv()'s result, 0 (EOF)
 * or -1 (errno says why); -2: out of memory. */
static int
read_direct(StreamObject *self, PyObject **data, ssize_t *n)
{
    int queued;
    if (ioctl(self->fd, FIONREAD, &queued) < 0 || queued < DIRECT_READ_MIN) {
        return 0; /* an error shows again in the usual recv() */
    }
    Py_ssize_t size = queued < READ_SIZE ? queued : READ_SIZE;
    *data = PyBytes_FromStringAndSize(NULL, size);
    if (*data == NULL) {
        return -2;
    }
    *n = recv(self->fd, PyBytes_AS_STRING(*data), (size_t)size, 0);
    if (*n <= 0) {
        Py_CLEAR(*data);
        return -1;
    }
    if (*n < size && _PyBytes_Resize(data, *n) < 0) {
        return -2;
    }
    return 1;
}

/* The read path for a Protocol: one recv() and one data_received() per readiness event. */
static PyObject *
Stream_read_bytes(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->conn_lost) {
        Py_RETURN_NONE;
    }
    PyObject *data = NULL;
    ssize_t n;
    int direct = self->big_reads ? read_direct(self, &data, &n) : 0;
    if (direct == -2) {
        return NULL;
    }
    if (direct == 0) {
        n = recv(self->fd, core_read_buffer, READ_SIZE, 0);
        if (n > 0 && (data = PyBytes_FromStringAndSize(core_read_buffer, n)) == NULL) {
            return NULL;
        }
    }
    if (n <= 0) {
        self->big_reads = 0;
        return read_failed(self, n);
    }
    self->big_reads = n >= DIRECT_READ_MIN;
    PyObject *protocol = Py_NewRef(self->protocol);
    PyObject *result = PyObject_CallMethodOneArg(protocol, str_data_received, data);
    Py_DECREF(protocol);
    Py_DECREF(data);
    if (result == NULL) {
        return fail(self, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* The read path for a BufferedProtocol: straight into the protocol's buffer. */
static PyObject *
Stream_read_into_buffer(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->conn_lost) {
        Py_RETURN_NONE;
    }
    PyObject *protocol = Py_NewRef(self->protocol);
    PyObject *minus_one = PyLong_FromLong(-1);
    PyObject *buffer =
        minus_one ? PyObject_CallMethodOneArg(protocol, str_get_buffer, minus_one) : NULL;
    Py_XDECREF(minus_one);
    Py_buffer view;
    if (buffer == NULL || PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0) {
        Py_XDECREF(buffer);
        Py_DECREF(protocol);
        return fail(self, "Fatal error: protocol.get_buffer() call failed.");
    }
    Py_DECREF(buffer);
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_DECREF(protocol);
        PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
        return fail(self, "Fatal error: protocol.get_buffer() call failed.");
    }
    ssize_t n = recv(self->fd, view.buf, (size_t)view.len, 0);
    PyBuffer_Release(&view);
    if (n <= 0) {
        Py_DECREF(protocol);
        return read_failed(self, n);
    }
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *result =
        count ? PyObject_CallMethodOneArg(protocol, str_buffer_updated, count) : NULL;
    Py_XDECREF(count);
    Py_DECREF(protocol);
    if (result == NULL) {
        return fail(self, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* write(): sent at once when nothing is queued and the kernel takes it all, the common case;
 * anything else is QueuedWriting.write's (as _write_slowly), from what the kernel did not
 * take. bytes, bytearray and contiguous memoryviews take the fast path. */
static PyObject *
Stream_write(StreamObject *self, PyObject *data)
{
    PyObject *rest = NULL;
    if ((PyBytes_CheckExact(data) || PyByteArray_CheckExact(data) ||
         PyMemoryView_Check(data)) &&
        !self->eof && !self->closing && !self->conn_lost &&
        (self->empty_waiter == NULL || self->empty_waiter == Py_None) &&
        (self->buffer == NULL || PyObject_Length(self->buffer) == 0)) {
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear(); /* not contiguous: the slow path copes */
        }
        else {
            ssize_t sent = view.len ? send(self->fd, view.buf, (size_t)view.len, MSG_NOSIGNAL)
                                    : 0;
            Py_ssize_t length = view.len;
            PyBuffer_Release(&view);
            if (sent == length) {
                Py_RETURN_NONE;
            }
            if (sent > 0) {
                /* The rest, in bytes (QueuedWriting copies it if the caller could change it). */
                PyObject *whole = PyMemoryView_FromObject(data);
                PyObject *cast = whole ? PyObject_CallMethod(whole, "cast", "s", "B") : NULL;
                rest = cast ? PySequence_GetSlice(cast, sent, length) : NULL;
                Py_XDECREF(whole);
                Py_XDECREF(cast);
                if (rest == NULL) {
                    return NULL;
                }
            }
        }
    }
    PyObject *result =
        PyObject_CallMethodOneArg((PyObject *)self, str_write_slowly, rest ? rest : data);
    Py_XDECREF(rest);
    return result;
}

/* Asked before every write by aiohttp and the streams API. */
static PyObject *
Stream_is_closing(StreamObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closing);
}

static int
Stream_traverse(StreamObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->extra);
    Py_VISIT(self->protocol);
    Py_VISIT(self->buffer);
    Py_VISIT(self->empty_waiter);
    return 0;
}

static int
Stream_clear(StreamObject *self)
{
    Py_CLEAR(self->extra);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->empty_waiter);
    return 0;
}

static void
Stream_dealloc(StreamObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Stream_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyMethodDef Stream_methods[] = {
    {"_read_bytes", (PyCFunction)Stream_read_bytes, METH_NOARGS, NULL},
    {"_read_into_buffer", (PyCFunction)Stream_read_into_buffer, METH_NOARGS, NULL},
    {"is_closing", (PyCFunction)Stream_is_closing, METH_NOARGS,
     "Whether the transport is closing or closed."},
    {"write", (PyCFunction)Stream_write, METH_O,
     "Send data, queueing what the kernel does not take at once."},
    {NULL},
};

static PyMemberDef Stream_members[] = {
    {"_protocol", T_OBJECT, offsetof(StreamObject, protocol), 0, NULL},
    {"_buffer", T_OBJECT, offsetof(StreamObject, buffer), 0, NULL},
    {"_empty_waiter", T_OBJECT, offsetof(StreamObject, empty_waiter), 0, NULL},
    {"_fd", T_INT, offsetof(StreamObject, fd), 0, NULL},
    {"_conn_lost", T_INT, offsetof(StreamObject, conn_lost), 0, NULL},
    {"_closing", T_BOOL, offsetof(StreamObject, closing), 0, NULL},
    {"_eof", T_BOOL, offsetof(StreamObject, eof), 0, NULL},
    {NULL},
};

static PyType_Slot Stream_slots[] = {
    {Py_tp_doc, "The hot paths of a stream transport (see transports/stream.py)."},
    {Py_tp_dealloc, Stream_dealloc},
    {Py_tp_traverse, Stream_traverse},
    {Py_tp_clear, Stream_clear},
    {Py_tp_methods, Stream_methods},
    {Py_tp_members, Stream_members},
    {0, NULL},
};

static PyType_Spec Stream_spec = {
    .name = "epolloop._core.StreamTransportBase",
    .basicsize = sizeof(StreamObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Stream_slots,
};

int
stream_init(PyObject *module)
{
    str_fatal_error = PyUnicode_InternFromString("_fatal_error");
    str_read_eof = PyUnicode_InternFromString("_read_eof");
    str_write_slowly = PyUnicode_InternFromString("_write_slowly");
    str_data_received = PyUnicode_InternFromString("data_received");
    str_get_buffer = PyUnicode_InternFromString("get_buffer");
    str_buffer_updated = PyUnicode_InternFromString("buffer_updated");
    if (!str_fatal_error || !str_read_eof || !str_write_slowly || !str_data_received ||
        !str_get_buffer || !str_buffer_updated) {
        return -1;
    }
    PyObject *transports = PyImport_ImportModule("asyncio.transports");
    PyObject *base = transports ? PyObject_GetAttrString(transports, "Transport") : NULL;
    Py_XDECREF(transports);
    if (base == NULL) {
        return -1;
    }
    int status = -1;
    if (!slot_at(base, "_extra", offsetof(StreamObject, extra)) ||
        ((PyTypeObject *)base)->tp_basicsize != (Py_ssize_t)offsetof(StreamObject, protocol)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ImportError,
                        "asyncio.Transport's slots are not laid out as epolloop's C core "
                        "expects");
        goto done;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &Stream_spec, base);
    if (type != NULL) {
        status = PyModule_AddObjectRef(module, "StreamTransportBase", type);
        Py_DECREF(type);
    }
done:
    Py_DECREF(base);
    return status;
}
