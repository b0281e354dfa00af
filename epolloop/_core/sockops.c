/* The first try of sock_recv(), sock_sendall() and of accepting a connection, in C:
 * recv_now(), send_now() and accept_now().
 *
 * asyncio's sock_* coroutines try the socket call before they wait for readiness. In Python
 * a try that would block costs a BlockingIOError, and CPython decodes strerror() through the
 * locale to make it: in an echo server waiting on its peer, most of a microsecond-scale call.
 * Here a call that would block returns None (or 0 bytes sent) instead, and recv copies what
 * arrived out of the core's read buffer instead of making an n-byte object first (see
 * READ_SIZE). Sockets of other types (mocks, subclasses with their own recv or send) go
 * through their methods, with the same results.
 *
 * accept_now() (sock_accept()) and accept_connection() (the servers' accept path) make one
 * accept4() that makes the connection non-blocking and close-on-exec at once (socket.accept()
 * and then setblocking(False) take an ioctl more), and raise nothing once the listen queue is
 * empty. A server keeps its connections' IP peer addresses as the kernel gave them (a
 * SockAddr, 48 bytes for IPv4, 56 for IPv6) and decodes one only when asked (peer_address()):
 * the tuple, str and int cost about 170 bytes more for every idle connection that nobody asks
 * about.
 *
 * The pure core has the same functions in net.py (Networking._recv_now, _send_now,
 * _accept_now, _accept_connection, _peer_address).
 */
#include "core.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static PyObject *socket_type; /* socket.socket */
/* _socket.socket's own getters of family, type and proto: plain ints (socket.socket wraps
 * family and type in enums, in Python). */
static PyObject *family_getter, *type_getter, *proto_getter;
static PyObject *str_fileno, *str_recv, *str_send, *str_accept, *str_setblocking,
    *str_getpeername, *msg_nosignal;

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
    if (!takes_two_arguments("recv_now", nargs)) {
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
    if (!takes_two_arguments("send_now", nargs)) {
        return NULL;
    }
    PyObject *sock = args[0], *data = args[1];
    int fd = plain_socket_fd(sock);
    Py_buffer view;
    if (fd < 0 || PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* the method raises what asyncio's callers expect */
        PyObject *call_args[] = {sock, data, msg_nosignal};
        PyObject *sent = PyObject_VectorcallMethod(str_send, call_args, 3, NULL);
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

/* The Python form of a peer's address, as socket.accept() gives it; NULL with no exception
 * for a family this does not know (the caller asks the socket instead). */
static PyObject *
address_of(const struct sockaddr *address, socklen_t length)
{
    char text[INET6_ADDRSTRLEN];
    switch (address->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)address;
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        return Py_BuildValue("(si)", text, ntohs(in->sin_port));
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)address;
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        return Py_BuildValue("(siII)", text, ntohs(in6->sin6_port),
                             (unsigned int)ntohl(in6->sin6_flowinfo),
                             (unsigned int)in6->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)address;
        size_t path_length = length - offsetof(struct sockaddr_un, sun_path);
        if (length > offsetof(struct sockaddr_un, sun_path) && un->sun_path[0] == 0) {
            return PyBytes_FromStringAndSize(un->sun_path, path_length); /* abstract */
        }
        return PyUnicode_DecodeFSDefault(un->sun_path); /* '' for an unnamed peer */
    }
    default:
        return NULL;
    }
}

/* SockAddr: an IPv4 or IPv6 peer address as accept() filled it in, Py_SIZE bytes. */
typedef struct {
    PyObject_VAR_HEAD
    char address[1];
} SockAddrObject;

static PyTypeObject *SockAddr_Type;

static PyObject *
sockaddr_new(const struct sockaddr_storage *address, socklen_t length)
{
    SockAddrObject *self = PyObject_NewVar(SockAddrObject, SockAddr_Type, length);
    if (self != NULL) {
        memcpy(self->address, address, length);
    }
    return (PyObject *)self;
}

