/* The loop's transports by fd, for the C core: see epolloop/transports/registry.py, the pure
 * core's, for what it is for and the rule that makes its references safe.
 *
 * An array indexed by fd of borrowed references. A transport registers once, in its
 * constructor, and leaves before it can die (when its fd closes, or first thing when it is
 * finalized unclosed), so every entry points to a live object. It holds no reference, so the
 * collector never needs to see it.
 */
#include "core.h"

typedef struct {
    PyObject_HEAD
    PyObject **by_fd;
    int size;
} RegistryObject;

/* The fd argument as an int; -1 for an int that is no fd, -2 with TypeError for anything else. */
static int
fd_of(PyObject *arg)
{
    int overflow;
    long fd = PyLong_AsLongAndOverflow(arg, &overflow);
    if (fd == -1 && PyErr_Occurred()) {
        return -2;
    }
    return overflow || fd < 0 || fd >= INT_MAX ? -1 : (int)fd;
}

/* The entry for fd, or NULL if no transport can be registered there. */
static PyObject **
entry_of(RegistryObject *self, int fd)
{
    return fd >= 0 && fd < self->size ? &self->by_fd[fd] : NULL;
}

static PyObject *
Registry_add(RegistryObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!takes_two_arguments("add", nargs)) {
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -1) {
        PyErr_Format(PyExc_ValueError, "invalid file descriptor: %R", args[0]);
    }
    if (fd < 0 ||
        reserve_fd_table((void **)&self->by_fd, &self->size, fd, sizeof(PyObject *)) < 0) {
        return NULL;
    }
    self->by_fd[fd] = args[1]; /* borrowed: see the top of this file */
    Py_RETURN_NONE;
}

/* Never fails for an int: a transport calls it from __del__. */
static PyObject *
Registry_discard(RegistryObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!takes_two_arguments("discard", nargs)) {
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -2) {
        return NULL;
    }
    PyObject **entry = entry_of(self, fd);
    if (entry != NULL && *entry == args[1]) {
        *entry = NULL;
    }
    Py_RETURN_NONE;
}

/* Any int is asked about (add_reader() checks its fd here before the reactor refuses a bad
 * one, with asyncio's error); only a registered fd has a transport. */
static PyObject *
Registry_get(RegistryObject *self, PyObject *arg)
{
    int fd = fd_of(arg);
    if (fd == -2) {
        return NULL;
    }
    PyObject **entry = entry_of(self, fd);
    return Py_NewRef(entry != NULL && *entry != NULL ? *entry : Py_None);
}

static PyObject *
Registry_transports(RegistryObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = PyList_New(0);
    for (int fd = 0; list != NULL && fd < self->size; fd++) {
        if (self->by_fd[fd] != NULL && PyList_Append(list, self->by_fd[fd]) < 0) {
            Py_CLEAR(list);
        }
    }
    return list;
}

static void
Registry_dealloc(RegistryObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyMem_Free(self->by_fd);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyMethodDef Registry_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Registry_add, METH_FASTCALL,
     "add(fd, transport): register transport under fd."},
    {"discard", (PyCFunction)(void (*)(void))Registry_discard, METH_FASTCALL,
     "discard(fd, transport): forget transport, if it is the one registered under fd."},
    {"get", (PyCFunction)Registry_get, METH_O,
     "get(fd): the transport registered under fd, or None."},
    {"transports", (PyCFunction)Registry_transports, METH_NOARGS,
     "transports(): every registered transport, in fd order."},
    {NULL},
};

static PyType_Slot Registry_slots[] = {
    {Py_tp_doc, "The loop's transports by fd (see epolloop/transports/registry.py)."},
    {Py_tp_dealloc, Registry_dealloc},
    {Py_tp_methods, Registry_methods},
    {0, NULL},
};

static PyType_Spec Registry_spec = {
    .name = "epolloop._core.TransportRegistry",
    .basicsize = sizeof(RegistryObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Registry_slots,
};

int
registry_init(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Registry_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int status = PyModule_AddObjectRef(module, "TransportRegistry", type);
    Py_DECREF(type);
    return status;
}
