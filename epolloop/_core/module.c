/* epolloop._core: the reactor, its handles and the stream transport's hot paths, in C.
 *
 * Importing it looks up, once, the asyncio helpers the cold paths call (repr, error reports,
 * debug checks), so the wording of every message stays asyncio's.
 */
#include "core.h"

#include <structmember.h>

CoreGlobals core_globals;
char core_read_buffer[READ_SIZE];

static PyObject *
import_attribute(const char *module_name, const char *name)
{
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL) {
        return NULL;
    }
    PyObject *attribute = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    return attribute;
}

static int
init_globals(void)
{
    CoreGlobals *g = &core_globals;
    g->format_callback_source =
        import_attribute("asyncio.format_helpers", "_format_callback_source");
    g->extract_stack = import_attribute("asyncio.format_helpers", "extract_stack");
    g->iscoroutine = import_attribute("asyncio.coroutines", "iscoroutine");
    g->iscoroutinefunction = import_attribute("asyncio.coroutines", "iscoroutinefunction");
    g->real_type = import_attribute("numbers", "Real");
    g->future_type = import_attribute("asyncio", "Future");
    g->kwnames_loop = Py_BuildValue("(s)", "loop");
    g->str_context = PyUnicode_InternFromString("context");
    g->str_call_exception_handler = PyUnicode_InternFromString("call_exception_handler");
    g->str_report_slow_callback = PyUnicode_InternFromString("_report_slow_callback");
    g->str_slow_callback_duration = PyUnicode_InternFromString("slow_callback_duration");
    g->str_timer_handle_cancelled = PyUnicode_InternFromString("_timer_handle_cancelled");
    g->str_get_debug = PyUnicode_InternFromString("get_debug");
    g->str_message = PyUnicode_InternFromString("message");
    g->str_exception = PyUnicode_InternFromString("exception");
    g->str_handle = PyUnicode_InternFromString("handle");
    g->str_source_traceback = PyUnicode_InternFromString("source_traceback");
    PyObject **all = (PyObject **)g;
    for (size_t i = 0; i < sizeof *g / sizeof(PyObject *); i++) {
        if (all[i] == NULL) {
            return -1;
        }
    }
    return 0;
}

/* Whether asyncio's slot `name` on `type` is an object slot at `offset`, as the C core
 * expects. */
int
slot_at(PyObject *type, const char *name, Py_ssize_t offset)
{
    PyObject *descriptor = PyObject_GetAttrString(type, name);
    if (descriptor == NULL) {
        return 0;
    }
    int matches = Py_IS_TYPE(descriptor, &PyMemberDescr_Type) &&
                  ((PyMemberDescrObject *)descriptor)->d_member->offset == offset &&
                  ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX;
    Py_DECREF(descriptor);
    return matches;
}

/* See core.h. */
int
takes_two_arguments(const char *name, Py_ssize_t nargs)
{
    if (nargs == 2) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes 2 arguments (%zd given)", name, nargs);
    return 0;
}

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "epolloop._core",
    .m_doc = "The C core of epolloop: the reactor, its handles and the stream transport's hot paths.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    if (init_globals() < 0 || PyType_Ready(&Reactor_Type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&core_module);
    if (module == NULL) {
        return NULL;
    }
    if (handles_init(module) < 0 || stream_init(module) < 0 || sockops_init(module) < 0 ||
        registry_init(module) < 0 ||
        PyModule_AddObjectRef(module, "Reactor", (PyObject *)&Reactor_Type) < 0 ||
        reactor_module_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