static void
SockAddr_dealloc(SockAddrObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(type);
}

static PyType_Slot SockAddr_slots[] = {
    {Py_tp_doc, "A peer's address as the kernel gave it (see peer_address())."},
    {Py_tp_dealloc, SockAddr_dealloc},
    {0, NULL},
};

static PyType_Spec SockAddr_spec = {
    .name = "epolloop._core.SockAddr",
    .basicsize = offsetof(SockAddrObject, address),
    .itemsize = 1,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, /* made by accept only */
    .slots = SockAddr_slots,
};

/* peer_address(peer): the address a SockAddr holds, in Python form; anything else (what a
 * socket's own accept() returned) as it is. */
static PyObject *
peer_address(PyObject *Py_UNUSED(module), PyObject *peer)
{
    if (Py_TYPE(peer) != SockAddr_Type) {
        return Py_NewRef(peer);
    }
    SockAddrObject *raw = (SockAddrObject *)peer;
    return address_of((const struct sockaddr *)raw->address, (socklen_t)Py_SIZE(raw));
}

static PyObject *
get_int(PyObject *getter, PyObject *sock)
{
    return Py_TYPE(getter)->tp_descr_get(getter, sock, (PyObject *)Py_TYPE(sock));
}

/* A socket.socket for an accepted descriptor that is already non-blocking: the SOCK_NONBLOCK
 * in its type sets its timeout to 0 with no syscall (CPython strips the flag from .type). */
static PyObject *
wrap_accepted(PyObject *listener, int fd)
{
    PyObject *family = get_int(family_getter, listener);
    PyObject *type = family ? get_int(type_getter, listener) : NULL;
    PyObject *proto = type ? get_int(proto_getter, listener) : NULL;
    PyObject *result = NULL;
    if (proto != NULL) {
        long nonblocking_type = PyLong_AsLong(type) | SOCK_NONBLOCK;
        PyObject *flagged = PyErr_Occurred() ? NULL : PyLong_FromLong(nonblocking_type);
        PyObject *fileno = flagged ? PyLong_FromLong(fd) : NULL;
        if (fileno != NULL) {
            result = PyObject_CallFunctionObjArgs(socket_type, family, flagged, proto, fileno,
                                                  NULL);
        }
        Py_XDECREF(flagged);
        Py_XDECREF(fileno);
    }
    Py_XDECREF(family);
    Py_XDECREF(type);
    Py_XDECREF(proto);
    return result;
}

/* What sock.accept() returns now, with the connection made non-blocking, or None if no
 * connection waits; with keep_raw, an IP peer's address is a SockAddr. */
