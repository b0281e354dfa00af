/* The first try of sock_recv() and sock_sendall(), in C: recv_now() and send_now().
 *
 * asyncio's sock_* coroutines try the socket call before they wait for readiness. In Python
 * a try that would block costs a BlockingIOError, and CPython decodes strerror() through the
 * locale to make it: in an echo server waiting on its peer, most of a microsecond-scale call.
 * Here a call that would block returns None (or 0 bytes sent) instead, and recv copies what
 * arrived out of the core's read buffer instead of making an n-byte object first (see
 * READ_SIZE). Sockets of other types (mocks, subclasses with their own recv or send) go
 * through their methods, with the same results.
 *
 * The pure core has the same two functions in net.py (Networking._recv_now, _send_now).
 */
#include "core.h"

#include <errno.h>
#include <sys/socket.h>

static PyObject *socket_type; /* socket.socket */
static PyObject *str_fileno, *str_recv, *str_send, *msg_nosignal;

static int
would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* After a socket method raised: NULL with the exception still set, unless the call would
 * have blocked (then the exception is cleared and `blocked` is returned, new). */
static PyObject *
unless_blocked(PyObject *blocked)
{
    if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
        PyErr_ExceptionMatches(PyExc_InterruptedError)) {
        PyErr_Clear();
        return Py_NewRef(blocked);
    }
    return NULL;
}

/* The descriptor of a plain socket.socket; -1 (no exception) for anything else, or a closed
 * socket, whose own methods then give the answer. */
static int
plain_socket_fd(PyObject *sock)
{
    if ((PyObject *)Py_TYPE(sock) != socket_type) {
        return -1;
    }
    PyObject *fileno = PyObject_CallMethodNoArgs(sock, str_fileno);
    if (fileno == NULL) {
        PyErr_Clear();
        return -1;
    }
    long fd = PyLong_AsLong(fileno);
    Py_DECREF(fileno);
    if (fd < 0 || fd > INT_MAX) {
        PyErr_Clear();
        return -1;
    }
    return (int)fd;
}

/* recv_now(sock, n): what sock.recv(n) returns now, or None if it would block. */
static PyObject *
recv_now(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "recv_now() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *sock = args[0], *size = args[1];
    Py_ssize_t n = PyLong_CheckExact(size) ? PyLong_AsSsize_t(size) : -1;
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    int fd = n >= 0 && n <= READ_SIZE ? plain_socket_fd(sock) : -1;
    if (fd < 0) {
        PyObject *data = PyObject_CallMethodOneArg(sock, str_recv, size);
        return data != NULL ? data : unless_blocked(Py_None);
    }
    ssize_t received = recv(fd, core_read_buffer, (size_t)n, 0);
    if (received >= 0) {
        return PyBytes_FromStringAndSize(core_read_buffer, received);
    }
    if (would_block()) {
        Py_RETURN_NONE;
    }
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* send_now(sock, data): how many bytes of data sock.send() takes now (0 if it would block),
 * with MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE. */
static PyObject *
send_now(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "send_now() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *sock = args[0], *data = args[1];
    int fd = plain_socket_fd(sock);
    Py_buffer view;
    if (fd < 0 || PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* the method raises what asyncio's callers expect */
        PyObject *call_args[] = {sock, data, msg_nosignal};
        PyObject *sent = PyObject_VectorcallMethod(
            str_send, call_args, 3, NULL);
        if (sent != NULL) {
            return sent;
        }
        PyObject *zero = PyLong_FromLong(0);
        PyObject *result = zero != NULL ? unless_blocked(zero) : NULL;
        Py_XDECREF(zero);
        return result;
    }
    ssize_t sent = send(fd, view.buf, (size_t)view.len, MSG_NOSIGNAL);
    PyBuffer_Release(&view);
    if (sent >= 0) {
        return PyLong_FromSsize_t(sent);
    }
    if (would_block()) {
        return PyLong_FromLong(0);
    }
    return PyErr_SetFromErrno(PyExc_OSError);
}

static PyMethodDef sockops_methods[] = {
    {"recv_now", (PyCFunction)(void (*)(void))recv_now, METH_FASTCALL,
     "recv_now(sock, n): what sock.recv(n) returns now, or None if it would block."},
    {"send_now", (PyCFunction)(void (*)(void))send_now, METH_FASTCALL,
     "send_now(sock, data): how many bytes sock.send(data, MSG_NOSIGNAL) takes now (0 if it "
     "would block)."},
    {NULL, NULL, 0, NULL},
};

int
sockops_init(PyObject *module)
{
    PyObject *socket_module = PyImport_ImportModule("socket");
    if (socket_module == NULL) {
        return -1;
    }
    socket_type = PyObject_GetAttrString(socket_module, "socket");
    Py_DECREF(socket_module);
    str_fileno = PyUnicode_InternFromString("fileno");
    str_recv = PyUnicode_InternFromString("recv");
    str_send = PyUnicode_InternFromString("send");
    msg_nosignal = PyLong_FromLong(MSG_NOSIGNAL);
    if (socket_type == NULL || str_fileno == NULL || str_recv == NULL || str_send == NULL ||
        msg_nosignal == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, sockops_methods);
}