static PyObject *
accept_socket(PyObject *sock, int keep_raw)
{
    int fd = plain_socket_fd(sock);
    if (fd < 0) {
        PyObject *accepted = PyObject_CallMethodNoArgs(sock, str_accept);
        if (accepted == NULL) {
            return unless_blocked(Py_None);
        }
        PyObject *conn = PyTuple_Check(accepted) && PyTuple_GET_SIZE(accepted) == 2
                             ? PyTuple_GET_ITEM(accepted, 0)
                             : NULL;
        PyObject *done =
            conn ? PyObject_CallMethodOneArg(conn, str_setblocking, Py_False) : NULL;
        if (conn == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "accept() must return (socket, address)");
        }
        if (done == NULL) {
            Py_DECREF(accepted);
            return NULL;
        }
        Py_DECREF(done);
        return accepted;
    }
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    memset(&address, 0, sizeof address);
    int conn = accept4(fd, (struct sockaddr *)&address, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (conn < 0) {
        if (would_block()) {
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrno(PyExc_OSError); /* ECONNABORTED: ConnectionAbortedError */
    }
    PyObject *wrapped = wrap_accepted(sock, conn);
    if (wrapped == NULL) {
        close(conn);
        return NULL;
    }
    PyObject *peer;
    if (keep_raw && (address.ss_family == AF_INET || address.ss_family == AF_INET6)) {
        peer = sockaddr_new(&address, length);
    }
    else {
        peer = address_of((struct sockaddr *)&address, length);
        if (peer == NULL && !PyErr_Occurred()) {
            peer = PyObject_CallMethodNoArgs(wrapped, str_getpeername);
        }
    }
    if (peer == NULL) {
        Py_DECREF(wrapped); /* closes the connection */
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, wrapped, peer);
    Py_DECREF(wrapped);
    Py_DECREF(peer);
    return result;
}

/* accept_now(sock): what sock.accept() returns now, or None. */
static PyObject *
accept_now(PyObject *Py_UNUSED(module), PyObject *sock)
{
    return accept_socket(sock, 0);
}

/* accept_connection(sock): accept_now(), with an IP peer's address kept as a SockAddr. */
static PyObject *
accept_connection(PyObject *Py_UNUSED(module), PyObject *sock)
{
    return accept_socket(sock, 1);
}

static PyMethodDef sockops_methods[] = {
    {"recv_now", (PyCFunction)(void (*)(void))recv_now, METH_FASTCALL,
     "recv_now(sock, n): what sock.recv(n) returns now, or None if it would block."},
    {"send_now", (PyCFunction)(void (*)(void))send_now, METH_FASTCALL,
     "send_now(sock, data): how many bytes sock.send(data, MSG_NOSIGNAL) takes now (0 if it "
     "would block)."},
    {"accept_now", (PyCFunction)accept_now, METH_O,
     "accept_now(sock): what sock.accept() returns now, the connection made non-blocking, or "
     "None if no connection waits."},
    {"accept_connection", (PyCFunction)accept_connection, METH_O,
     "accept_connection(sock): accept_now(sock), an IP peer's address kept as a SockAddr "
     "until peer_address() decodes it."},
    {"peer_address", (PyCFunction)peer_address, METH_O,
     "peer_address(peer): the address in Python form if peer is a SockAddr, else peer."},
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
    PyObject *base_module = PyImport_ImportModule("_socket");
    PyObject *base = base_module ? PyObject_GetAttrString(base_module, "socket") : NULL;
    Py_XDECREF(base_module);
    if (base == NULL) {
        return -1;
    }
    family_getter = PyObject_GetAttrString(base, "family"); /* the descriptors themselves */
    type_getter = PyObject_GetAttrString(base, "type");
    proto_getter = PyObject_GetAttrString(base, "proto");
    Py_DECREF(base);
    if (family_getter == NULL || type_getter == NULL || proto_getter == NULL) {
        return -1;
    }
    if (Py_TYPE(family_getter)->tp_descr_get == NULL ||
        Py_TYPE(type_getter)->tp_descr_get == NULL ||
        Py_TYPE(proto_getter)->tp_descr_get == NULL) {
        PyErr_SetString(PyExc_ImportError, "_socket.socket's family, type or proto is no getter");
        return -1;
    }
    str_accept = PyUnicode_InternFromString("accept");
    str_setblocking = PyUnicode_InternFromString("setblocking");
    str_getpeername = PyUnicode_InternFromString("getpeername");
    str_fileno = PyUnicode_InternFromString("fileno");
    str_recv = PyUnicode_InternFromString("recv");
    str_send = PyUnicode_InternFromString("send");
    msg_nosignal = PyLong_FromLong(MSG_NOSIGNAL);
    if (socket_type == NULL || str_fileno == NULL || str_recv == NULL || str_send == NULL ||
        str_accept == NULL || str_setblocking == NULL || str_getpeername == NULL ||
        msg_nosignal == NULL) {
        return -1;
    }
    SockAddr_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &SockAddr_spec, NULL);
    if (SockAddr_Type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, sockops_methods);
}
